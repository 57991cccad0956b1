"""Glass-to-glass latency of the live path, standard HLS and low-latency HLS in one run.

Latency = wall clock − capture time (EXT-X-PROGRAM-DATE-TIME) at the playhead, sampled while a
real `mainevent up` stack (feed simulator → ffmpeg → packager → origin) plays.

- standard: `mainevent up` (2 s segments), played by the headless Python player
  (`mainevent.player`, standard HLS only);
- low latency: `mainevent up --latency low`, played by hls.js 1.7 in `lowLatencyMode` in
  headless Chromium (Playwright), reading `window.mainevent.stats().latencySec` every 0.5 s.
  The headless player does not do parts/blocking reload, so LL is measured in the browser;
  the first `--warmup` seconds (hls.js catching up to PART-HOLD-BACK) are reported apart.

The origin's publish delay (capture time of a segment's end → segment listed) is printed
alongside. In low-latency mode the bench also follows every media playlist with blocking
reloads, as hls.js does, and prints the part publish delay (capture time of the newest part's
end → the blocking reload listing it answered) and the feed delay at the ingest (simulated venue
encoder + SRT, part of glass-to-glass but not of the platform): hls.js plays PART-HOLD-BACK
behind its estimate of the live edge, so its latency is PART-HOLD-BACK + the video part delay
(+ up to 0.07 s where its catch-up stops).

`--tuned-part-ms 250` adds a second low-latency run with that part target (a setting,
`event.part_target_ms`; the default stays 0.5 s), reported apart.

`--stock` adds, on the same low-latency stack and after our player page, stock players on a
page served from another origin (`mainevent.testing.stock`: the vendored library and the
stream URL, nothing else): hls.js (defaults + `lowLatencyMode: true`) and Shaka Player
(`streaming.lowLatencyMode: true`), each through edge cdn-a and at the origin directly, for
`--seconds` each after `--warmup`. Latency is the player's own playhead date
(`hls.playingDate`, `player.getPlayheadTimeAsDate()`) against the wall clock; stalls are
`waiting` events after the first frame. The load average is printed beside each run (the
machine is shared).

`--players` (or `--only players`) adds the standard-mode side by side, all in one run: the
same synthetic feed (SRT) into ffmpeg's own HLS muxer (same ladder and x264 settings, 2 s fMP4
segments) served by a plain HTTP server on loopback, played by hls.js and Shaka; then
`mainevent up` through edge cdn-a, HLS played by hls.js and Shaka and DASH by dash.js and
Shaka (stock configurations). Latency is read off the screen: the feed's burnt-in frame number
against the wall clock (ffmpeg stamps PROGRAM-DATE-TIME from its own start, so a player's own
figure would flatter the reference). A standard-mode join's latency depends on where in the
segment cycle it joins, so each player joins `--joins` times at evenly spread phases after a
segment listing; the mean over joins is compared. The origin's publish delay (capture end →
listed, the playlist polled every 10 ms) is printed too.

    .venv/bin/python bench/latency.py [--seconds 60] [--ladder default] [--only standard|low|players]
                                      [--tuned-part-ms MS] [--stock] [--players] [--joins 3] [--backup]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from mainevent.media.manifest import MediaPlaylist, parse_media_playlist
from mainevent.media.origin.app import web_dir
from mainevent.player.session import play
from mainevent.testing.browser import player_page
from mainevent.testing.feeds import Feed
from mainevent.testing.stack import TEST_LADDER, RunningStack, start_stack


def histogram_quantiles(metrics: str, q: tuple[float, ...]) -> list[float | None]:
    """Approximate quantiles of mainevent_publish_delay_seconds from its buckets."""
    buckets: dict[float, float] = {}
    for m in re.finditer(
        r'mainevent_publish_delay_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\} (\S+)', metrics
    ):
        le = float("inf") if m[1] == "+Inf" else float(m[1])
        buckets[le] = buckets.get(le, 0.0) + float(m[2])
    if not buckets:
        return [None for _ in q]
    edges = sorted(buckets)
    total = buckets[edges[-1]]
    out: list[float | None] = []
    for quant in q:
        target = quant * total
        out.append(next((e for e in edges if buckets[e] >= target), None))
    return out


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def edge_capture_s(pl: MediaPlaylist) -> float:
    """Capture time (epoch s) of the end of the newest part or segment the playlist lists."""
    last = pl.segments[-1]
    assert last.program_date_time_ms is not None
    end_us = last.program_date_time_ms * 1000 + last.duration_us
    end_us += sum(p.duration_us for p in pl.pending_parts)
    return end_us / 1e6


def follow_parts(url: str, stop: threading.Event, delays: list[float]) -> None:
    """Blocking reloads of one media playlist, one per part, as an LL-HLS player makes them;
    records wall clock − capture time of the newest part's end at each answer."""
    with httpx.Client(timeout=10) as client:
        pl = parse_media_playlist(client.get(url).text)
        answers = 0
        while not stop.is_set():
            params = {"_HLS_msn": pl.last_msn + 1, "_HLS_part": len(pl.pending_parts)}
            r = client.get(url, params=params)
            now = time.time()
            if r.status_code != 200:
                continue
            pl = parse_media_playlist(r.text)
            answers += 1
            if answers > 2:  # the first answers may list parts published before we asked
                delays.append(now - edge_capture_s(pl))


