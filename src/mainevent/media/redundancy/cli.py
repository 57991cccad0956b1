"""`mainevent pipeline …`: see and force which pipeline's segments the origin publishes."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import httpx

from mainevent.media.redundancy.ops import ADMIN_SECRET_HEADER


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pipeline", help="redundant pipelines: selection status, operator force")
    psub = p.add_subparsers(dest="pipeline_command", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get("MAINEVENT_ORIGIN_URL", "http://127.0.0.1:8080"),
        help="origin base URL (env MAINEVENT_ORIGIN_URL)",
    )
    common.add_argument("--json", action="store_true", help="print the full JSON status")
    s = psub.add_parser("status", parents=[common], help="mode, preferred pipeline, health")
    s.set_defaults(func=_status)
    f = psub.add_parser(
        "force",
        parents=[common],
        help="prefer one pipeline (primary, backup) or return to automatic selection (auto)",
    )
    f.add_argument("mode", help="auto | primary | backup")
    f.add_argument(
        "--secret",
        default=os.environ.get("MAINEVENT_ADMIN_SECRET"),
        help="admin secret printed by `mainevent up` (env MAINEVENT_ADMIN_SECRET)",
    )
    f.set_defaults(func=_force)


def _summary(st: dict[str, Any]) -> str:
    lines = [f"mode {st['mode']}, preferred {st['preferred']}, switches {st['switches']}"]
    for name, p in st["pipelines"].items():
        health = "healthy" if p["healthy"] else "unhealthy"
        lines.append(
            f"  {name:<8} {health:<9} published {p['published_segments']}, "
            f"covered by others {p['covered_by_others']}"
        )
    if st.get("stalled_renditions"):
        lines.append(f"  manifest stall: {', '.join(st['stalled_renditions'])}")
    return "\n".join(lines)


def _answer(r: httpx.Response, as_json: bool) -> int:
    try:
        body = r.json()
    except ValueError:
        print(f"mainevent pipeline: HTTP {r.status_code}: {r.text[:200]}", file=sys.stderr)
        return 1
    if r.status_code != 200:
        print(
            f"mainevent pipeline: HTTP {r.status_code} {body.get('error')}: {body.get('detail')}",
            file=sys.stderr,
        )
        return 1
    print(json.dumps(body, indent=2) if as_json else _summary(body))
    return 0


def _status(args: argparse.Namespace) -> int:
    try:
        r = httpx.get(f"{args.url}/_ops/redundancy", timeout=10)
    except httpx.HTTPError as exc:
        print(f"mainevent pipeline: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    return _answer(r, args.json)


def _force(args: argparse.Namespace) -> int:
    if not args.secret:
        print(
            "mainevent pipeline: --secret (or MAINEVENT_ADMIN_SECRET) is required", file=sys.stderr
        )
        return 2
    try:
        r = httpx.put(
            f"{args.url}/_ops/redundancy",
            json={"mode": args.mode},
            headers={ADMIN_SECRET_HEADER: args.secret},
            timeout=10,
        )
    except httpx.HTTPError as exc:
        print(f"mainevent pipeline: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    return _answer(r, args.json)
