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

    .venv/bin/python bench/latency.py [--seconds 60] [--ladder default] [--only standard|low]
                                      [--tuned-part-ms MS] [--stock]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from mainevent.media.manifest import MediaPlaylist, parse_media_playlist
from mainevent.player.session import play
from mainevent.testing.browser import player_page
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=10.0, help="LL catch-up period reported apart")
    ap.add_argument(
        "--ladder", default=TEST_LADDER, help="ladder for the stack (default: the test ladder)"
    )
    ap.add_argument("--only", choices=["standard", "low"])
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
        try:
            report = asyncio.run(play(stack.master_url, duration_s=args.seconds))
            metrics = httpx.get(f"{stack.base_url}/metrics", timeout=5).text
            feed = stack.pipeline_status()["feed"]
        finally:
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
    if isinstance(feed, dict):
        print(
            f"feed delay at ingest {feed.get('feed_delay_s')} s (wall clock − venue clock of the newest frame)"
        )
    if report.fatal:
        print(f"FATAL: {report.fatal}")


if __name__ == "__main__":
    main()
