"""Stock players on a page from another origin: how a new user's LL-HLS page sees the stream.

`StockPages` is a tiny static server on its own ephemeral port (so the stream is always
cross-origin) serving one page per player that does nothing but load the vendored library
and the stream URL: hls.js with its default config plus `lowLatencyMode: true`, or Shaka
Player with `streaming.lowLatencyMode: true`. Nothing of ours tunes the player. What the
tests and the bench read (latency from the player's own playhead date, stalls from the video
element's `waiting` events after the first frame) is observed from outside through
Playwright (`stock_player`, `sample`), never configured inside the page.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlencode

from mainevent.testing.browser import BROWSER_ARGS, CHROMIUM, PlayerDidNotStart

if TYPE_CHECKING:
    from playwright.sync_api import Page

__all__ = ["PLAYERS", "StockPages", "StockPlayer", "sample", "stock_player", "vendor_dir"]

StockPlayer = Literal["hlsjs", "shaka"]
PLAYERS: tuple[StockPlayer, ...] = ("hlsjs", "shaka")

_LIBRARY = {"hlsjs": "hls.min.js", "shaka": "shaka-player.compiled.js"}

# The whole page of each player: the library, the stream URL, low-latency mode, play.
_PAGES = {
    "hlsjs": """<!doctype html><meta charset="utf-8"><title>stock hls.js</title>
<video id="v" muted playsinline></video>
<script src="/vendor/hls.min.js"></script>
<script>
const v = document.getElementById("v");
const hls = new Hls({ lowLatencyMode: true });
window.player = hls;
hls.loadSource(new URLSearchParams(location.search).get("src"));
hls.attachMedia(v);
v.play();
</script>
""",
    "shaka": """<!doctype html><meta charset="utf-8"><title>stock Shaka Player</title>
<video id="v" muted playsinline></video>
<script src="/vendor/shaka-player.compiled.js"></script>
<script>
const v = document.getElementById("v");
shaka.polyfill.installAll();
const player = new shaka.Player();
window.player = player;
player.configure({ streaming: { lowLatencyMode: true } });
player.attach(v).then(() => player.load(new URLSearchParams(location.search).get("src")))
  .then(() => v.play());
</script>
""",
}

# Observation only (Playwright init script, runs before the page's own scripts): stalls are
# `waiting` events after the first `playing`, timed until playback resumes.
_OBSERVER = """
(() => {
  const o = { started: false, startedAt: null, stalls: 0, stallMs: 0, stalledAt: null,
              errors: [] };
  window.__stock = o;
  addEventListener("error", (e) => o.errors.push(String(e.message)));
  document.addEventListener("playing", () => {
    if (!o.started) { o.started = true; o.startedAt = performance.now(); }
    if (o.stalledAt !== null) { o.stallMs += performance.now() - o.stalledAt; o.stalledAt = null; }
  }, true);
  document.addEventListener("waiting", () => {
    if (o.started && o.stalledAt === null) { o.stalls += 1; o.stalledAt = performance.now(); }
  }, true);
})();
"""

_SAMPLE = """
() => {
  const o = window.__stock, v = document.querySelector("video"), p = window.player;
  let date = null;
  if (p && typeof p.getPlayheadTimeAsDate === "function") date = p.getPlayheadTimeAsDate();
  else if (p) date = p.playingDate;
  const stalled = o.stalledAt !== null ? performance.now() - o.stalledAt : 0;
  return {
    playing: o.started && !v.paused,
    currentTime: v.currentTime,
    wallSec: Date.now() / 1000,
    latencySec: date ? (Date.now() - date.getTime()) / 1000 : null,
    stalls: o.stalls,
    stallTimeSec: (o.stallMs + stalled) / 1000,
    errors: o.errors.slice(-10),
  };
}
"""

_ERRORS = """
() => {
  const o = window.__stock, p = window.player;
  if (typeof Hls !== "undefined" && p instanceof Hls) {
    p.on(Hls.Events.ERROR, (_e, d) => o.errors.push((d.fatal ? "fatal " : "") + d.details));
  } else if (p && p.addEventListener) {
    p.addEventListener("error", (e) => o.errors.push("shaka " + (e.detail && e.detail.code)));
  }
}
"""


def vendor_dir() -> Path:
    """Where `make setup` puts the npm player libraries (inside the installed package)."""
    return Path(str(resources.files("mainevent") / "web" / "vendor"))


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/hlsjs.html", "/shaka.html"):
            body = _PAGES[path[1:-5]].encode()
            ctype = "text/html; charset=utf-8"
        elif path.startswith("/vendor/") and path[8:] in _LIBRARY.values():
            try:
                body = (self.server.vendor / path[8:]).read_bytes()
            except FileNotFoundError:
                self.send_error(404, f"{path[8:]} not vendored: run make setup")
                return
            ctype = "text/javascript"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    vendor: Path


class StockPages:
    """The static page server (context manager): `url(player, src)` is a page for `src`."""

    def __init__(self, vendor: Path | None = None) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.vendor = vendor or vendor_dir()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> StockPages:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def missing(self) -> list[str]:
        """Player libraries that are not vendored (the page would not load)."""
        return [n for n in _LIBRARY.values() if not (self._server.vendor / n).exists()]

    def url(self, player: StockPlayer, src: str) -> str:
        return f"{self.base_url}/{player}.html?{urlencode({'src': src})}"


@contextmanager
def stock_player(url: str, profile_dir: Path, *, start_timeout_s: float = 30.0) -> Iterator[Page]:
    """Open a stock player page in Debian Chromium; yield it once the first frame played."""
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(profile_dir), executable_path=str(CHROMIUM), headless=True, args=BROWSER_ARGS
        )
        try:
            page = ctx.new_page()
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.add_init_script(_OBSERVER)
            page.goto(url)
            page.wait_for_function("window.player !== undefined", timeout=10_000)
            page.evaluate(_ERRORS)
            try:
                page.wait_for_function(
                    "window.__stock.started && document.querySelector('video').currentTime > 0",
                    timeout=start_timeout_s * 1000,
                )
            except Error as exc:
                raise PlayerDidNotStart(f"stock player never started: {console[-20:]}") from exc
            yield page
        finally:
            ctx.close()


def sample(page: Page, seconds: float, every_s: float = 0.5) -> list[dict[str, Any]]:
    """The player's state now and every `every_s` for `seconds`, each with `t` (s from start)."""
    t0 = time.monotonic()
    out: list[dict[str, Any]] = []
    while True:
        s: dict[str, Any] = page.evaluate(_SAMPLE)
        s["t"] = time.monotonic() - t0
        out.append(s)
        if s["t"] >= seconds:
            return out
        time.sleep(every_s)
