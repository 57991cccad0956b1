"""Calibration inputs for `mainevent simulate`, measured on the machine a real run uses.

The simulator's network and service-time figures (region RTT, edge service time, control-plane
CPU) are models; on a given machine the real figures differ, most of all on a shared one where
every process waits for a core. Real calibration measures them during the real run and feeds
them to the model (`LoadResult.calibration` of `mainevent load`):

- each started player's own start-up (play request to the playhead moving, authorisation
  excluded, as the player saw it, its event loop included) per step of the simulator's start-up
  sequence (`delivery.request_latency_ms`): the media part of a simulated start is then
  measured, not modelled;
- `GET /healthz` to the control plane every second of the scenario (`control.base_latency_ms`);
- the control plane's own mean time for a new start over the scenario
  (`mainevent_control_request_seconds{priority="new_start"}`: arrival to end of response, its
  entitlement lookup included), as `control.new_start_ms`, with `entitlement_latency_ms` 0
  (the lookup is in the measured time: `mainevent up`'s entitlement store is in process).

What the simulator still computes: the join curve and the bell, the control plane's queueing,
admission and shedding (the production `AdmissionController`) and the retries, the caches'
collapsing and origin fetches, playback and stalls. `docs/simulator.md` has the model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from mainevent.sim.scenario import Scenario

__all__ = ["calibrated"]


def calibrated(
    sc: Scenario,
    edge_ms: Iterable[float],
    control_ms: Iterable[float] = (),
    new_start_ms: float | None = None,
) -> Scenario:
    """The scenario with measured start-up steps, control-plane probes and (when given) the
    control plane's measured time per new start as its inputs."""
    control = replace(sc.control, base_latency_ms=tuple(sorted(control_ms)))
    if new_start_ms is not None:
        control = replace(control, new_start_ms=new_start_ms, entitlement_latency_ms=0.0)
    return replace(
        sc,
        delivery=replace(sc.delivery, request_latency_ms=tuple(sorted(edge_ms))),
        control=control,
    )
