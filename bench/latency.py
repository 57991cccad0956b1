"""Glass-to-glass latency of the live path, measured by the headless player.

Latency = wall clock − capture time (EXT-X-PROGRAM-DATE-TIME) at the playhead, sampled while a
real `mainevent up` stack (feed simulator → ffmpeg → packager → origin) plays. The origin's
publish delay (capture time of a segment's end → segment listed) is printed alongside: it is the
floor the player's latency is built on (the player then holds back ~3 target durations).

    .venv/bin/python bench/latency.py [--seconds 60] [--ladder default]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
from pathlib import Path

import httpx

from mainevent.player.session import play
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument(
        "--ladder", default=TEST_LADDER, help="ladder for the stack (default: the test ladder)"
    )
    args = ap.parse_args()
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
