"""`mainevent feed`: push the synthetic venue feed (test pattern, burnt-in clock, tone)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time

from mainevent.media.encode.ffmpeg import FeedSpec, FfmpegNotFound, find_ffmpeg
from mainevent.media.feed import FeedProcess, grid_start


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser(
        "feed-ctl", help="drill: break a running `mainevent feed` through its --control API"
    )
    c.add_argument("control", help="the feed's control address, e.g. http://127.0.0.1:9100")
    c.add_argument(
        "action", choices=["status", "drop", "restart", "clear", "stall", "corrupt", "desync"]
    )
    c.add_argument(
        "value",
        nargs="?",
        type=float,
        help="stall: seconds; corrupt: TS packets; desync: audio offset ms",
    )
    c.set_defaults(func=control_command)
    p = sub.add_parser(
        "feed",
        help="push a synthetic venue feed over SRT or RTMP",
        description="Moving test pattern with the capture time (UTC) burnt in, a frame-number barcode "
        "and a tone, pushed in real time; timestamps carry the venue clock (time of day).",
    )
    p.add_argument(
        "url",
        help="contribution URL, e.g. 'srt://127.0.0.1:9000?streamid=demo-key' or rtmp://host/live/KEY",
    )
    p.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT (default 1280x720)")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--bitrate", type=int, default=6000, help="kbit/s")
    p.add_argument("--tone", type=int, default=1000, help="tone frequency, Hz")
    p.add_argument(
        "--duration", type=float, help="stop after S seconds (default: run until Ctrl-C)"
    )
    p.add_argument("--ffmpeg", help="ffmpeg binary (default: the imageio-ffmpeg wheel's)")
    p.add_argument(
        "--control",
        metavar="HOST:PORT",
        help="serve the drill API (drop, stall, corrupt, desync, restart) here",
    )
    p.add_argument(
        "--corrupt-every", type=float, metavar="S", help="drill: damage the feed every S seconds"
    )
    p.add_argument(
        "--corrupt-packets",
        type=int,
        default=200,
        metavar="N",
        help="TS packets overwritten with garbage per damage (default 200)",
    )
    p.set_defaults(func=run)


def _srt_caller(url: str) -> str:
    if url.startswith("srt://"):
        sep = "&" if "?" in url else "?"
        if "mode=" not in url:
            url += f"{sep}mode=caller"
            sep = "&"
        if "pkt_size=" not in url:
            url += f"{sep}pkt_size=1316"
    return url


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not args.url.startswith(("srt://", "rtmp://")):
        print("mainevent feed: URL must start with srt:// or rtmp://", file=sys.stderr)
        return 2
    try:
        w, h = (int(x) for x in args.size.lower().split("x"))
    except ValueError:
        print(f"mainevent feed: --size {args.size!r} is not WIDTHxHEIGHT", file=sys.stderr)
        return 2
    try:
        ffmpeg = find_ffmpeg(args.ffmpeg)
    except FfmpegNotFound as exc:
        print(f"mainevent feed: {exc}", file=sys.stderr)
        return 2
    spec = FeedSpec(
        url=_srt_caller(args.url),
        start_epoch=grid_start(time.time(), args.fps),
        width=w,
        height=h,
        fps=args.fps,
        bitrate_kbps=args.bitrate,
        tone_hz=args.tone,
        duration_s=args.duration,
    )
    feed = FeedProcess(ffmpeg, spec, restart=args.duration is None)

    control: tuple[str, int] | None = None
    if args.control:
        host, _, port = args.control.rpartition(":")
        if not port.isdigit() or not host:
            print(f"mainevent feed: --control {args.control!r} is not HOST:PORT", file=sys.stderr)
            return 2
        control = (host, int(port))

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            serve = tg.create_task(feed.serve())
            helpers = []
            if args.corrupt_every:
                helpers.append(
                    tg.create_task(
                        feed.corrupt_periodically(args.corrupt_every, args.corrupt_packets)
                    )
                )
            if control is not None:
                import uvicorn

                from mainevent.media.feed_control import create_feed_control_app

                config = uvicorn.Config(
                    create_feed_control_app(feed),
                    host=control[0],
                    port=control[1],
                    log_level="warning",
                    lifespan="off",
                )
                helpers.append(tg.create_task(uvicorn.Server(config).serve()))
            await serve
            for h in helpers:
                h.cancel()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    return 0


def control_command(args: argparse.Namespace) -> int:
    """`mainevent feed-ctl`: send one drill command to a running feed simulator."""
    import json

    import httpx

    base = args.control if "://" in args.control else f"http://{args.control}"
    body: dict[str, float | int] = {}
    needs = {"stall": "seconds", "corrupt": "packets", "desync": "audio_offset_ms"}
    if args.action in needs:
        if args.value is None:
            print(
                f"mainevent feed-ctl: {args.action} needs a value ({needs[args.action]})",
                file=sys.stderr,
            )
            return 2
        body[needs[args.action]] = args.value if args.action == "stall" else int(args.value)
    try:
        if args.action == "status":
            r = httpx.get(f"{base}/status", timeout=5)
        else:
            r = httpx.post(f"{base}/faults/{args.action}", json=body, timeout=5)
    except httpx.HTTPError as exc:
        print(f"mainevent feed-ctl: cannot reach {base}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(r.json(), indent=2))
    return 0 if r.is_success else 1
