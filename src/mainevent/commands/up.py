"""`mainevent up`: run the platform for a demo event (feed simulator, pipeline, origin)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import uvloop

from mainevent.config import ConfigError, load_settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "up", help="run the platform: feed simulator → transcoder → packager → origin"
    )
    p.add_argument(
        "--config", type=Path, help="TOML settings file (then MAINEVENT_* env, then these options)"
    )
    p.add_argument("--event", help="event id (default: demo)")
    p.add_argument("--port", type=int, help="origin HTTP port (0 = any free port)")
    p.add_argument("--host", help="origin listen address")
    p.add_argument("--ingest-protocol", choices=["srt", "rtmp"])
    p.add_argument("--ingest-port", type=int)
    p.add_argument(
        "--segment-duration",
        type=float,
        metavar="S",
        help="segment duration in seconds (default 2)",
    )
    p.add_argument("--window", type=int, metavar="N", help="segments in the live window")
    p.add_argument(
        "--latency",
        choices=["standard", "low"],
        help="latency mode: standard HLS (default) or low (LL-HLS parts, blocking reload)",
    )
    p.add_argument(
        "--ladder",
        help="video ladder as ID:WxH:KBPS,... (e.g. v720:1280x720:2500,v360:640x360:700) or 'default' for 1080/720/480/360",
    )
    p.add_argument("--preset", help="x264 preset (default veryfast)")
    p.add_argument("--data-dir", type=Path, help="where segments are written")
    p.add_argument(
        "--no-feed",
        action="store_true",
        help="do not start the feed simulator (wait for a real venue feed)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    _add_edge_options(p)
    _add_scaleout_options(p)
    p.set_defaults(func=run)


def _seconds(text: str) -> float:
    """A non-negative number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text!r}")
    return value


def _add_edge_options(p: argparse.ArgumentParser) -> None:
    """Delivery tier: shield + edges cdn-a/b/c (admin secret and token keys from the env)."""
    p.add_argument(
        "--edge-port-base",
        type=int,
        default=0,
        metavar="PORT",
        help="shield on PORT, cdn-a/b/c on PORT+1..3 (default: any free ports)",
    )
    p.add_argument(
        "--no-edges", action="store_true", help="no shield/edges: players use the origin"
    )
    p.add_argument(
        "--no-steering",
        action="store_true",
        help="no control plane / content steering: manifests name no pathways",
    )
    p.add_argument(
        "--control-port",
        type=int,
        default=0,
        metavar="PORT",
        help="control plane (playback API, steering server) port (default: any free port)",
    )
    p.add_argument(
        "--supervisor-resync",
        type=float,
        metavar="S",
        help="re-read every event record each S seconds (when other control-plane processes "
        "share the database; changes made here are seen at once without it)",
    )
    p.add_argument(
        "--demo-preflight-wait",
        type=_seconds,
        default=60.0,
        metavar="S",
        help="the demo event goes live once its preflight passes; after S seconds of failing "
        "checks it goes live with an audited override naming them (default: 60)",
    )
    p.add_argument(
        "--no-backup",
        action="store_true",
        help="a single pipeline: no backup feed/pipeline (redundancy.backup = false)",
    )


def _add_scaleout_options(p: argparse.ArgumentParser) -> None:
    """Scale-out on one machine: origin processes fed by ingest, edge processes behind nginx."""
    p.add_argument(
        "--origins",
        type=int,
        metavar="N",
        help="origin processes fed by the ingest fan-out (origin.replicas; 1 = the packager's own)",
    )
    p.add_argument(
        "--edges-per-cdn",
        type=int,
        metavar="N",
        help="edge processes per CDN behind nginx (delivery.edges_per_cdn; 1 = in-process)",
    )
    p.add_argument(
        "--shields",
        type=int,
        metavar="N",
        help="shield processes (delivery.shields; 1 = in-process; N ≥ 2 needs --edges-per-cdn ≥ 2)",
    )


def scaleout_info(stack: Any) -> dict[str, Any]:
    """The scale-out processes of the ready line: URLs and pids (drills kill them)."""
    out: dict[str, Any] = {}
    if stack.replicas is not None:
        out["origins"] = [
            {"url": url, "pid": c.proc.pid if c.proc else None}
            for url, c in zip(stack.replicas.urls, stack.replicas.children, strict=False)
        ]
    if stack.edge_fleet is not None:
        out["edge_processes"] = [
            {
                "name": c.name,
                "cdn": c.name.rsplit("-", 1)[0],
                "url": c.health_url.removesuffix("/healthz"),
                "pid": c.proc.pid,
            }
            for c in stack.edge_fleet.children
            if c.proc is not None and c.health_url
        ]
        if stack.edge_fleet.shields:
            out["shield_processes"] = [
                {"name": c.name, "url": c.health_url.removesuffix("/healthz"), "pid": c.proc.pid}
                for c in stack.edge_fleet.shields
                if c.proc is not None and c.health_url
            ]
    return out


