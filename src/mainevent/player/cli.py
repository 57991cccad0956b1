"""`mainevent play`: play a live HLS stream headlessly and report startup, stalls and latency."""

from __future__ import annotations

import argparse
import asyncio

from mainevent.player.cmcd import CmcdTarget
from mainevent.player.report import PlaybackReport
from mainevent.player.session import event_of_url, play


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `play` subcommand."""
    parser = subparsers.add_parser(
        "play",
        help="play an HLS stream headlessly and report QoE",
        description=(
            "Play an HLS stream like hls.js would (ABR, audio rendition, playlist reloads, "
            "retries and failover) and report startup time, stalls, live latency and errors."
        ),
    )
    parser.add_argument("url", metavar="URL", help="multivariant (or media) playlist URL")
    parser.add_argument(
        "--duration",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to play after playback starts (default: 30)",
    )
    parser.add_argument(
        "--fallback",
        action="append",
        default=[],
        metavar="URL",
        help="fallback playlist URL or bare origin (http://host:port), tried in order; repeatable",
    )
    parser.add_argument(
        "--telemetry",
        metavar="URL",
        help="send CMCD v2 event reports as hls.js does to this collector (its base URL)",
    )
    parser.add_argument(
        "--report-interval",
        type=float,
        default=1.0,
        metavar="S",
        help="CMCD time-interval report period with --telemetry (default 1 s)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.duration < 0:
        print("mainevent play: --duration must not be negative")
        return 2
    target = None
    if args.telemetry:
        event = event_of_url(args.url) or "unknown"
        target = CmcdTarget(
            f"{args.telemetry.rstrip('/')}/v1/cmcd/{event}", interval_s=args.report_interval
        )
    report = asyncio.run(
        play(args.url, duration_s=args.duration, fallback_urls=args.fallback, cmcd=target)
    )
    print(report.to_json() if args.json else format_report(report))
    return 0 if report.fatal is None else 1


def format_report(report: PlaybackReport) -> str:
    """Human-readable summary of a playback report."""

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f} s"

    lat = report.latency
    lines = [
        f"url            {report.url}",
        f"startup        {seconds(report.startup_s)}",
        f"played         {seconds(report.played_s)}",
        f"stalls         {report.stalls} ({seconds(report.stall_time_s)}, "
        f"rebuffering {report.rebuffering_ratio:.1%})",
        f"latency        p50 {seconds(lat.p50_s)}  p95 {seconds(lat.p95_s)}  "
        f"max {seconds(lat.max_s)}  ({lat.samples} samples)",
        "renditions     "
        + (", ".join(f"{r.rendition}@{r.t_s:.1f}s" for r in report.renditions) or "-"),
        f"fetched        {report.segments_fetched} segments, {report.playlists_fetched} playlists, "
        f"{report.bytes_fetched / 1e6:.2f} MB",
        "errors         "
        + (", ".join(f"{k}: {v}" for k, v in report.http_errors.items()) or "none"),
    ]
    if report.failovers:
        lines.append(f"failovers      {report.failovers} (ended on {report.final_url})")
    if report.resyncs:
        lines.append(f"resyncs        {report.resyncs}")
    lines.append(f"fatal          {report.fatal}" if report.fatal else "result         ok")
    return "\n".join(lines)
