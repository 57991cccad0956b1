"""`mainevent load`: arguments, and starting the stack when asked to (the work is in `run`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path


def register_load(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `load` subcommand."""
    p = subparsers.add_parser(
        "load",
        help="drive real headless players against a running stack through the playback API",
        description=(
            "Load generator: N real headless players (several processes, asyncio) follow a "
            "scenario's join curve and mix, authorise through a control plane it starts, play "
            "through the stack's edges, refresh tokens; scheduled CDN and feed faults. Writes "
            "report.html (plots), summary.json and viewers.json."
        ),
    )
    p.add_argument("scenario", metavar="SCENARIO", help="scenario TOML file or shipped name")
    p.add_argument(
        "--players", type=int, default=None, help="players (default: the scenario's audience)"
    )
    p.add_argument(
        "--compress",
        type=float,
        default=1.0,
        help="event seconds per real second for the schedule (e.g. 60: T-30 min is 30 s)",
    )
    p.add_argument("--processes", type=int, default=2, help="player processes (default 2)")
    p.add_argument("--out", type=Path, default=Path("load-report"), metavar="DIR")
    p.add_argument(
        "--edge",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="edge of a running `mainevent up` (repeat); without it the stack is started",
    )
    p.add_argument(
        "--shield", metavar="URL", help="shield URL of the running stack (origin fetches)"
    )
    p.add_argument("--edge-secret", metavar="S", help="edge admin secret (fault drills)")
    p.add_argument("--event", default="demo", help="event id of the running stack (default demo)")
    p.add_argument(
        "--refresh-every",
        type=float,
        default=20.0,
        metavar="S",
        help="real seconds between token refreshes of a playing session",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON at the end")
    p.set_defaults(func=_load)


def _load(args: argparse.Namespace) -> int:
    from mainevent.sim.load.run import LoadOptions, StackTargets, run_load
    from mainevent.sim.scenario import FaultKind, ScenarioError, load_scenario

    try:
        sc = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"mainevent load: {exc}", file=sys.stderr)
        return 2
    if args.players is not None and args.players < 1:
        print("mainevent load: --players must be at least 1", file=sys.stderr)
        return 2
    if args.compress <= 0 or args.processes < 1 or args.refresh_every <= 0:
        print(
            "mainevent load: --compress and --refresh-every must be positive, --processes ≥ 1",
            file=sys.stderr,
        )
        return 2
    edges: dict[str, str] = {}
    for item in args.edge:
        name, sep, url = item.partition("=")
        if not sep or not url.startswith("http"):
            print(
                f"mainevent load: --edge {item!r}: expected NAME=http://HOST:PORT", file=sys.stderr
            )
            return 2
        edges[name] = url.rstrip("/")
    opts = LoadOptions(
        sc, args.out, args.players, args.compress, args.processes, args.refresh_every
    )
    stack = feed = None
    try:
        if edges:
            targets = StackTargets(args.event, edges, args.edge_secret, args.shield)
        else:
            from mainevent.testing.feeds import Feed
            from mainevent.testing.stack import start_stack

            owns_feed = any(
                f.kind in (FaultKind.ENCODER_FAILURE, FaultKind.MANIFEST_STALL) for f in sc.faults
            )
            print("starting mainevent up …", flush=True)
            stack = start_stack(
                args.out / "stack",
                extra_args=("--no-feed",) if owns_feed else (),
                wait_ready=not owns_feed,
            )
            if owns_feed:
                feed = Feed(stack.ingest_url)
                feed.start()
                stack.wait_ready(60)
            stack.wait_window(4, timeout=60)
            targets = StackTargets(
                stack.event,
                stack.edges,
                stack.edge_admin_secret,
                stack.shield_url,
                feed.ctl if feed else None,
            )
        result = asyncio.run(run_load(opts, targets, lambda m: print(m, flush=True)))
    except RuntimeError as exc:
        print(f"mainevent load: {exc}", file=sys.stderr)
        return 1
    finally:
        if feed is not None:
            feed.kill()
        if stack is not None:
            stack.stop()
    s = result.summary
    if args.json:
        print(json.dumps(s, default=str))
    print(
        f"{s['sessions_started']}/{s['sessions']} sessions started; start-up p50 "
        f"{s['startup_p50_s']:.2f} s p95 {s['startup_p95_s']:.2f} s; rebuffering "
        f"{s['rebuffer_ratio']:.2%}; origin fetches {s['origin_fetches']:.0f}; auth p95 "
        f"{s['auth_p95_s']:.3f} s; shed {s['shed']}\nreport: {result.report}"
    )
    if s["generator_saturated"]:
        print(
            f"warning: the load generator itself ran out of CPU (its processes' CPU p95 "
            f"{s['generator_cpu_p95']:.0%}, event-loop lag p95 {s['generator_lag_p95_ms']:.0f} ms):"
            " the figures above measure this machine's players as much as the platform; use "
            "fewer players, more machines, or more --processes if cores are free",
            file=sys.stderr,
        )
    return 0
