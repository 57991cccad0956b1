# mainevent: `make demo` runs the platform, `make test` runs the whole suite.
# Both set up everything they need (virtualenv, npm packages, Debian chromium).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
CHROMIUM ?= /usr/bin/chromium
HLSJS := src/mainevent/web/vendor/hls.min.js
DASHJS := src/mainevent/web/vendor/dash.all.min.js
SHAKA := src/mainevent/web/vendor/shaka-player.compiled.js
UPLOT := src/mainevent/web/vendor/uPlot.iife.min.js

.PHONY: demo test setup lint typecheck unit e2e bench clean

demo: setup
	$(BIN)/mainevent up

# Everything but the `exclusive` tests runs on both cores (a file per worker); the exclusive
# ones (latency, stall and timing bounds of whole stacks and browsers) run one at a time, with
# the machine to themselves, as they were written for. The slowest tests are listed at the end.
test: setup lint typecheck
	$(BIN)/pytest -p no:cacheprovider -n 2 --dist loadfile -m "not exclusive" --durations=15
	$(BIN)/pytest -p no:cacheprovider -m exclusive --durations=15

setup: $(VENV)/.installed $(HLSJS) $(DASHJS) $(SHAKA) $(UPLOT) chromium postgres nginx redis

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(HLSJS): node_modules/.installed
	mkdir -p $(dir $(HLSJS))
	cp node_modules/hls.js/dist/hls.min.js $(HLSJS)

$(DASHJS): node_modules/.installed
	mkdir -p $(dir $(DASHJS))
	cp node_modules/dashjs/dist/modern/umd/dash.all.min.js $(DASHJS)

# Stock Shaka Player: the second stock player of the latency bench (standard HLS, DASH, LL-HLS).
$(SHAKA): node_modules/.installed
	mkdir -p $(dir $(SHAKA))
	cp node_modules/shaka-player/dist/shaka-player.compiled.js $(SHAKA)

# uPlot: the operations console's live charts (/console/).
$(UPLOT): node_modules/.installed
	mkdir -p $(dir $(UPLOT))
	cp node_modules/uplot/dist/uPlot.iife.min.js $(UPLOT)
	cp node_modules/uplot/dist/uPlot.min.css $(dir $(UPLOT))uPlot.min.css

# Browser tests drive Debian's chromium (never a downloaded browser build).
chromium:
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		echo "installing Debian chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "chromium is missing at $(CHROMIUM): install Debian's 'chromium' package (sudo apt-get install chromium) or set CHROMIUM=/path/to/chromium; browser tests will be skipped"; \
	fi

lint: setup
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -p no:cacheprovider -m "not e2e"

e2e: setup
	$(BIN)/pytest -p no:cacheprovider -m e2e

bench: setup
	$(PY) bench/transcode.py
	$(PY) bench/latency.py

clean:
	rm -rf $(VENV) node_modules $(dir $(HLSJS)) .mypy_cache .ruff_cache

# Control-plane tests run the same suite on SQLite and on a real PostgreSQL started from Debian's
# binaries (initdb/pg_ctl in a temporary directory, as a non-root user); never a downloaded build.
PG_BINDIR ?= $(shell ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
.PHONY: postgres
postgres:
	@if [ -n "$(PG_BINDIR)" ] && [ -x "$(PG_BINDIR)/initdb" ]; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		echo "installing Debian postgresql for the control-plane tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else \
		echo "PostgreSQL binaries (initdb, pg_ctl) are missing: install Debian's 'postgresql' package (sudo apt-get install postgresql); the PostgreSQL variants of the control-plane tests will be skipped"; \
	fi

# The delivery-tier interop test and bench/edge.py run Debian's nginx as a shield (never a
# downloaded build); wrk drives the edge benchmark.
.PHONY: nginx
nginx:
	@if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		echo "installing Debian nginx for the delivery-tier interop test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; \
	else \
		echo "nginx is missing: install Debian's 'nginx' package (sudo apt-get install nginx); the nginx interop tests will be skipped"; \
	fi

# Shared playback sessions, rate-limit buckets and the decision cache of several control-plane
# workers live in Debian's redis-server; tests start a private one on a loopback port.
.PHONY: redis
redis:
	@if command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ]; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		echo "installing Debian redis-server for the multi-worker control-plane tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	else \
		echo "redis-server is missing: install Debian's 'redis-server' package (sudo apt-get install redis-server); the Redis variants of the control-plane tests will be skipped"; \
	fi
