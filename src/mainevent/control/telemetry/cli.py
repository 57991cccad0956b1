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


def serve(args: argparse.Namespace) -> int:
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
    except ConfigError as exc:
        print(f"mainevent telemetry serve: {exc}", file=sys.stderr)
        return 2
    t = settings.telemetry
    if events:
        t = t.model_copy(update={"events": {**t.events, **events}})
    server = TelemetryServer(
        build_service(t), host=t.host, port=t.port, scrape_targets=dict(t.scrape_targets)
    )
    url = server.bind()
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
