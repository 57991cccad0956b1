"""`mainevent simulate SCENARIO` and `mainevent load`: the two rehearsal instruments."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `simulate` and `load` subcommands."""
    p = subparsers.add_parser(
        "simulate",
        help="discrete-event simulation of an event from a scenario file",
        description=(
            "Simulate an event (audience, join curve, CDNs, control plane, faults) with the "
            "platform's own policy objects; writes an HTML/PNG report and summary.json. "
            "SCENARIO is a TOML file or a shipped scenario name."
        ),
    )
    p.add_argument("scenario", metavar="SCENARIO", help="TOML file, or one of: " + _shipped())
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="report directory (default: sim-<scenario>)",
    )
    p.add_argument("--viewers", type=int, default=None, help="override audience.viewers")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_simulate)
    from mainevent.sim.load.cli import register_load

    register_load(subparsers)


def _shipped() -> str:
    from mainevent.sim.scenario import shipped_scenarios

    return ", ".join(shipped_scenarios())


def _simulate(args: argparse.Namespace) -> int:
    from mainevent.sim.engine import simulate
    from mainevent.sim.outputs import write_simulation_report
    from mainevent.sim.scenario import ScenarioError, load_scenario

    try:
        sc = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"mainevent simulate: {exc}", file=sys.stderr)
        return 2
    if args.viewers is not None:
        if args.viewers < 1:
            print("mainevent simulate: --viewers must be at least 1", file=sys.stderr)
            return 2
        sc = sc.with_viewers(args.viewers)

    def progress(t: float, info: dict[str, float]) -> None:
        print(
            f"  T{t:+7.0f} s  viewers {info['viewers']:>12,.0f}  waiting room "
            f"{info['waiting']:>12,.0f}  ({info['wall_s']:.1f} s wall)",
            flush=True,
        )

    print(f"simulating {sc.name}: {sc.audience.viewers:,} viewers", flush=True)
    result = simulate(sc, progress=None if args.json else progress)
    out = args.out or Path(f"sim-{sc.name}")
    report = write_simulation_report(result, out)
    s = result.summary
    if args.json:
        print(json.dumps({"summary": s, "breaking_points": result.breaking_points}, default=str))
    else:
        print(
            f"done in {s['wall_s']:.1f} s wall, peak memory {s['peak_rss_mb']:.0f} MB (RSS), "
            f"{s['events']:,} events ({s['events_per_s']:,.0f}/s), {s['cohorts']} cohorts\n"
            f"  start-up p50 {s['startup_p50_s']:.2f} s  p95 {s['startup_p95_s']:.2f} s  "
            f"rebuffering {s['rebuffer_ratio']:.2%}  origin fetches {s['origin_fetches']:,}\n"
            f"  new starts shed {s['shed_new_starts']:,}  entitlement unavailable "
            f"{s['entitlement_unavailable']:,}  failovers {s['failovers']:,}"
        )
        for tier, info in result.breaking_points.items():
            broke = info.get("broke")
            verdict = (
                f"BROKE at T{broke['at_s']:+.0f} s ({broke['why']}, {broke['viewers']:,} viewers)"
                if broke
                else f"headroom ≈ {info.get('headroom_viewers', 0):,} viewers"
            )
            print(f"  {tier:<22} peak {info['peak_utilisation']:.2f}  {verdict}")
        print(f"report: {report}")
    return 0