def low_latency(args: argparse.Namespace, part_target_ms: int | None = None) -> None:
    env = {} if part_target_ms is None else {"MAINEVENT_EVENT__PART_TARGET_MS": str(part_target_ms)}
    with tempfile.TemporaryDirectory() as tmp:
        stack = start_stack(
            Path(tmp) / "data", ladder=args.ladder, extra_args=("--latency", "low"), env=env
        )
        samples: list[tuple[float, float]] = []
        stats: dict[str, object] = {}
        feed_delays: list[float] = []
        part_delays: dict[str, list[float]] = {}
        stop = threading.Event()
        followers: list[threading.Thread] = []
        try:
            master = httpx.get(stack.master_url, timeout=5).text
            uris = [ln for ln in master.splitlines() if ln and not ln.startswith("#")]
            uris += re.findall(r'#EXT-X-MEDIA:.*URI="([^"]+)"', master)
            base = stack.master_url.rsplit("/", 1)[0]
            first = parse_media_playlist(httpx.get(f"{base}/{uris[0]}", timeout=5).text)
            sc, part_target_us = first.server_control, first.part_target_us
            assert sc is not None
            assert sc.part_hold_back_us is not None
            assert part_target_us
            for uri in uris:
                delays = part_delays[uri.split("/")[0]] = []
                t = threading.Thread(target=follow_parts, args=(f"{base}/{uri}", stop, delays))
                t.start()
                followers.append(t)
            url = f"{stack.base_url}/player/?src=/live/{stack.event}/master.m3u8&ll=1"
            load_ours = loadavg()
            with player_page(url, Path(tmp) / "profile") as page:
                t0 = time.monotonic()
                while time.monotonic() - t0 < args.seconds:
                    time.sleep(0.5)
                    stats = page.evaluate("window.mainevent.stats()")
                    lat = stats.get("latencySec")
                    if isinstance(lat, (int, float)):
                        samples.append((time.monotonic() - t0, float(lat)))
                    feed = stack.pipeline_status().get("feed")
                    if isinstance(feed, dict) and isinstance(feed.get("feed_delay_s"), float):
                        feed_delays.append(feed["feed_delay_s"])
            metrics = httpx.get(f"{stack.base_url}/metrics", timeout=5).text
            stock = (
                stock_runs(stack, args, Path(tmp)) if args.stock and part_target_ms is None else []
            )
        finally:
            stop.set()
            for t in followers:
                t.join(15)
            stack.stop()
    p50, p95 = histogram_quantiles(metrics, (0.5, 0.95))
    phb = sc.part_hold_back_us / 1e6
    setting = (
        "default" if part_target_ms is None else f"tuned: event.part_target_ms={part_target_ms}"
    )
    print(
        f"mode: low-latency HLS (hls.js lowLatencyMode in Chromium), played {args.seconds:.0f} s, "
        f"part target {setting}"
    )
    print(f"PART-TARGET        {part_target_us / 1e6:.3f} s   PART-HOLD-BACK {phb:.3f} s")
    print(f"startup            {stats.get('startupSec')} s")
    print(f"stalls             {stats.get('stalls')} ({stats.get('stallTimeSec')} s)")
    steady = [lat for t, lat in samples if t >= args.warmup]
    warm = [lat for t, lat in samples if t < args.warmup]
    if steady:
        print(
            f"glass-to-glass     p50 {statistics.median(steady):.2f} s   "
            f"p95 {quantile(steady, 0.95):.2f} s   max {max(steady):.2f} s   "
            f"({len(steady)} samples after {args.warmup:.0f} s)"
        )
    if warm:
        print(
            f"  first {args.warmup:.0f} s       p50 {statistics.median(warm):.2f} s   "
            f"max {max(warm):.2f} s   (catching up)"
        )
    for rendition, delays in part_delays.items():
        if delays:
            print(
                f"part delay {rendition:<7} p50 {statistics.median(delays):.3f} s   "
                f"p95 {quantile(delays, 0.95):.3f} s   (capture of a part's end → blocking "
                f"reload answered, {len(delays)} parts)"
            )
    if feed_delays:
        print(
            f"  of which feed    p50 {statistics.median(feed_delays):.3f} s   (venue clock → "
            "ingest: simulated venue encoder + SRT latency 0.12 s)"
        )
    video = next((d for r, d in part_delays.items() if r.startswith("v") and d), None)
    if video:
        floor = phb + statistics.median(video)
        print(f"floor              {floor:.2f} s   (PART-HOLD-BACK + video part delay p50)")
    print(f"publish delay      p50 ≤ {p50} s   p95 ≤ {p95} s   (segments; histogram bounds)")
    print(f"load average       {load_ours} (at the start of our player page's run)")
    if stock:
        print()
        print(
            f"stock players (page from another origin), {args.seconds:.0f} s after {args.warmup:.0f} s:"
        )
        print(
            f"{'player':<40} {'p50':>6} {'p95':>6} {'max':>6} {'stalls':>7} {'stalled':>8} "
            f"{'play/wall':>6}  load average"
        )
        rows = [
            (
                "our player page (hls.js, tuned), origin",
                ours_row(samples, stats, args.warmup),
                load_ours,
            )
        ]
        rows += [(r.name, r.figures, r.load) for r in stock]
        for name, fig, load in rows:
            print(f"{name:<40} {fig}  {load}")
        for r in stock:
            if r.errors:
                print(f"  {r.name}: player errors {r.errors}")


