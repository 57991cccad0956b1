"""`mainevent event ...` (operator commands over HTTP) and `mainevent control ...` (server side)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx

from mainevent.config import ConfigError

__all__ = ["register"]

_DEFAULT_URL = "http://127.0.0.1:8090"


def register(subparsers: Any) -> None:
    """Add the `event` and `control` subcommands."""
    ev = subparsers.add_parser(
        "event", help="create, read, update, list and transition events (control-plane API)"
    )
    ev.add_argument(
        "--server",
        default=os.environ.get("MAINEVENT_CONTROL_URL", _DEFAULT_URL),
        help="control-plane URL (env MAINEVENT_CONTROL_URL; default %(default)s)",
    )
    ev.add_argument(
        "--api-key",
        default=os.environ.get("MAINEVENT_API_KEY"),
        help="operator API key (env MAINEVENT_API_KEY; default: data/control-admin.key)",
    )
    ev.add_argument(
        "--idempotency-key", help="reuse a key to retry a change safely (default: a new UUID)"
    )
    evs = ev.add_subparsers(dest="event_command", metavar="ACTION", required=True)

    p = evs.add_parser("create", help="create a draft event")
    p.add_argument("id")
    p.add_argument("--title", required=True)
    p.add_argument("--starts-at", help="ISO 8601 with offset, e.g. 2026-12-01T20:00:00Z")
    p.add_argument("--ends-at")
    p.add_argument(
        "--spec",
        help="JSON object (or @file.json) with more fields: policy, allowed_regions, cdns, ...",
    )
    p.set_defaults(func=_create)

    p = evs.add_parser("get", help="show one event")
    p.add_argument("id")
    p.set_defaults(func=_get)

    p = evs.add_parser("list", help="list events")
    p.add_argument("--status")
    p.set_defaults(func=_list)

    p = evs.add_parser("update", help="change fields of an event")
    p.add_argument("id")
    p.add_argument("--title")
    p.add_argument("--starts-at")
    p.add_argument("--ends-at")
    p.add_argument("--spec", help="JSON object (or @file.json) of fields to change")
    p.add_argument(
        "--if-match", help="ETag the change is based on (412 if the event changed since)"
    )
    p.set_defaults(func=_update)

    p = evs.add_parser("transition", help="move an event to another status (e.g. live)")
    p.add_argument("id")
    p.add_argument(
        "to", choices=["scheduled", "rehearsal", "live", "paused", "ended", "archived", "draft"]
    )
    p.add_argument("--if-match")
    p.set_defaults(func=_transition)

    p = evs.add_parser("highlights", help="mark, list and remove highlights (points and ranges)")
    hs = p.add_subparsers(dest="highlight_command", metavar="HIGHLIGHT_ACTION", required=True)
    q = hs.add_parser("add", help="mark a point (--start) or a range (--start and --end)")
    q.add_argument("id", help="event id")
    q.add_argument("--title", required=True)
    q.add_argument("--start", required=True, help="wall-clock ISO 8601 with offset (PDT time)")
    q.add_argument("--end", help="end of a range (after --start)")
    q.set_defaults(func=_highlight_add)
    q = hs.add_parser("list", help="the event's highlights and their clip URLs")
    q.add_argument("id", help="event id")
    q.set_defaults(func=_highlight_list)
    q = hs.add_parser("delete", help="remove a highlight")
    q.add_argument("id", help="event id")
    q.add_argument("highlight", help="highlight id (h<n>)")
    q.set_defaults(func=_highlight_delete)
    q = hs.add_parser("sync", help="push the event's highlights to the origin again")
    q.add_argument("id", help="event id")
    q.set_defaults(func=_highlight_sync)

    ctl = subparsers.add_parser(
        "control", help="run the control-plane server and its maintenance tasks"
    )
    ctl.add_argument("--config", type=Path, help="TOML config file (table [control])")
    cs = ctl.add_subparsers(dest="control_command", metavar="ACTION", required=True)
    p = cs.add_parser("serve", help="run the control-plane HTTP API")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--database-url")
    p.add_argument(
        "--redis-url", help="Redis for shared sessions and rate limits (control.redis_url)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="run N worker processes behind Debian's nginx on --port (needs --redis-url); "
        "without it: one process, no nginx",
    )
    p.set_defaults(func=_serve)
    p = cs.add_parser(
        "lb-config", help="print the nginx config that balances control-plane workers"
    )
    p.add_argument("--listen", default="0.0.0.0:8090", help="HOST:PORT nginx listens on")
    p.add_argument(
        "--worker",
        action="append",
        required=True,
        metavar="HOST:PORT",
        help="a worker (repeatable); a bare PORT means 127.0.0.1:PORT",
    )
    p.add_argument("--workdir", type=Path, default=Path("/var/lib/mainevent/control-lb"))
    p.add_argument("--user", default="www-data", help="nginx worker user")
    p.set_defaults(func=_lb_config)
    p = cs.add_parser("migrate", help="bring the database schema up to date")
    p.add_argument("--database-url")
    p.set_defaults(func=_migrate)
    p = cs.add_parser("dev-token", help="mint a viewer JWT from the development identity provider")
    p.add_argument("account")
    p.add_argument("--ttl", type=int, default=3600)
    p.set_defaults(func=_dev_token)


# -- server side ----------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Any:
    from mainevent.control.settings import load_control_settings

    overrides = {
        k: v
        for k, v in (
            ("host", getattr(args, "host", None)),
            ("port", getattr(args, "port", None)),
            ("database_url", getattr(args, "database_url", None)),
            ("redis_url", getattr(args, "redis_url", None)),
        )
        if v is not None
    }
    return load_control_settings(file=args.config, environ=os.environ, overrides=overrides)


def _serve(args: argparse.Namespace) -> int:
    from mainevent.control.server import serve

    try:
        if args.workers is not None:
            from mainevent.control.fleet import serve_fleet

            return serve_fleet(_settings(args), args.workers, args.config)
        return serve(_settings(args))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2


def _lb_config(args: argparse.Namespace) -> int:
    from mainevent.control.fleet import FleetPlan, lb_config

    try:
        s = _settings(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    host, _, port = args.listen.rpartition(":")
    plan = FleetPlan(
        listen_host=host or "0.0.0.0",
        listen_port=int(port),
        workers=tuple(w if ":" in w else f"127.0.0.1:{w}" for w in args.worker),
        workdir=args.workdir,
        trusted_edges=s.trusted_edges,
        edge_region_header=s.edge_region_header,
        max_body_bytes=s.max_body_bytes,
        user=args.user or None,
    )
    sys.stdout.write(lb_config(plan))
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from mainevent.control.db import open_database

    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    open_database(settings.database_url).dispose()
    print(f"schema of {settings.database_url} is up to date")
    return 0


def _dev_token(args: argparse.Namespace) -> int:
    from mainevent.control.auth import DevIdentityProvider

    try:
        s = _settings(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not s.dev_idp_secret:
        print(
            "the development identity provider is disabled (control.dev_idp_secret is unset)",
            file=sys.stderr,
        )
        return 2
    print(
        DevIdentityProvider(
            secret=s.dev_idp_secret, issuer=s.jwt_issuer, audience=s.jwt_audience
        ).mint(args.account, ttl_s=args.ttl)
    )
    return 0


# -- client side ----------------------------------------------------------------------------------


def _spec(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    raw = Path(text[1:]).read_text() if text.startswith("@") else text
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("--spec must be a JSON object")
    return data


def _api_key(args: argparse.Namespace) -> str | None:
    if args.api_key:
        return str(args.api_key)
    path = Path("data") / "control-admin.key"
    return path.read_text().strip() if path.exists() else None


def _call(
    args: argparse.Namespace,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    if_match: str | None = None,
) -> int:
    headers = {}
    key = _api_key(args)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if method != "GET":
        headers["Idempotency-Key"] = args.idempotency_key or str(uuid.uuid4())
    if if_match:
        headers["If-Match"] = if_match if if_match.startswith(('"', "W/", "*")) else f'"{if_match}"'
    try:
        resp = httpx.request(
            method, args.server.rstrip("/") + path, json=body, headers=headers, timeout=30
        )
    except httpx.HTTPError as exc:
        print(
            f"cannot reach the control plane at {args.server}: {exc} (is `mainevent control serve` running?)",
            file=sys.stderr,
        )
        return 3
    try:
        data = resp.json()
    except ValueError:
        data = {"raw": resp.text}
    if resp.is_success:
        if "etag" in resp.headers:
            data = {"etag": resp.headers["etag"], **data} if isinstance(data, dict) else data
        print(json.dumps(data, indent=2))
        return 0
    err = data.get("error", {}) if isinstance(data, dict) else {}
    detail = data.get("detail") if isinstance(data, dict) else None
    print(
        f"error {resp.status_code}: {err.get('reason', 'error')}: {err.get('message', detail or resp.text)}",
        file=sys.stderr,
    )
    return 1


def _create(args: argparse.Namespace) -> int:
    try:
        body = _spec(args.spec)
    except (OSError, ValueError) as exc:
        print(f"bad --spec: {exc}", file=sys.stderr)
        return 2
    body |= {"id": args.id, "title": args.title}
    if args.starts_at:
        body["starts_at"] = args.starts_at
    if args.ends_at:
        body["ends_at"] = args.ends_at
    return _call(args, "POST", "/v1/events", body)


def _get(args: argparse.Namespace) -> int:
    return _call(args, "GET", f"/v1/events/{args.id}")


def _list(args: argparse.Namespace) -> int:
    return _call(args, "GET", "/v1/events" + (f"?status={args.status}" if args.status else ""))


def _update(args: argparse.Namespace) -> int:
    try:
        body = _spec(args.spec)
    except (OSError, ValueError) as exc:
        print(f"bad --spec: {exc}", file=sys.stderr)
        return 2
    for name in ("title", "starts_at", "ends_at"):
        if getattr(args, name):
            body[name] = getattr(args, name)
    return _call(args, "PATCH", f"/v1/events/{args.id}", body, if_match=args.if_match)


def _transition(args: argparse.Namespace) -> int:
    return _call(
        args, "POST", f"/v1/events/{args.id}/transitions", {"to": args.to}, if_match=args.if_match
    )


def _highlight_add(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"title": args.title, "start": args.start}
    if args.end:
        body["end"] = args.end
    return _call(args, "POST", f"/v1/events/{args.id}/highlights", body)


def _highlight_list(args: argparse.Namespace) -> int:
    return _call(args, "GET", f"/v1/events/{args.id}/highlights")


def _highlight_delete(args: argparse.Namespace) -> int:
    return _call(args, "DELETE", f"/v1/events/{args.id}/highlights/{args.highlight}")


def _highlight_sync(args: argparse.Namespace) -> int:
    return _call(args, "POST", f"/v1/events/{args.id}/highlights:sync")