def _edge_env(environ: dict[str, str] | os._Environ[str]) -> tuple[str, dict[str, str] | None]:
    """MAINEVENT_EDGE_ADMIN_SECRET (default: random per run), MAINEVENT_EDGE_TOKEN_KEYS=kid:hex,…"""
    import secrets

    secret = environ.get("MAINEVENT_EDGE_ADMIN_SECRET") or secrets.token_hex(16)
    keys: dict[str, str] = {}
    for item in environ.get("MAINEVENT_EDGE_TOKEN_KEYS", "").split(","):
        kid, sep, hexkey = item.strip().partition(":")
        if sep:
            keys[kid] = hexkey
    return secret, keys or None


def parse_ladder(text: str) -> list[dict[str, Any]]:
    """`v720:1280x720:2500,...` → rung dicts (validated later by the settings model)."""
    from mainevent.config import DEFAULT_LADDER

    if text == "default":
        return [r.model_dump() for r in DEFAULT_LADDER]
    rungs = []
    for item in text.split(","):
        try:
            rid, size, kbps = item.split(":")
            w, h = size.lower().split("x")
            rungs.append({"id": rid, "width": int(w), "height": int(h), "bitrate_kbps": int(kbps)})
        except ValueError:
            raise ConfigError(f"--ladder: {item!r} is not ID:WIDTHxHEIGHT:KBPS") from None
    return rungs


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    o: dict[str, dict[str, Any]] = {
        "event": {},
        "origin": {},
        "ingest": {},
        "encoder": {},
        "redundancy": {},
    }
    if getattr(args, "no_backup", False):
        o["redundancy"]["backup"] = False
    if args.event:
        o["event"]["id"] = args.event
    if args.segment_duration is not None:
        o["event"]["segment_duration_ms"] = round(args.segment_duration * 1000)
    if args.window is not None:
        o["event"]["window_segments"] = args.window
    if args.latency:
        o["event"]["latency"] = args.latency
    if args.ladder:
        o["event"]["ladder"] = parse_ladder(args.ladder)
    if args.port is not None:
        o["origin"]["port"] = args.port
    if args.host:
        o["origin"]["host"] = args.host
    if args.data_dir:
        o["origin"]["data_dir"] = str(args.data_dir)
    if args.ingest_protocol:
        o["ingest"]["protocol"] = args.ingest_protocol
    if args.ingest_port is not None:
        o["ingest"]["port"] = args.ingest_port
    if args.preset:
        o["encoder"]["preset"] = args.preset
    if getattr(args, "origins", None) is not None:
        o["origin"]["replicas"] = args.origins
    if getattr(args, "edges_per_cdn", None) is not None:
        o["delivery"] = {"edges_per_cdn": args.edges_per_cdn}
    if getattr(args, "shields", None) is not None:
        o["delivery"] = o.get("delivery", {}) | {"shields": args.shields}
    return {k: v for k, v in o.items() if v}


