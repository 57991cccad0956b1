"""Calibration: the same scenario run by the load generator against the real stack and by the
simulator, with the real run's measured request latencies as the simulator's calibration inputs.

`mainevent up` (real feed, ffmpeg, origin, shield, three edges) is started by the test, the
load generator drives 200 real headless players (the `calibration-500` curve) through a real
control plane and times `GET /healthz` on the edges and the control plane every second
(`LoadResult.calibration`); the simulator runs the same scenario with those samples as its
request latencies (`sim.calibrate.calibrated`). Start-up p50/p95, rebuffering ratio and origin
fetches must agree within 15 % (rebuffering, near zero on a quiet machine, within 0.5
percentage points).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mainevent.sim.calibrate import calibrated
from mainevent.sim.engine import simulate
from mainevent.sim.load.run import LoadOptions, StackTargets, run_load
from mainevent.sim.scenario import load_scenario
from mainevent.testing.stack import start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.exclusive]

TOLERANCE = 0.15
PLAYERS = 200


def _close(real: float, sim: float) -> bool:
    return abs(real - sim) <= TOLERANCE * max(abs(real), 1e-9)


@pytest.mark.xfail(
    strict=True,
    reason="issue 14 open: real start-up (p50 3.1 s on a quiet machine, 200 players) is far "
    "above five probed round trips because the players' own Python processes lag; rebuffering "
    "(24 %) comes from the same starvation, which the simulator does not model (see "
    "docs/simulator.md, Calibration)",
)
@pytest.mark.timeout(240)
def test_load_generator_and_simulator_agree(tmp_path: Path) -> None:
    """Start-up p50/p95, rebuffering and origin fetches of real players match the simulation."""
    sc = load_scenario("calibration-500").with_viewers(PLAYERS)
    stack = start_stack(tmp_path / "stack")
    try:
        stack.wait_window(4, timeout=60)
        targets = StackTargets(stack.event, stack.edges, stack.edge_admin_secret, stack.shield_url)
        opts = LoadOptions(sc, tmp_path / "load", processes=2, refresh_every_s=15.0)
        result = asyncio.run(run_load(opts, targets, print))
    finally:
        stack.stop()
    real = result.summary
    cal = result.calibration
    assert len(cal["edge_ms"]) >= 20, cal
    assert len(cal["control_ms"]) >= 10, cal
    sim = simulate(calibrated(sc, cal["edge_ms"], cal["control_ms"])).summary
    rows = {
        k: (real[k], sim[k])
        for k in ("startup_p50_s", "startup_p95_s", "rebuffer_ratio", "origin_fetches")
    }
    print("calibration (real, simulated):", rows)
    print(
        "probes p50/p95 ms: edge",
        real["probe_edge_p50_ms"],
        real["probe_edge_p95_ms"],
        "control",
        real["probe_control_p50_ms"],
        real["probe_control_p95_ms"],
    )
    assert real["sessions_started"] >= 0.95 * real["sessions"], real
    assert _close(real["startup_p50_s"], sim["startup_p50_s"]), rows
    assert _close(real["startup_p95_s"], sim["startup_p95_s"]), rows
    assert abs(real["rebuffer_ratio"] - sim["rebuffer_ratio"]) <= 0.005, rows
    assert _close(real["origin_fetches"], sim["origin_fetches"]), rows
