"""Calibration inputs for `mainevent simulate`, measured on the machine a real run uses.

The simulator's network and service-time figures (region RTT, edge service time, control-plane
CPU) are models; on a given machine the real figures differ, most of all on a shared one where
every process waits for a core. Real calibration measures them during the real run and feeds
them to the model: `mainevent load` times a trivial request (`GET /healthz`) to each edge and
to the control plane every second of the scenario, on the same machine and at the same
niceness as its players (`LoadResult.calibration`), and :func:`calibrated` puts those samples
into the scenario (`delivery.request_latency_ms`, `control.base_latency_ms`). What the simulator then
computes is unchanged: how many sequential requests a start needs, the control plane's queueing
and shedding, cache waits, transfers, stalls.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from mainevent.sim.scenario import Scenario

__all__ = ["calibrated"]


def calibrated(
    sc: Scenario, edge_ms: Iterable[float], control_ms: Iterable[float] = ()
) -> Scenario:
    """The scenario with measured request latencies as its calibration inputs."""
    return replace(
        sc,
        delivery=replace(sc.delivery, request_latency_ms=tuple(sorted(edge_ms))),
        control=replace(sc.control, base_latency_ms=tuple(sorted(control_ms))),
    )
