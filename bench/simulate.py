"""Simulator cost: wall time, events/s and peak memory of `mainevent simulate`, 1 M → 65 M viewers.

Runs the shipped 20 M fight-night scenario (its capacities, faults and join curve) at several
audience sizes, each in its own process so its peak RSS is its own, and prints each run's wall
time as a ratio to the 1 M run of the same invocation (the reference), events per second, and
peak memory. Viewers are cohorts, so cost grows with cohorts × ticks (fixed) plus the
representative control-plane worker's requests (∝ viewers / workers).

Run: `nice -n -10 .venv/bin/python bench/simulate.py [--sizes 1e6,5e6,20e6,65e6]`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def one(viewers: int, scenario: str) -> dict[str, float]:
    from mainevent.sim.engine import simulate
    from mainevent.sim.scenario import load_scenario

    s = simulate(load_scenario(scenario).with_viewers(viewers)).summary
    return {
        k: s[k]
        for k in (
            "wall_s",
            "events",
            "events_per_s",
            "peak_rss_mb",
            "cohorts",
            "startup_p95_s",
            "rebuffer_ratio",
        )
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", default="1e6,5e6,20e6,65e6")
    p.add_argument("--scenario", default="fight-night-20m")
    p.add_argument("--one", type=float, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(int(args.one), args.scenario)))
        return
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"bench/simulate.py: scenario {args.scenario}; load average {' '.join(load)}")
    print(
        f"{'viewers':>12} {'wall s':>8} {'× 1 M':>7} {'events':>11} {'events/s':>10} "
        f"{'peak RSS MB':>11}"
    )
    ref = None
    for size in (int(float(x)) for x in args.sizes.split(",")):
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(size), "--scenario", args.scenario],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        ref = ref or r["wall_s"]
        print(
            f"{size:>12,} {r['wall_s']:>8.1f} {r['wall_s'] / ref:>7.2f} {r['events']:>11,} "
            f"{r['events_per_s']:>10,.0f} {r['peak_rss_mb']:>11.0f}",
            flush=True,
        )
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load average after: {' '.join(load)} (2 shared cores)")


if __name__ == "__main__":
    main()
