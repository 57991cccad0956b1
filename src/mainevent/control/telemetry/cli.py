"""`mainevent telemetry serve`: run the collector on its own (settings from the `[telemetry]` table)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from mainevent.config import ConfigError, load_settings
from mainevent.control.settings import load_control_settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("telemetry", help="telemetry collector: CMCD reports, edge logs, QoE API")
    tsub = p.add_subparsers(dest="telemetry_command", metavar="ACTION", required=True)
    s = tsub.add_parser("serve", help="run the collector (QoE API, /metrics, alerts)")
    s.add_argument("--config", type=Path, help="TOML settings file (the [telemetry] table)")
    s.add_argument("--host", help="listen address")
    s.add_argument("--port", type=int, help="listen port (0 = any free port)")
    s.add_argument("--db", type=Path, help="SQLite file of the time series")
    s.add_argument(
        "--event",
        action="append",
        default=[],
        metavar="ID:SEGMENT_MS",
        help="accept reports for this event (repeatable), e.g. demo:2000",
    )
    s.set_defaults(func=serve)
    a = tsub.add_parser(
        "aggregate",
        help="consume the report streams (telemetry.stream.mode = redis) as one aggregator",
    )
    a.add_argument("--config", type=Path, help="TOML settings file (the [telemetry] table)")
    a.add_argument(
        "--shards",
        default="",
        metavar="N,N,...",
        help="report shards this aggregator owns (default: all); give each aggregator its own",
    )
    a.add_argument("--consumer", default="aggregator-0", help="consumer name in the group")
    a.add_argument(
        "--event", action="append", default=[], metavar="ID:SEGMENT_MS", help="as for serve"
    )
    a.set_defaults(func=aggregate)


def serve(args: argparse.Namespace) -> int:
    from mainevent.common.gc_tuning import tune_gc
    from mainevent.control.telemetry.server import TelemetryServer, build_service

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    over: dict[str, object] = {}
    if args.host:
        over["host"] = args.host
    if args.port is not None:
        over["port"] = args.port
    if args.db:
        over["db_path"] = str(args.db)
    events: dict[str, int] = {}
    for item in args.event:
        ev, sep, ms = item.partition(":")
        if not sep or not ms.isdigit() or not ev:
            print(
                f"mainevent telemetry serve: --event {item!r} is not ID:SEGMENT_MS", file=sys.stderr
            )
            return 2
        events[ev] = int(ms)
    try:
        settings = load_settings(
            file=args.config, environ=os.environ, overrides={"telemetry": over}
        )
        # The control plane's region table, from the same file and environment.
        regions = load_control_settings(file=args.config, environ=os.environ).regions
    except ConfigError as exc:
        print(f"mainevent telemetry serve: {exc}", file=sys.stderr)
        return 2
    t = settings.telemetry
    if events:
        t = t.model_copy(update={"events": {**t.events, **events}})
    server = TelemetryServer(
        build_service(t, regions=regions),
        host=t.host,
        port=t.port,
        scrape_targets=dict(t.scrape_targets),
    )
    url = server.bind()
    # Sessions, dedupe state and windows are many long-lived small objects: full collections
    # re-scanning them all cost ~5 % of a busy collector (bench/telemetry.py).
    tune_gc()
    print(
        f"telemetry collector at {url}  (QoE API {url}/v1/telemetry/qoe, OpenAPI {url}/docs)",
        flush=True,
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.stop)
        await server.serve()

    asyncio.run(main())
    return 0


def aggregate(args: argparse.Namespace) -> int:
    from mainevent.control.telemetry.server import run_aggregator

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    try:
        settings = load_settings(file=args.config, environ=os.environ)
        shards = [int(x) for x in args.shards.split(",") if x.strip()] or None
        events = {}
        for item in args.event:
            ev, sep, ms = item.partition(":")
            if not sep or not ms.isdigit() or not ev:
                raise ValueError(f"--event {item!r} is not ID:SEGMENT_MS")
            events[ev] = int(ms)
    except (ConfigError, ValueError) as exc:
        print(f"mainevent telemetry aggregate: {exc}", file=sys.stderr)
        return 2
    t = settings.telemetry
    if events:
        t = t.model_copy(update={"events": {**t.events, **events}})
    if t.stream.mode != "redis":
        print(
            "mainevent telemetry aggregate: telemetry.stream.mode is not 'redis'", file=sys.stderr
        )
        return 2

    async def main() -> None:
        task = asyncio.ensure_future(run_aggregator(t, shards, args.consumer))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    try:
        asyncio.run(main())
    except ValueError as exc:
        print(f"mainevent telemetry aggregate: {exc}", file=sys.stderr)
        return 2
    return 0
