"""Who does what when in a load run: one plan per viewer, drawn from a scenario's audience.

Pure and seeded (no clock): times are event seconds relative to the bell, as in the scenario;
the runner divides them by the time compression. The mix follows the scenario's region, ISP and
device shares and its join curve (page opens → pre-authorisation, presses, the storm, late
joiners, the half-time leave and second storm).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from mainevent.sim.scenario import Scenario

__all__ = ["JoinKind", "ViewerPlan", "plan_viewers"]


class JoinKind(StrEnum):
    PREAUTH = "preauth"
    """Opened the page before the bell: authorised in the waiting room, presses play later."""
    STORM = "storm"
    LATE = "late"


@dataclass(frozen=True, slots=True)
class ViewerPlan:
    index: int
    account: str
    device_id: str
    region: str
    isp: str
    device: str
    kind: JoinKind
    open_s: float
    """When the viewer asks for a grant (page open for PREAUTH, the press otherwise)."""
    press_s: float
    leave_s: float
    """When the viewer stops (the end, or half time for those who leave)."""
    return_s: float | None
    """When a half-time leaver comes back (a new start), or None."""
    end_s: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ViewerPlan:
        return cls(**{**data, "kind": JoinKind(data["kind"])})


def _pick(rng: random.Random, names: list[str], shares: list[float]) -> str:
    return rng.choices(names, weights=shares, k=1)[0]


def plan_viewers(
    sc: Scenario, viewers: int | None = None, seed: int | None = None
) -> list[ViewerPlan]:
    """One plan per viewer (the scenario's audience size unless `viewers` is given)."""
    a = sc.audience
    n = a.viewers if viewers is None else viewers
    rng = random.Random(sc.seed if seed is None else seed)
    regions = [r.name for r in sc.regions]
    isps = [i.name for i in sc.isps]
    devices = [d.name for d in sc.devices]
    rest = max(0.0, 1.0 - a.page_open_share - a.storm_share - a.late_share)
    kinds = [JoinKind.PREAUTH, JoinKind.STORM, JoinKind.LATE]
    weights = [a.page_open_share, a.storm_share, a.late_share + rest]
    plans = []
    for i in range(n):
        kind = rng.choices(kinds, weights=weights, k=1)[0]
        if kind is JoinKind.PREAUTH:
            open_s = rng.uniform(a.page_open_from_s, 0.0)
            press_s = max(open_s, rng.uniform(a.play_from_s, a.storm_width_s))
        elif kind is JoinKind.STORM:
            open_s = press_s = min(sc.end_s - 1, rng.expovariate(1 / a.storm_width_s))
        else:
            open_s = press_s = rng.uniform(0.0, min(a.half_time_s, sc.end_s - 1))
        leave_s, return_s = sc.end_s, None
        if press_s < a.half_time_s < sc.end_s and rng.random() < a.half_time_leave_share:
            leave_s = a.half_time_s
            back = (
                a.half_time_s + a.half_time_break_s + rng.expovariate(1 / a.half_time_storm_width_s)
            )
            return_s = back if back < sc.end_s - 1 else None
        plans.append(
            ViewerPlan(
                index=i,
                account=f"acc{i}",
                device_id=f"dev{i}",
                region=_pick(rng, regions, [r.share for r in sc.regions]),
                isp=_pick(rng, isps, [x.share for x in sc.isps]),
                device=_pick(rng, devices, [d.share for d in sc.devices]),
                kind=kind,
                open_s=open_s,
                press_s=press_s,
                leave_s=leave_s,
                return_s=return_s,
                end_s=sc.end_s,
            )
        )
    return plans
