"""`mainevent edge …`: run a shield/edge, drive fault drills, print the nginx shield config."""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import json
import logging
import sys
from pathlib import Path

import httpx

from mainevent.media.edge.faults import Fault, FaultError
from mainevent.media.edge.health import UpstreamHealth
from mainevent.media.edge.server import ADMIN_HEADER, EdgeConfig, EdgeServer


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("edge", help="delivery tier: run a shield/edge cache, inject faults")
    esub = p.add_subparsers(dest="edge_command", metavar="ACTION", required=True)

    s = esub.add_parser("serve", help="run one shield or edge (uvloop) in front of --upstream")
    s.add_argument("--name", required=True, help="edge name, e.g. shield or cdn-a")
    s.add_argument(
        "--upstream",
        required=True,
        action="append",
        help="origin or shield base URL; repeat it for a shield in front of several origins "
        "(tried in order, the next one when a fetch fails)",
    )
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--region", action="append", default=[], help="region served (repeatable)")
    s.add_argument("--max-mb", type=int, default=256, help="cache byte budget in MiB")
    s.add_argument("--stale-if-error", type=float, default=60.0, metavar="S")
    s.add_argument(
        "--upstream-backoff",
        type=float,
        default=1.0,
        metavar="S",
        help="after an upstream failure, serve stale copies without asking it for S seconds "
        "(doubled by each further failure; one probe per interval)",
    )
    s.add_argument(
        "--upstream-max-backoff",
        type=float,
        default=4.0,
        metavar="S",
        help="longest such interval, i.e. how late a returning upstream may be noticed",
    )
    s.add_argument("--admin-secret", help="shared secret for the fault admin endpoint")
    s.add_argument(
        "--forwarded-from",
        action="append",
        default=[],
        metavar="CIDR",
        help="a balancer in front of this edge: from it, access records take the viewer's "
        "address from the last X-Forwarded-For entry (repeatable)",
    )
    s.add_argument(
        "--token-key",
        action="append",
        default=[],
        metavar="KID:HEX",
        help="playback token key; when given, /live/ paths need a valid /t/<token>/ prefix",
    )
    s.add_argument(
        "--telemetry",
        metavar="URL",
        help="telemetry collector base URL: access records are batched to its /v1/access",
    )
    s.add_argument("--log-level", default="info")
    s.set_defaults(func=_serve)

    f = esub.add_parser("fault", help="set, show or clear a fault drill on one edge")
    f.add_argument("--edge", required=True, help="edge base URL (http://host:port)")
    f.add_argument("--secret", required=True, help=f"admin secret (sent as {ADMIN_HEADER})")
    f.add_argument("--errors", type=float, default=0.0, metavar="RATE", help="error rate 0..1")
    f.add_argument("--status", type=int, default=503, help="status of injected errors")
    f.add_argument("--latency-ms", type=int, default=0)
    f.add_argument("--throughput-kbps", type=int, default=0)
    f.add_argument("--blackhole", action="store_true")
    f.add_argument("--stale", action="store_true", help="serve only cached (stale) objects")
    f.add_argument("--region", help="only requests with X-Client-Region: REGION")
    f.add_argument("--clear", action="store_true", help="remove the fault")
    f.add_argument("--show", action="store_true", help="print the current fault")
    f.set_defaults(func=_fault)

    n = esub.add_parser("nginx-config", help="print a Debian nginx shield config for our origin")
    n.add_argument("--upstream", required=True, metavar="HOST:PORT")
    n.add_argument("--port", type=int, required=True, help="port nginx listens on")
    n.add_argument("--workdir", type=Path, required=True, help="cache/temp/log directory")
    n.set_defaults(func=_nginx_config)


def _serve(args: argparse.Namespace) -> int:
    import uvloop

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    keys: dict[str, str] = {}
    for item in args.token_key:
        kid, sep, hexkey = item.partition(":")
        if not sep:
            print(f"mainevent edge serve: --token-key {item!r} is not KID:HEX", file=sys.stderr)
            return 2
        keys[kid] = hexkey
    for cidr in args.forwarded_from:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            print(f"mainevent edge serve: --forwarded-from {cidr!r} is not a CIDR", file=sys.stderr)
            return 2
    config = EdgeConfig(
        name=args.name,
        upstream=args.upstream[0],
        upstreams=tuple(args.upstream[1:]),
        regions=tuple(args.region),
        host=args.host,
        port=args.port,
        max_bytes=args.max_mb * 1024 * 1024,
        stale_if_error_s=args.stale_if_error,
        upstream_backoff_s=args.upstream_backoff,
        upstream_max_backoff_s=args.upstream_max_backoff,
        admin_secret=args.admin_secret,
        token_keys=keys or None,
        forwarded_from=tuple(args.forwarded_from),
    )

    try:
        UpstreamHealth(config.upstream_backoff_s, config.upstream_max_backoff_s)
    except ValueError as exc:
        print(f"mainevent edge serve: {exc}", file=sys.stderr)
        return 2

    async def main() -> None:
        from mainevent.common.telemetry import HttpTelemetrySink

        sink = HttpTelemetrySink(args.telemetry) if args.telemetry else None
        edge = EdgeServer(config, sink=sink)
        await edge.start()
        # Thousands of held requests make full collections pause the loop for 100s of ms
        # (MEASUREMENTS.md): keep start-up objects out of the GC's sight.
        gc.freeze()
        print(json.dumps({"edge": edge.name, "url": edge.url}), flush=True)
        if sink is None:
            await edge.serve_forever()
            return
        async with asyncio.TaskGroup() as tg:
            tg.create_task(sink.serve())
            await edge.serve_forever()

    try:
        uvloop.run(main())
    except KeyboardInterrupt:
        pass
    return 0


def _fault(args: argparse.Namespace) -> int:
    url = args.edge.rstrip("/") + "/_edge/fault"
    headers = {ADMIN_HEADER: args.secret}
    try:
        if args.clear:
            r = httpx.delete(url, headers=headers, timeout=5)
        elif args.show:
            r = httpx.get(url, headers=headers, timeout=5)
        else:
            fault = Fault(
                error_rate=args.errors,
                error_status=args.status,
                latency_ms=args.latency_ms,
                throughput_kbps=args.throughput_kbps,
                blackhole=args.blackhole,
                serve_stale=args.stale,
                region=args.region,
            )
            r = httpx.post(url, headers=headers, json=fault.to_json(), timeout=5)
    except FaultError as exc:
        print(f"mainevent edge fault: {exc}", file=sys.stderr)
        return 2
    except httpx.HTTPError as exc:
        print(f"mainevent edge fault: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    if r.status_code != 200:
        print(f"mainevent edge fault: {r.status_code} {r.text.strip()}", file=sys.stderr)
        return 1
    print(r.text.strip())
    return 0


def _nginx_config(args: argparse.Namespace) -> int:
    from mainevent.media.edge.nginx import NginxShield, nginx_shield_config

    host, _, port = args.upstream.rpartition(":")
    print(nginx_shield_config(NginxShield(args.port, host or "127.0.0.1", int(port), args.workdir)))
    return 0