def loadavg() -> str:
    """The 1/5/15-minute load averages (the machine is shared: read figures beside them)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _figures(lat: list[float], stalls: object, stall_s: object) -> str:
    if not lat:
        return f"{'-':>6} {'-':>6} {'-':>6} {stalls!s:>7} {stall_s!s:>8}"
    return (
        f"{statistics.median(lat):>5.2f}s {quantile(lat, 0.95):>5.2f}s {max(lat):>5.2f}s "
        f"{stalls!s:>7} {stall_s!s:>7}s"
    )


def ours_row(samples: list[tuple[float, float]], stats: dict[str, object], warmup: float) -> str:
    return _figures(
        [lat for t, lat in samples if t >= warmup], stats.get("stalls"), stats.get("stallTimeSec")
    )


@dataclass(frozen=True, slots=True)
class StockRun:
    name: str
    figures: str
    load: str
    errors: tuple[str, ...]


def stock_runs(stack: RunningStack, args: argparse.Namespace, tmp: Path) -> list[StockRun]:
    """Stock hls.js and Shaka, through edge cdn-a and at the origin, one after the other."""
    from mainevent.testing.stock import PLAYERS, StockPages, sample, stock_player

    names = {"hlsjs": "stock hls.js (lowLatencyMode)", "shaka": "stock Shaka (lowLatencyMode)"}
    out: list[StockRun] = []
    with StockPages() as pages:
        if pages.missing():
            print(f"stock players skipped: not vendored {pages.missing()} (run make setup)")
            return out
        for player in PLAYERS:
            for where, base in (("edge cdn-a", stack.edges["cdn-a"]), ("origin", stack.base_url)):
                load = loadavg()
                src = f"{base}/live/{stack.event}/master.m3u8"
                profile = tmp / f"stock-{player}-{where.replace(' ', '-')}"
                try:
                    with stock_player(pages.url(player, src), profile) as page:
                        samples = sample(page, args.warmup + args.seconds)
                except AssertionError as exc:  # the player never started
                    out.append(
                        StockRun(
                            f"{names[player]}, {where}", "did not start", load, (str(exc)[:200],)
                        )
                    )
                    continue
                last = samples[-1]
                lat = [
                    s["latencySec"]
                    for s in samples
                    if s["t"] >= args.warmup and s["latencySec"] is not None
                ]
                fig = _figures(lat, last["stalls"], round(last["stallTimeSec"], 2))
                # Media played ÷ wall time after the warm-up: below 1 the latency grows even
                # without a `waiting` event (a browser starved of CPU plays slowly).
                steady = [s for s in samples if s["t"] >= args.warmup]
                if len(steady) > 1:
                    wall = steady[-1]["wallSec"] - steady[0]["wallSec"]
                    played = steady[-1]["currentTime"] - steady[0]["currentTime"]
                    fig += f" {played / wall:>6.3f}" if wall > 0 else ""
                out.append(StockRun(f"{names[player]}, {where}", fig, load, tuple(last["errors"])))
    return out


# ---- standard mode side by side: ffmpeg's HLS muxer, mainevent through an edge, DASH ----------

# Reads the feed's burnt-in frame number (mod 2^24 since the epoch) off the picture on screen:
# glass-to-glass latency measured the same way for every player and both servers, without
# trusting any manifest's clock (ffmpeg's HLS muxer stamps PROGRAM-DATE-TIME from its own start).
BARCODE_JS = """([w, h, bits, x0, bitW, stripH, fps]) => {
  const video = document.getElementById('video');
  if (!video || video.readyState < 2 || !video.videoWidth) return null;
  let c = window.__barcodeCanvas;
  if (!c) { c = window.__barcodeCanvas = document.createElement('canvas'); c.width = w; c.height = h; }
  const ctx = c.getContext('2d', {willReadFrequently: true});
  ctx.drawImage(video, 0, 0, w, h);
  const row = ctx.getImageData(0, h - Math.floor(stripH / 2), w, 1).data;
  let frame = 0;
  for (let b = 0; b < bits; b++) {
    const x = x0 + b * bitW + Math.floor(bitW / 2);
    const i = x * 4;
    if (0.299 * row[i] + 0.587 * row[i + 1] + 0.114 * row[i + 2] > 128) frame += 2 ** b;
  }
  const wrap = 2 ** bits;
  const nowFrames = Math.floor(Date.now() * fps / 1000);
  const behind = ((nowFrames - frame) % wrap + wrap) % wrap;
  return behind / fps;
}"""


def barcode_args(size: str, fps: int) -> list[int]:
    from mainevent.media.encode.ffmpeg import BARCODE_BITS, barcode_geometry

    w, h = (int(x) for x in size.split("x"))
    x0, bit_w, strip_h = barcode_geometry(w, h)
    return [w, h, BARCODE_BITS, x0, bit_w, strip_h, fps]


@dataclass
class PlayerRun:
    """One player's joins: glass-to-glass (burnt-in barcode) and the player's own figure,
    one value per join (the median of its samples)."""

    label: str
    joins: list[float] = field(default_factory=list)
    reported: list[float] = field(default_factory=list)
    stalls: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.joins) if self.joins else None

    def line(self, reference: float | None) -> str:
        if not self.joins:
            return f"{self.label:<34} no samples ({'; '.join(self.errors)[:200]})"
        rep = f"{statistics.fmean(self.reported):5.2f}" if self.reported else "  -  "
        ratio = f"{self.mean / reference:5.3f}" if reference and self.mean else "  -  "
        return (
            f"{self.label:<34} mean {self.mean:5.2f} s  (joins {min(self.joins):.2f}–"
            f"{max(self.joins):.2f})  × ref {ratio}  player says {rep} s  stalls {self.stalls}"
            + (f"  errors {len(self.errors)}" if self.errors else "")
        )


class Follower(threading.Thread):
    """Polls a media playlist every 10 ms: when each new segment was first listed (wall clock),
    and, where PROGRAM-DATE-TIME is the capture time, the publish delay (listed − capture end)."""

    def __init__(self, url: str, *, pdt_is_capture: bool) -> None:
        super().__init__(daemon=True)
        self.url, self.pdt_is_capture = url, pdt_is_capture
        self.listed: list[float] = []
        self.delays: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        last_msn = None
        with httpx.Client(timeout=5) as client:
            while not self.stop.is_set():
                try:
                    r = client.get(self.url)
                    pl = parse_media_playlist(r.text) if r.status_code == 200 else None
                except (httpx.HTTPError, ValueError):
                    pl = None
                now = time.time()
                if pl is not None and pl.segments and pl.last_msn != last_msn:
                    if last_msn is not None:  # the first may have been listed before we looked
                        self.listed.append(now)
                        seg = pl.segments[-1]
                        if self.pdt_is_capture and seg.program_date_time_ms and not seg.gap:
                            end = (seg.program_date_time_ms * 1000 + seg.duration_us) / 1e6
                            self.delays.append(now - end)
                    last_msn = pl.last_msn
                self.stop.wait(0.01)

    def wait_phase(self, phase_s: float, period_s: float) -> None:
        """Sleep until `phase_s` after a segment listing (the next one, predicted)."""
        deadline = time.monotonic() + 20
        while not self.listed and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self.listed:
            raise RuntimeError(f"no segment listed at {self.url}")
        last = self.listed[-1]
        now = time.time()
        target = last + phase_s
        while target < now + 0.05:
            target += period_s
        time.sleep(target - now)


def play_joins(
    label: str, url: str, profile: Path, args: argparse.Namespace, follower: Follower
) -> PlayerRun:
    """`--joins` fresh page loads of `url` at evenly spread phases of the segment cycle (the
    latency of a standard-mode join depends on when in the cycle it joins); each join plays
    `--join-warmup` s, then samples latency every 0.5 s for `--join-seconds` s."""
    from playwright.sync_api import Error, sync_playwright

    from mainevent.testing.browser import BROWSER_ARGS, CHROMIUM

    run = PlayerRun(label)
    bc = barcode_args(args.feed_size, 30)
    period = 2.0
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=BROWSER_ARGS
        )
        try:
            for k in range(args.joins):
                follower.wait_phase(0.1 + k * period / args.joins, period)
                page = ctx.new_page()
                try:
                    page.goto(url)
                    page.wait_for_function(
                        "window.mainevent && window.mainevent.stats().playing", timeout=40_000
                    )
                    time.sleep(args.join_warmup)
                    g2g: list[float] = []
                    said: list[float] = []
                    t0 = time.monotonic()
                    stats: dict[str, Any] = {}
                    while time.monotonic() - t0 < args.join_seconds:
                        v = page.evaluate(BARCODE_JS, bc)
                        stats = page.evaluate("window.mainevent.stats()")
                        if isinstance(v, (int, float)) and 0 < v < 60:
                            g2g.append(float(v))
                        lat = stats.get("latencySec")
                        if isinstance(lat, (int, float)):
                            said.append(float(lat))
                        time.sleep(0.5)
                    if g2g:
                        run.joins.append(statistics.median(g2g))
                    if said:
                        run.reported.append(statistics.median(said))
                    run.stalls += int(stats.get("stalls") or 0)
                except Error as exc:
                    run.errors.append(str(exc).splitlines()[0][:200])
                finally:
                    page.close()
        finally:
            ctx.close()
    return run


class _RefHandler(SimpleHTTPRequestHandler):
    """Plain file server: `/ref/...` → ffmpeg's output directory, `/player/`, `/static/...` →
    the player page. Playlists are sent `no-cache` (a plain origin, no CDN in front)."""

    ref_dir = ""

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0]
        if path.startswith("/ref/"):
            return os.path.join(self.ref_dir, path[len("/ref/") :])
        if path.startswith("/static/"):
            return str(web_dir() / path[len("/static/") :])
        if path.rstrip("/") == "/player":
            return str(web_dir() / "player.html")
        return "/nonexistent"

    def end_headers(self) -> None:
        if self.path.split("?", 1)[0].endswith(".m3u8"):
            self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _RefServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a player closing a connection mid-response (page closed between joins)


def reference_run(args: argparse.Namespace, tmp: Path) -> list[PlayerRun]:
    """The same feed into ffmpeg's own HLS muxer (same ladder and encoder settings), served by
    a plain HTTP server on loopback; played by hls.js and Shaka."""
    from mainevent.commands.stack import free_port, ladder_spec
    from mainevent.commands.up import parse_ladder
    from mainevent.config import load_settings
    from mainevent.media.encode.ffmpeg import find_ffmpeg, reference_hls_command

    settings = load_settings(
        overrides={
            "event": {"ladder": parse_ladder(args.ladder)},
            "encoder": {"preset": "ultrafast"},
        }
    )
    ladder = ladder_spec(settings)
    out = tmp / "ref"
    for name in [*(r.id for r in ladder.rungs), ladder.audio_id]:
        (out / name).mkdir(parents=True)
    port = free_port(socket.SOCK_DGRAM)
    # The same SRT latency as the ingest it is compared with.
    listen = f"srt://127.0.0.1:{port}?mode=listener&latency={settings.ingest.srt_latency_ms * 1000}"
    enc = subprocess.Popen(
        reference_hls_command(find_ffmpeg(), listen, ladder, str(out)),
        stdin=subprocess.DEVNULL,
        cwd=out,
    )
    feed = Feed(f"srt://127.0.0.1:{port}", size=args.feed_size, bitrate_kbps=1500)
    handler = type("H", (_RefHandler,), {"ref_dir": str(out)})
    server = _RefServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    runs: list[PlayerRun] = []
    follower: Follower | None = None
    try:
        time.sleep(0.5)  # the listener binds before the caller dials
        feed.start()
        deadline = time.monotonic() + 40
        while not (out / ladder.rungs[-1].id / "3.m4s").exists():
            if time.monotonic() > deadline or enc.poll() is not None:
                raise RuntimeError(f"ffmpeg reference never published (exit {enc.poll()})")
            time.sleep(0.2)
        follower = Follower(f"{base}/ref/{ladder.rungs[0].id}/index.m3u8", pdt_is_capture=False)
        follower.start()
        for player, q in (("hls.js", ""), ("Shaka", "&player=shaka")):
            url = f"{base}/player/?src={base}/ref/master.m3u8{q}"
            runs.append(
                play_joins(
                    f"ffmpeg HLS muxer, {player}", url, tmp / f"p-ref-{player}", args, follower
                )
            )
    finally:
        if follower is not None:
            follower.stop.set()
        feed.kill()
        enc.terminate()
        try:
            enc.wait(10)
        except subprocess.TimeoutExpired:
            enc.kill()
            enc.wait()
        server.shutdown()
        server.server_close()
    return runs


def mainevent_run(
    args: argparse.Namespace, tmp: Path, freshness: str | None = None
) -> tuple[list[PlayerRun], list[float], str]:
    """`mainevent up` (standard mode, edges on), played through edge cdn-a: HLS with hls.js
    and Shaka, DASH with dash.js and Shaka; the origin's publish delay followed meanwhile."""
    stack = start_stack(
        tmp / "data",
        ladder=args.ladder,
        env={
            "MAINEVENT_REDUNDANCY__BACKUP": "true" if args.backup else "false",
            **({"MAINEVENT_ORIGIN__PLAYLIST_FRESHNESS": freshness} if freshness else {}),
        },
    )
    runs: list[PlayerRun] = []
    origin_pl = f"{stack.base_url}/live/{stack.event}/{args.ladder.split(':', 1)[0]}/index.m3u8"
    follower = Follower(origin_pl, pdt_is_capture=True)
    follower.start()
    try:
        edge = stack.edges.get("cdn-a", stack.base_url)
        stack.wait_window(4)
        sessions = [
            ("mainevent HLS via edge, hls.js", f"{edge}/live/{stack.event}/master.m3u8", ""),
            (
                "mainevent HLS via edge, Shaka",
                f"{edge}/live/{stack.event}/master.m3u8",
                "&player=shaka",
            ),
            (
                "mainevent DASH via edge, dash.js",
                f"{edge}/live/{stack.event}/manifest.mpd",
                "&dash=1",
            ),
            (
                "mainevent DASH via edge, Shaka",
                f"{edge}/live/{stack.event}/manifest.mpd",
                "&player=shaka",
            ),
        ]
        if freshness == "aligned":  # playlist freshness does not touch the MPD
            sessions = sessions[:2]
        for label, src, q in sessions:
            url = f"{stack.base_url}/player/?src={src}{q}"
            if freshness:
                label = label.replace("mainevent", f"mainevent[{freshness}]")
            runs.append(play_joins(label, url, tmp / f"p-{freshness}-{len(runs)}", args, follower))
        metrics = httpx.get(f"{stack.base_url}/metrics", timeout=5).text
    finally:
        follower.stop.set()
        follower.join(10)
        stack.stop()
    return runs, follower.delays, metrics


