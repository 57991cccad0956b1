"""Calibration: the same 500-viewer scenario run by the load generator and by the simulator.

`mainevent up` (real feed, ffmpeg, origin, shield, three edges) is started by the test, the
load generator drives 500 real headless players through a real control plane, and the
simulator runs the same scenario file; start-up p50/p95, rebuffering ratio and origin fetches
must agree within 15 % (rebuffering, near zero on both sides, within 0.5 percentage points).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mainevent.sim.engine import simulate
from mainevent.sim.load.run import LoadOptions, StackTargets, run_load
from mainevent.sim.scenario import load_scenario
from mainevent.testing.stack import start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TOLERANCE = 0.15


def _close(real: float, sim: float) -> bool:
    return abs(real - sim) <= TOLERANCE * max(abs(real), 1e-9)


@pytest.mark.xfail(
    strict=True,
    reason="issue 14 open: the simulator's start-up model omits the playlist reload and whole-"
    "segment waits of a real player (simulated p50 0.015 s vs 2.1 s measured), so the two runs "
    "do not agree within 15 % yet",
)
@pytest.mark.timeout(240)
def test_load_generator_and_simulator_agree(tmp_path: Path) -> None:
    """Start-up p50/p95, rebuffering and origin fetches of 500 real players match the simulation."""
    sc = load_scenario("calibration-500")
    stack = start_stack(tmp_path / "stack")
    try:
        stack.wait_window(4, timeout=60)
        targets = StackTargets(stack.event, stack.edges, stack.edge_admin_secret, stack.shield_url)
        opts = LoadOptions(sc, tmp_path / "load", processes=2, refresh_every_s=15.0)
        real = asyncio.run(run_load(opts, targets, print)).summary
    finally:
        stack.stop()
    sim = simulate(sc).summary
    rows = {
        k: (real[k], sim[k])
        for k in ("startup_p50_s", "startup_p95_s", "rebuffer_ratio", "origin_fetches")
    }
    print("calibration (real, simulated):", rows)
    assert real["sessions_started"] >= 0.95 * real["sessions"], real
    assert _close(real["startup_p50_s"], sim["startup_p50_s"]), rows
    assert _close(real["startup_p95_s"], sim["startup_p95_s"]), rows
    assert abs(real["rebuffer_ratio"] - sim["rebuffer_ratio"]) <= 0.005, rows
    assert _close(real["origin_fetches"], sim["origin_fetches"]), rows
