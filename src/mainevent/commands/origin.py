"""`mainevent origin serve`: one origin process fed by the packager's ingest fan-out.

It serves the settings' event exactly as the packager's own origin does (HLS, LL-HLS blocking
reloads, DASH, tokens), from what arrives on `PUT /ingest/...` (`media/origin/ingest.py`),
stored in its own `--data-dir`; on start it re-lists what that directory holds, so a restarted
origin serves its old window at once and the fan-out's queue fills in the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import Any

from mainevent.config import ConfigError, Settings, load_settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("origin", help="run an origin fed by ingest (DASH-IF PUTs of CMAF objects)")
    osub = p.add_subparsers(dest="origin_command", metavar="ACTION", required=True)
    s = osub.add_parser("serve", help="serve the event from what the packager PUTs to /ingest/")
    s.add_argument("--config", type=Path, help="TOML settings file (then MAINEVENT_* env)")
    s.add_argument(
        "--settings-json",
        type=Path,
        help="settings as JSON (what `mainevent up` hands its origin replicas)",
    )
    s.add_argument("--host", help="listen address (default origin.host)")
    s.add_argument("--port", type=int, help="listen port (default origin.port; 0 = any)")
    s.add_argument("--data-dir", type=Path, help="this origin's own segment directory")
    s.add_argument(
        "--ingest-secret",
        help="Bearer secret ingest PUTs must carry (default origin.ingest_secret)",
    )
    s.add_argument(
        "--cdn",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="a CDN pathway for steered manifests (repeatable, preferred first)",
    )
    s.add_argument("--steering-url", help="content steering server URL prefix (with --cdn)")
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    s.set_defaults(func=run)


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if args.settings_json is not None:
        overrides = json.loads(args.settings_json.read_text())
    origin: dict[str, Any] = {}
    for key, value in (
        ("host", args.host),
        ("port", args.port),
        ("data_dir", args.data_dir),
        ("ingest_secret", args.ingest_secret),
    ):
        if value is not None:
            origin[key] = str(value) if isinstance(value, Path) else value
    if origin:
        overrides["origin"] = {**overrides.get("origin", {}), **origin}
    return load_settings(file=args.config, environ=dict(os.environ), overrides=overrides)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"mainevent origin serve: {exc}", file=sys.stderr)
        return 2
    except (OSError, json.JSONDecodeError) as exc:
        print(f"mainevent origin serve: cannot read --settings-json: {exc}", file=sys.stderr)
        return 2
    cdns: list[tuple[str, str]] = []
    for item in args.cdn:
        name, sep, url = item.partition("=")
        if not sep or not url.startswith(("http://", "https://")):
            print(
                f"mainevent origin serve: --cdn {item!r} is not NAME=http(s)://…", file=sys.stderr
            )
            return 2
        cdns.append((name, url))
    import uvloop

    try:
        uvloop.run(serve(settings, cdns=tuple(cdns), steering_url=args.steering_url))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"mainevent origin serve: {exc}", file=sys.stderr)
        return 1
    return 0


async def serve(
    settings: Settings,
    *,
    cdns: tuple[tuple[str, str], ...] = (),
    steering_url: str | None = None,
) -> None:
    """Serve the event until SIGINT/SIGTERM."""
    import uvicorn
    from prometheus_client import CollectorRegistry

    from mainevent.commands.stack import live_event, segment_store
    from mainevent.media.manifest.pathways import Pathways
    from mainevent.media.origin import tune_gc
    from mainevent.media.origin.app import create_app
    from mainevent.media.origin.ingest import IngestReceiver, with_ingest
    from mainevent.media.origin.live import Metrics
    from mainevent.media.origin.protocol import origin_protocol
    from mainevent.media.store.s3 import S3SegmentStore

    log = logging.getLogger("mainevent.origin")
    o = settings.origin
    store = segment_store(settings)
    event = live_event(settings, store, Metrics(CollectorRegistry()))
    if cdns and steering_url:
        event.pathways = Pathways(cdns=cdns, steering_url=steering_url)
    restored = event.restore()
    if restored:
        log.info("restored %d published segments from %s", restored, o.data_dir)
    events = {event.event_id: event}
    app = create_app(
        events,
        cors_origin=o.cors_origin,
        token_keys=o.token_keys,
        require_token=o.require_token,
        health=lambda: {"role": "origin", "ingest": True},
    )
    origin = app.state.origin

    def hide(eid: str, hidden: bool) -> None:
        # The rehearsal gate: /live/<event>/ is 404 no-store, so the shield asks another origin.
        if hidden:
            origin.rehearsal[eid] = secrets.token_urlsafe(16)
        else:
            origin.rehearsal.pop(eid, None)
        log.info("event %s %s", eid, "hidden from viewers" if hidden else "served")

    receiver = IngestReceiver(events, secret=o.ingest_secret, hide=hide)
    with_ingest(app, receiver)
    if restored:
        # Hidden until the fan-out's backlog for us is through (the shield serves the newest
        # window from another origin meanwhile); shown anyway when no sender comes in 3 × TD.
        receiver.catch_up(event.event_id)
        loop = asyncio.get_running_loop()
        loop.call_later(3 * event.target_duration_s, receiver.caught_up, event.event_id)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((o.host, o.port))
    sock.listen(2048)  # connections wait in the backlog from the moment the URL is printed
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            http=origin_protocol(app),
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=3,
        )
    )
    tune_gc()
    print(json.dumps({"origin": f"http://{host}:{port}", "event": event.event_id}), flush=True)
    if isinstance(store, S3SegmentStore):  # uploads run beside the server
        async with asyncio.TaskGroup() as tg:
            uploads = tg.create_task(store.serve())
            await server.serve(sockets=[sock])
            uploads.cancel()
    else:
        await server.serve(sockets=[sock])
