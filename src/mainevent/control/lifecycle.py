"""Sans-IO event lifecycle: draft → scheduled → rehearsal → live ⇄ paused → ended → archived."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

__all__ = ["TRANSITIONS", "EventStatus", "IllegalTransition", "check_transition"]


class EventStatus(StrEnum):
    """Where an event is in its life."""

    DRAFT = "draft"
    SCHEDULED = "scheduled"
    REHEARSAL = "rehearsal"
    LIVE = "live"
    PAUSED = "paused"
    ENDED = "ended"
    ARCHIVED = "archived"


S = EventStatus
TRANSITIONS: dict[EventStatus, frozenset[EventStatus]] = {
    S.DRAFT: frozenset({S.SCHEDULED}),
    S.SCHEDULED: frozenset({S.REHEARSAL}),
    S.REHEARSAL: frozenset({S.LIVE}),
    S.LIVE: frozenset({S.PAUSED, S.ENDED}),
    S.PAUSED: frozenset({S.LIVE, S.ENDED}),
    S.ENDED: frozenset({S.ARCHIVED}),
    S.ARCHIVED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class IllegalTransition:
    """Why a transition is refused: ``reason`` is machine-readable, ``message`` is for people."""

    reason: str
    message: str
    allowed: tuple[EventStatus, ...]


def check_transition(
    current: EventStatus,
    target: EventStatus,
    *,
    starts_at: datetime | None,
    ends_at: datetime | None,
) -> IllegalTransition | None:
    """None if ``current → target`` is legal for an event with this schedule, else why not."""
    allowed = tuple(sorted(TRANSITIONS[current], key=list(EventStatus).index))
    if target == current:
        return IllegalTransition("already_in_state", f"event is already {current}", allowed)
    if target not in TRANSITIONS[current]:
        options = ", ".join(allowed) or "none (archived events are final)"
        return IllegalTransition(
            "illegal_transition",
            f"cannot go from {current} to {target}; allowed from {current}: {options}",
            allowed,
        )
    if target is S.SCHEDULED and (starts_at is None or ends_at is None):
        return IllegalTransition(
            "schedule_missing", "set starts_at and ends_at before scheduling the event", allowed
        )
    return None
