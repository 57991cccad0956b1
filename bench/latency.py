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
alongside: it is the floor the player's latency is built on.

    .venv/bin/python bench/latency.py [--seconds 60] [--ladder default] [--only standard|low]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from mainevent.player.session import play
from mainevent.testing.browser import player_page
from mainevent.testing.stack import TEST_LADDER, start_stack


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


def low_latency(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stack = start_stack(Path(tmp) / "data", ladder=args.ladder, extra_args=("--latency", "low"))
        samples: list[tuple[float, float]] = []
        stats: dict[str, object] = {}
        try:
            url = f"{stack.base_url}/player/?src=/live/{stack.event}/master.m3u8&ll=1"
            with player_page(url, Path(tmp) / "profile") as page:
                t0 = time.monotonic()
                while time.monotonic() - t0 < args.seconds:
                    time.sleep(0.5)
                    stats = page.evaluate("window.mainevent.stats()")
                    lat = stats.get("latencySec")
                    if isinstance(lat, (int, float)):
                        samples.append((time.monotonic() - t0, float(lat)))
            metrics = httpx.get(f"{stack.base_url}/metrics", timeout=5).text
        finally:
            stack.stop()
    p50, p95 = histogram_quantiles(metrics, (0.5, 0.95))
    print(f"mode: low-latency HLS (hls.js lowLatencyMode in Chromium), played {args.seconds:.0f} s")
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
    print(f"publish delay      p50 ≤ {p50} s   p95 ≤ {p95} s   (segments; histogram bounds)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=10.0, help="LL catch-up period reported apart")
    ap.add_argument(
        "--ladder", default=TEST_LADDER, help="ladder for the stack (default: the test ladder)"
    )
    ap.add_argument("--only", choices=["standard", "low"])
    args = ap.parse_args()
    if args.only != "low":
        standard(args)
    if args.only != "standard":
        print()
        low_latency(args)


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