def side_by_side(args: argparse.Namespace) -> None:
    """Standard-mode latency of mainevent (HLS and DASH, through an edge) against ffmpeg's HLS
    muxer, same feed, same players, in one run."""
    with tempfile.TemporaryDirectory() as tmp:
        ref = reference_run(args, Path(tmp))
        modes: dict[str, list[str | None]] = {
            "default": [None],
            "aligned": ["aligned"],
            "both": ["half_td", "aligned"],
        }
        ours: list[PlayerRun] = []
        delays: list[float] = []
        metrics = ""
        for i, freshness in enumerate(modes[args.playlist_freshness]):
            runs, d, metrics = mainevent_run(args, Path(tmp) / f"m{i}", freshness)
            ours += runs
            delays += d
    ref_means = [r.mean for r in ref if r.mean is not None]
    reference = statistics.fmean(ref_means) if ref_means else None
    hls_means = [
        r.mean for r in ours if "HLS" in r.label and "aligned" not in r.label and r.mean is not None
    ]
    hls_mean = statistics.fmean(hls_means) if hls_means else None
    print(
        f"mode: standard, 2 s segments, ladder {args.ladder}, feed {args.feed_size}; "
        f"{args.joins} joins per player at spread phases, each {args.join_warmup:.0f} s + "
        f"{args.join_seconds:.0f} s sampled; load {load_average()}"
    )
    print("glass-to-glass (burnt-in frame number on screen vs wall clock):")
    for r in ref + ours:
        print("  " + r.line(reference))
    if reference:
        print(f"  reference = mean of the ffmpeg runs: {reference:.2f} s")
    if hls_mean:
        for r in ours:
            if "DASH" in r.label and r.mean is not None:
                print(
                    f"  {r.label}: × mainevent HLS (mean {hls_mean:.2f} s) {r.mean / hls_mean:.3f}"
                )
    if delays:
        print(
            f"publish delay (capture end → listed at the origin, polled every 10 ms): "
            f"p50 {statistics.median(delays):.3f} s  p95 {quantile(delays, 0.95):.3f} s  "
            f"({len(delays)} segments)"
        )
    p50, p95 = histogram_quantiles(metrics, (0.5, 0.95))
    print(f"publish delay histogram: p50 ≤ {p50} s  p95 ≤ {p95} s")


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=10.0, help="LL catch-up period reported apart")
    ap.add_argument(
        "--ladder", default=TEST_LADDER, help="ladder for the stack (default: the test ladder)"
    )
    ap.add_argument("--only", choices=["standard", "low", "players"])
    ap.add_argument(
        "--players",
        action="store_true",
        help="also run the standard-mode side by side (ffmpeg reference, edge, DASH; browsers)",
    )
    ap.add_argument("--feed-size", default="640x360", help="feed size of the side-by-side runs")
    ap.add_argument("--joins", type=int, default=3, help="side by side: joins per player")
    ap.add_argument(
        "--playlist-freshness",
        choices=["default", "aligned", "both"],
        default="default",
        help="side by side: origin.playlist_freshness of the mainevent run(s)",
    )
    ap.add_argument(
        "--join-warmup", type=float, default=8.0, help="side by side: s before sampling"
    )
    ap.add_argument("--join-seconds", type=float, default=5.0, help="side by side: s sampled")
    ap.add_argument(
        "--backup",
        action="store_true",
        help="side by side: run mainevent with its backup pipeline too (the default config)",
    )
    ap.add_argument(
        "--stock",
        action="store_true",
        help="also run stock hls.js and Shaka (LL) through an edge and directly, same stack",
    )
    ap.add_argument(
        "--tuned-part-ms",
        type=int,
        help="also run low latency with this part target (ms; must divide the segment duration)",
    )
    args = ap.parse_args()
    if args.only == "players" or args.players:
        side_by_side(args)
        if args.only == "players":
            return
        print()
    if args.only != "low":
        standard(args)
    if args.only != "standard":
        print()
        low_latency(args)
        if args.tuned_part_ms is not None:
            print()
            low_latency(args, args.tuned_part_ms)


