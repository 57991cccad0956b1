"""Sans-IO alert rules over closed windows: a rule fires when its metric, over its last
``for_s`` seconds of one series, crosses the threshold, and resolves when it no longer does.

``AlertEngine.handle(windows, now) -> list[AlertEvent]``, fed the 1 s windows the aggregator
closes; the same rules run in the collector, in tests and in the simulator.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from mainevent.control.telemetry.aggregate import ClosedWindow
from mainevent.control.telemetry.model import (
    DIMENSIONS,
    AlertEvent,
    AlertState,
    QoeAggregate,
    QoePoint,
)

__all__ = ["ALERT_METRICS", "AlertEngine", "AlertRule", "Firing"]

ALERT_METRICS = frozenset(QoePoint.__dataclass_fields__) - {"start", "step_s", "errors_by_status"}


@dataclass(frozen=True, slots=True)
class AlertRule:
    """``metric`` of each series grouped ``by`` (optionally only where dims match) compared
    with ``threshold`` over the last ``for_s`` seconds."""

    name: str
    metric: str
    threshold: float
    above: bool = True
    for_s: int = 10
    by: tuple[str, ...] = ("event", "region", "cdn")
    where: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.metric not in ALERT_METRICS:
            raise ValueError(f"alert {self.name!r}: unknown metric {self.metric!r}")
        bad = [d for d in (*self.by, *(k for k, _ in self.where)) if d not in DIMENSIONS]
        if bad:
            raise ValueError(f"alert {self.name!r}: unknown dimension {bad[0]!r}")
        if self.for_s < 1:
            raise ValueError(f"alert {self.name!r}: for_s must be at least 1")


@dataclass(frozen=True, slots=True)
class Firing:
    """An alert that is firing now."""

    rule: str
    labels: dict[str, str]
    since: float
    value: float | None


@dataclass(slots=True)
class _Group:
    seconds: deque[tuple[int, QoeAggregate]] = field(default_factory=deque)
    firing_since: float | None = None
    value: float | None = None


class AlertEngine:
    """State per rule and series; bounded by the number of series seen in ``for_s``."""

    def __init__(self, rules: Sequence[AlertRule]) -> None:
        self.rules = tuple(rules)
        self._groups: dict[tuple[str, tuple[str, ...]], _Group] = {}

    def handle(self, windows: Sequence[ClosedWindow], now: float) -> list[AlertEvent]:
        """Fold the windows closed at ``now`` in and return alerts that began or ended."""
        events: list[AlertEvent] = []
        second = int(now)
        for rule in self.rules:
            per: dict[tuple[str, ...], QoeAggregate] = {}
            for w in windows:
                if any(getattr(w.dims, k) != v for k, v in rule.where):
                    continue
                key = w.dims.project(rule.by)
                acc = per.get(key)
                if acc is None:
                    per[key] = acc = QoeAggregate()
                acc.merge(w.agg)
            for key, acc in per.items():
                g = self._groups.setdefault((rule.name, key), _Group())
                g.seconds.append((second, acc))
            for (name, key), g in list(self._groups.items()):
                if name != rule.name:
                    continue
                while g.seconds and g.seconds[0][0] <= second - rule.for_s:
                    g.seconds.popleft()
                total = QoeAggregate()
                for _, a in g.seconds:
                    total.merge(a)
                value = getattr(total.figures(second - rule.for_s, rule.for_s), rule.metric)
                hit = value is not None and (
                    value > rule.threshold if rule.above else value < rule.threshold
                )
                labels = dict(zip(rule.by, key, strict=True))
                g.value = value
                if hit and g.firing_since is None:
                    g.firing_since = now
                    events.append(AlertEvent(rule.name, labels, AlertState.FIRING, now, value))
                elif not hit and g.firing_since is not None:
                    g.firing_since = None
                    events.append(AlertEvent(rule.name, labels, AlertState.RESOLVED, now, value))
                if not g.seconds and g.firing_since is None:
                    del self._groups[(name, key)]
        return events

    def firing(self) -> list[Firing]:
        """Alerts firing now."""
        out = []
        for (name, key), g in self._groups.items():
            if g.firing_since is None:
                continue
            rule = next(r for r in self.rules if r.name == name)
            out.append(Firing(name, dict(zip(rule.by, key, strict=True)), g.firing_since, g.value))
        return out
