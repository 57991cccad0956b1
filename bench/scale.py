"""Playback authorisations per second with 1 vs 2 control-plane workers behind nginx, on one Redis.

Both runs are the same deployment but for the worker count: `mainevent control serve --workers N`
(nginx in front, sessions, rate-limit buckets and decisions on a private `redis-server`, SQLite
with 2,000 premium accounts). Load is `wrk` (one thread, 16 connections) posting playback starts
for random accounts and one of four devices each, so the stream limit is checked and sessions
replaced in Redis on every request. A warm-up run first caches every account's decision (in
Redis: the second worker finds them too); the measured run counts 200 answers per second.

Nothing is pinned: two workers need both cores, and nginx, Redis and wrk share them too, so on
a 2-core machine the ratio is bounded well below 2 by the load generator and the shared parts.

Run: `.venv/bin/python bench/scale.py [--seconds 10] [--connections 64]`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from mainevent.control.auth import DevIdentityProvider
from mainevent.control.db import Account, open_database
from mainevent.control.settings import DEV_IDP_SECRET
from mainevent.testing.fleet import ControlFleet
from mainevent.testing.redis import RedisServer

ACCOUNTS = 2000

_LUA = r"""
local tokens = {TOKENS}
local n = #tokens
math.randomseed(os.time())
request = function()
  local i = math.random(n)
  local body = '{"device":{"id":"d' .. math.random(4) .. '"}}'
  return wrk.format("POST", "/v1/events/bell/playback",
    {["Authorization"] = "Bearer " .. tokens[i], ["Content-Type"] = "application/json"}, body)
end
local threads = {}
setup = function(thread) table.insert(threads, thread) end
statuses = {}
response = function(status, headers, body)
  local key = tostring(status)
  if status ~= 200 then
    local reason = string.match(body, '"reason":%s*"([a-z_]+)"')
    if reason then key = key .. ":" .. reason end
  end
  statuses[key] = (statuses[key] or 0) + 1
end
done = function(summary, latency, requests)
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for k, v in pairs(s) do io.write("status " .. k .. " " .. v .. "\n") end
  end
end
"""


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_wrk(
    wrk: str, url: str, script: Path, seconds: int, connections: int
) -> tuple[int, dict[str, int]]:
    """(200 answers, other answers by status and reason) of one wrk run."""
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"status (\S+) (\d+)", out)}
    ok = counts.pop("200", 0)
    return ok, counts


def measure(
    workers: int, tmp: Path, template: Path, script: Path, args: argparse.Namespace, wrk: str
) -> float:
    data = tmp / f"w{workers}"
    data.mkdir()
    shutil.copyfile(template, data / "control.db")
    with RedisServer() as redis:
        fleet = ControlFleet(
            workers=workers,
            redis_url=redis.url,
            data_dir=data,
            settings={
                "account_rate": 1000,
                "account_burst": 1000,
                "address_rate": 1_000_000,
                "address_burst": 1_000_000,
                "decision_ttl_s": 3600,
            },
        )
        try:
            fleet.wait_ready()
            fleet.live_event("bell", {"subscription_tiers": ["premium"], "max_streams": 8})
            ok, bad = run_wrk(wrk, fleet.url, script, args.warmup, args.connections)
            print(f"  {workers} worker(s): warm-up {ok} grants, other answers {bad}", flush=True)
            ok, bad = run_wrk(wrk, fleet.url, script, args.seconds, args.connections)
        finally:
            fleet.close()
    rate = ok / args.seconds
    print(
        f"  {workers} worker(s): {rate:,.0f} grants/s ({bad} other answers) load {loadavg()}",
        flush=True,
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=6)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is missing: apt-get install wrk")
    tmp = Path(tempfile.mkdtemp(prefix="mainevent-scale-"))
    try:
        template = tmp / "accounts.db"
        db = open_database(f"sqlite:///{template}")
        with db.write.begin() as s:
            now = datetime.now(UTC)
            s.add_all(
                Account(id=f"acc{i}", plan="premium", version=1, updated_at=now)
                for i in range(ACCOUNTS)
            )
        db.dispose()
        idp = DevIdentityProvider(
            secret=DEV_IDP_SECRET, issuer="mainevent-dev-idp", audience="mainevent"
        )
        tokens = ",".join(json.dumps(idp.mint(f"acc{i}", ttl_s=7200)) for i in range(ACCOUNTS))
        script = tmp / "starts.lua"
        script.write_text(_LUA.replace("TOKENS", tokens))
        print(
            f"scale: playback starts through nginx, Redis-backed state, {ACCOUNTS} accounts, "
            f"wrk -t1 -c{args.connections}; {os.cpu_count()} cores; load {loadavg()}",
            flush=True,
        )
        one = measure(1, tmp, template, script, args, wrk)
        two = measure(2, tmp, template, script, args, wrk)
        print(f"  ratio 2 workers / 1 worker: {two / one:.2f}x (goal >= 1.8x)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