def standard(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stack = start_stack(Path(tmp), ladder=args.ladder)
        origin_pl = f"{stack.base_url}/live/{stack.event}/{args.ladder.split(':', 1)[0]}/index.m3u8"
        follower = Follower(origin_pl, pdt_is_capture=True)
        follower.start()
        try:
            report = asyncio.run(play(stack.master_url, duration_s=args.seconds))
            metrics = httpx.get(f"{stack.base_url}/metrics", timeout=5).text
            feed = stack.pipeline_status()["feed"]
        finally:
            follower.stop.set()
            follower.join(10)
            stack.stop()
    lat = report.latency
    p50, p95 = histogram_quantiles(metrics, (0.5, 0.95))
    print(f"mode: standard HLS, segment 2 s, ladder {args.ladder}, played {report.played_s:.1f} s")
    print(
        f"startup            {report.startup_s:.2f} s"
        if report.startup_s is not None
        else "startup            -"
    )
    print(f"stalls             {report.stalls} ({report.stall_time_s:.2f} s)")
    if lat.samples:
        print(
            f"glass-to-glass     p50 {lat.p50_s:.2f} s   p95 {lat.p95_s:.2f} s   max {lat.max_s:.2f} s   ({lat.samples} samples)"
        )
    print(f"publish delay      p50 ≤ {p50} s   p95 ≤ {p95} s   (histogram bucket bounds)")
    d = follower.delays
    if d:
        print(
            f"publish delay      p50 {statistics.median(d):.3f} s   p95 {quantile(d, 0.95):.3f} s"
            f"   (capture end → listed at the origin, polled every 10 ms; {len(d)} segments)"
        )
    print(f"load average       {load_average()}")
    if isinstance(feed, dict):
        print(
            f"feed delay at ingest {feed.get('feed_delay_s')} s (wall clock − venue clock of the newest frame)"
        )
    if report.fatal:
        print(f"FATAL: {report.fatal}")


if __name__ == "__main__":
    main()