def run(args: argparse.Namespace) -> int:
    from mainevent.commands.stack import Stack, StackError

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        # MAINEVENT_CONTROL__* belong to the control plane's settings (loaded below).
        media_env = {k: v for k, v in os.environ.items() if not k.startswith("MAINEVENT_CONTROL__")}
        settings = load_settings(
            file=args.config, environ=media_env, overrides=overrides_from_args(args)
        )
    except ConfigError as exc:
        print(f"mainevent up: {exc}", file=sys.stderr)
        return 2

    def ready(stack: Stack) -> None:
        ev = settings.event.id
        base = stack.base_url
        ingest = stack.ingest
        edges = stack.edge_urls
        play_base = edges.get("cdn-a", next(iter(edges.values()), ""))
        src = f"{play_base}/live/{ev}/master.m3u8" if play_base else f"/live/{ev}/master.m3u8"
        if stack.control_url and play_base:
            src += "?pathway=cdn-a"  # steered: every edge as a pathway, cdn-a first
        others = ",".join(u for n, u in edges.items() if u != play_base)
        tele = stack.telemetry_url
        ti = settings.telemetry.report_interval_s
        tq = f"&telemetry={tele}&ti={ti:g}" if tele else ""
        lines = [
            "",
            f"mainevent is live: event {ev!r}",
            f"  player      {base}/player/?src={src}" + (f"&edges={others}" if others else "") + tq,
            f"  multivariant {play_base or base}/live/{ev}/master.m3u8",
            *(
                [f"  low-latency {base}/player/?ll=1&src={src}"]
                if settings.event.latency == "low"
                else []
            ),
            f"  dash        {base}/player/?src={play_base or base}/live/{ev}/manifest.mpd",
            *(f"  {name:<11} {url}/live/{ev}/master.m3u8" for name, url in edges.items()),
            *([f"  shield      {stack.shield.url}"] if stack.shield else []),
            *(
                [
                    f"  console     {stack.control_url}/console/  "
                    + (
                        f"(sign in with operator key {stack.console_logins['operator']}; "
                        f"read-only {stack.console_logins['read-only']})"
                        if stack.console_logins
                        else "(sign in with an operator API key)"
                    ),
                    f"  control     {stack.control_url}  (playback API, operator API)",
                    f"  steering    {stack.control_url}/steering/{ev}/hls  "
                    "(`mainevent steering drain|pin|restore`)",
                ]
                if stack.control_url
                else []
            ),
            f"  origin      {base}/live/{ev}/master.m3u8",
            *(
                f"  origin-{i}    {url}/live/{ev}/master.m3u8  (fed by ingest)"
                for i, url in enumerate(stack.replicas.urls if stack.replicas else ())
            ),
            f"  health      {base}/healthz",
            f"  metrics     {base}/metrics",
            *(
                [
                    f"  telemetry   {tele}/v1/telemetry/qoe?event={ev}&by=cdn,region"
                    f"  (OpenAPI {tele}/docs, alerts {tele}/v1/telemetry/alerts)"
                ]
                if tele
                else []
            ),
            f"  ingest      {ingest.publish_url if ingest else '-'}"
            + ("  (primary)" if stack.backup_ingest else ""),
            *(
                [
                    f"  backup      {stack.backup_ingest.publish_url}",
                    f'  selection   {base}/_ops/redundancy  (PUT {{"mode": "auto|primary|backup"}},'
                    " or `mainevent pipeline force`)",
                ]
                if stack.backup_ingest
                else []
            ),
            "Ctrl-C stops everything.",
            "",
        ]
        print("\n".join(lines), flush=True)
        print(
            json.dumps(
                {
                    "ready": True,
                    "base_url": base,
                    "event": ev,
                    **_edge_info(stack),
                    **scaleout_info(stack),
                }
            ),
            flush=True,
        )

    def listening(stack: Stack) -> None:
        ingest = stack.ingest.publish_url if stack.ingest else None
        print(
            json.dumps(
                {
                    "listening": True,
                    "base_url": stack.base_url,
                    "ingest_url": ingest,
                    "backup_ingest_url": stack.backup_ingest.publish_url
                    if stack.backup_ingest
                    else None,
                    "admin_secret": stack.edge_admin_secret,
                    "telemetry_url": stack.telemetry_url or None,
                    **_edge_info(stack),
                }
            ),
            flush=True,
        )

    def _edge_info(stack: Stack) -> dict[str, Any]:
        if not stack.edge_urls:
            return {}
        control = (
            {
                "control_url": stack.control_url,
                "control_admin_key": stack.control_admin_key,
                "console_logins": stack.console_logins,
            }
            if stack.control_url
            else {}
        )
        return control | {
            "edges": stack.edge_urls,
            "shield_url": stack.shield.url
            if stack.shield
            else next(iter(stack.edge_fleet.shield_urls), None)
            if stack.edge_fleet is not None
            else None,
            "edge_admin_secret": stack.edge_admin_secret,
        }

    admin_secret, token_keys = _edge_env(os.environ)
    control = None
    if not args.no_steering and not args.no_edges:
        from mainevent.control.settings import load_control_settings

        data_dir = settings.origin.data_dir
        try:
            control = load_control_settings(
                file=args.config,
                environ=os.environ,
                overrides={
                    "port": args.control_port,
                    "data_dir": str(data_dir),
                    "database_url": os.environ.get(
                        "MAINEVENT_CONTROL__DATABASE_URL", f"sqlite:///{data_dir}/control.db"
                    ),
                },
            )
        except ConfigError as exc:
            print(f"mainevent up: {exc}", file=sys.stderr)
            return 2

    stack = Stack(
        settings=settings,
        with_feed=not args.no_feed,
        on_ready=ready,
        on_listening=listening,
        edge_names=() if args.no_edges else ("cdn-a", "cdn-b", "cdn-c"),
        edge_port_base=args.edge_port_base,
        edge_admin_secret=admin_secret,
        edge_token_keys=token_keys,
        control=control,
        supervisor_resync_s=getattr(args, "supervisor_resync", None),
        demo_preflight_wait_s=args.demo_preflight_wait,
    )
    print(f"starting event {settings.event.id!r}: waiting for the first segments…", flush=True)
    try:
        # uvloop: the origin and edges answer thousands of held LL-HLS requests at once.
        uvloop.run(stack.run())
    except StackError as exc:
        print(f"mainevent up: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
