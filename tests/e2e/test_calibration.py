"""Calibration: the same scenario run by the load generator against the real stack and by the
simulator, with the real run's measured service times as the simulator's calibration inputs.

`mainevent up` (real feed, ffmpeg, origin, shield, three edges) is started by the test, the
load generator drives 200 real headless players (the `calibration-500` curve) through a real
control plane. Its calibration inputs (`LoadResult.calibration`): each player's start-up
service time as the player saw it (play request to the playhead moving, authorisation excluded),
per step of the simulator's start-up sequence, and `GET /healthz` on the control plane every
second. The simulator runs the same scenario with those samples as its request latencies and
control-plane loop lag (`sim.calibrate.calibrated`). The media part of a start is thus an input
here, not a prediction; what the comparison tests is the rest of the model: the join curve and
the bell, the control plane's admission and shedding (the production `AdmissionController`) and
the retries, the caches' collapsing and the origin fetches, playback and stalls. Start-up p50/p95, rebuffering ratio and origin fetches must
agree within 15 % (rebuffering, near zero on a quiet machine, within 0.5 percentage points).
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
    # One sample per started session; the control-plane probe runs every second of the 40 s
    # scenario.
    assert len(cal["startup_step_ms"]) >= 0.95 * PLAYERS, len(cal["startup_step_ms"])
    assert len(cal["control_ms"]) >= 10, cal["control_ms"]
    assert len(cal["new_start_ms"]) == 1, cal.get("new_start_ms")
    sim = simulate(
        calibrated(sc, cal["startup_step_ms"], cal["control_ms"], cal["new_start_ms"][0])
    ).summary
    rows = {
        k: (real[k], sim[k])
        for k in ("startup_p50_s", "startup_p95_s", "rebuffer_ratio", "origin_fetches")
    }
    print("calibration (real, simulated):", rows)
    print("auth p50/p95 s (real):", real["auth_p50_s"], real["auth_p95_s"])
    print(
        "origin fetches by type (real, simulated):",
        real["origin_fetches_by_type"],
        sim["origin_fetches_by_type"],
    )
    print(
        "probes p50/p95 ms: edge",
        real["probe_edge_p50_ms"],
        real["probe_edge_p95_ms"],
        "control",
        real["probe_control_p50_ms"],
        real["probe_control_p95_ms"],
        "start-up steps",
        real["probe_startup_step_p50_ms"],
        real["probe_startup_step_p95_ms"],
    )
    assert real["sessions_started"] >= 0.95 * real["sessions"], real
    assert _close(real["startup_p50_s"], sim["startup_p50_s"]), rows
    assert _close(real["startup_p95_s"], sim["startup_p95_s"]), rows
    assert abs(real["rebuffer_ratio"] - sim["rebuffer_ratio"]) <= 0.005, rows
    assert _close(real["origin_fetches"], sim["origin_fetches"]), rows
