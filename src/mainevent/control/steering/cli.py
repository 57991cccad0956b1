"""`mainevent steering status|drain|pin|restore`: operator controls of content steering over
the control plane's API (audited there; same `--server`/`--api-key` as `mainevent event`)."""

from __future__ import annotations

import argparse
import os
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    st = subparsers.add_parser(
        "steering", help="content steering: drain / pin / restore a CDN in a region, status"
    )
    st.add_argument(
        "--server",
        default=os.environ.get("MAINEVENT_CONTROL_URL", "http://127.0.0.1:8090"),
        help="control-plane URL (env MAINEVENT_CONTROL_URL; default %(default)s)",
    )
    st.add_argument(
        "--api-key",
        default=os.environ.get("MAINEVENT_API_KEY"),
        help="operator API key (env MAINEVENT_API_KEY; default: data/control-admin.key)",
    )
    st.add_argument("--idempotency-key", help="reuse a key to retry a change safely")
    acts = st.add_subparsers(dest="steering_command", metavar="ACTION", required=True)
    p = acts.add_parser("status", help="overrides, sessions per region × CDN, CDN health")
    p.set_defaults(func=_status)
    for action, text in (
        ("drain", "move a CDN's sessions in a region to other CDNs, RATE per TTL"),
        ("pin", "move every session of a region to this CDN, RATE per TTL"),
        ("restore", "end a drain or pin: sessions return gradually"),
    ):
        p = acts.add_parser(action, help=text)
        p.add_argument("cdn", help="CDN name, e.g. cdn-b")
        p.add_argument("--region", required=True, help="region, or '*' for every region")
        if action != "restore":
            p.add_argument(
                "--rate",
                type=float,
                help="share of the affected sessions moved per TTL, (0, 1] (default: steering.drain_share)",
            )
        p.set_defaults(func=_change, action=action)


def _status(args: argparse.Namespace) -> int:
    from mainevent.control.cli import _call

    return _call(args, "GET", "/v1/steering")


def _change(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    from mainevent.control.cli import _call

    path = f"/v1/steering/overrides/{quote(args.region, safe='')}/{quote(args.cdn, safe='')}"
    if args.action == "restore":
        return _call(args, "DELETE", path)
    body: dict[str, Any] = {"action": args.action}
    if args.rate is not None:
        body["rate"] = args.rate
    return _call(args, "PUT", path, body)
