"""Sans-IO alert rules. QoE rules over closed windows: a rule fires when its metric, over its last
``for_s`` seconds of one series, crosses the threshold, and resolves when it no longer does.

``AlertEngine.handle(windows, now) -> list[AlertEvent]``, fed the 1 s windows the aggregator
closes; the same rules run in the collector, in tests and in the simulator.

Health rules (:class:`HealthRule`: manifest stale, feed lost, authorisation shedding...) run over
the platform's scraped ``/metrics``: ``HealthAlertEngine.handle(samples, up, now)`` after each
scrape round. Both produce the same :class:`AlertEvent` values (start and end).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mainevent.control.telemetry.aggregate import ClosedWindow
from mainevent.control.telemetry.model import (
    DIMENSIONS,
    AlertEvent,
    AlertState,
    QoeAggregate,
    QoePoint,
)

__all__ = ["ALERT_METRICS", "AlertEngine", "AlertRule", "Firing", "HealthAlertEngine", "HealthRule"]

ALERT_METRICS = frozenset(QoePoint.__dataclass_fields__) - {
    "start",
    "step_s",
    "errors_by_status",
    "error_rate_by_status",
}


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


# --- platform health ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HealthRule:
    """A rule over scraped platform health: every sample named ``metric`` (each label set of
    each scrape target is one series) compared with ``threshold``, either as its value or, with
    ``rate``, as its per-second increase (a counter); it fires once the condition held for
    ``for_s`` seconds and resolves when it stops holding. ``metric="up"`` is 1 while a target's
    ``/metrics`` answers and 0 while it does not (as in Prometheus)."""

    name: str
    metric: str
    threshold: float
    above: bool = True
    for_s: float = 2.0
    rate: bool = False
    target: str | None = None
    """Only this scrape target (None: every target)."""

    def __post_init__(self) -> None:
        if not self.metric or "{" in self.metric:
            raise ValueError(f"health alert {self.name!r}: metric must be a bare sample name")
        if self.for_s < 0:
            raise ValueError(f"health alert {self.name!r}: for_s must not be negative")


@dataclass(slots=True)
class _HealthSeries:
    labels: dict[str, str]
    prev: tuple[float, float] | None = None
    """(value, time) of the previous scrape, for ``rate``."""
    holding_since: float | None = None
    firing: bool = False
    value: float | None = None
    seen_at: float = 0.0


def _split_sample(key: str) -> tuple[str, dict[str, str]]:
    """``name{a="x",b="y"}`` (as :class:`HealthScraper` keys samples) → name and labels."""
    name, brace, rest = key.partition("{")
    labels: dict[str, str] = {}
    if brace:
        for part in rest.rstrip("}").split('",'):
            k, eq, v = part.partition("=")
            if eq:
                labels[k.strip()] = v.strip().strip('"')
    return name, labels


class HealthAlertEngine:
    """Sans-IO: ``handle(samples, up, now)`` after each scrape round → alerts that began or
    ended. Series that disappear from the scrape (a restarted process) resolve."""

    def __init__(self, rules: Sequence[HealthRule]) -> None:
        self.rules = tuple(rules)
        self._series: dict[tuple[str, str, str], _HealthSeries] = {}

    def handle(
        self,
        samples: Mapping[str, Mapping[str, float]],
        up: Mapping[str, bool],
        now: float,
    ) -> list[AlertEvent]:
        """Fold one scrape round (target → sample key → value; target → answered) in."""
        events: list[AlertEvent] = []
        seen: set[tuple[str, str, str]] = set()
        for rule in self.rules:
            for target in sorted(set(up) | set(samples)):
                if rule.target is not None and target != rule.target:
                    continue
                if rule.metric == "up":
                    observed = {"up": 1.0 if up.get(target) else 0.0}
                elif not up.get(target, False):
                    continue  # a target that did not answer says nothing of its samples
                else:
                    observed = {
                        k: v
                        for k, v in samples.get(target, {}).items()
                        if k == rule.metric or k.startswith(rule.metric + "{")
                    }
                for key, value in observed.items():
                    sid = (rule.name, target, key)
                    seen.add(sid)
                    s = self._series.get(sid)
                    if s is None:
                        s = self._series[sid] = _HealthSeries(
                            {"target": target, **_split_sample(key)[1]}
                        )
                    s.seen_at = now
                    metric = value
                    if rule.rate:
                        prev, s.prev = s.prev, (value, now)
                        if prev is None or now <= prev[1] or value < prev[0]:
                            continue  # first sample, or a counter reset
                        metric = (value - prev[0]) / (now - prev[1])
                    s.value = metric
                    hit = metric > rule.threshold if rule.above else metric < rule.threshold
                    events.extend(self._step(rule, s, hit, now))
        for sid in [k for k in self._series if k not in seen]:
            s = self._series.pop(sid)
            if s.firing:
                events.append(AlertEvent(sid[0], s.labels, AlertState.RESOLVED, now, None))
        return events

    def _step(self, rule: HealthRule, s: _HealthSeries, hit: bool, now: float) -> list[AlertEvent]:
        if not hit:
            s.holding_since = None
            if s.firing:
                s.firing = False
                return [AlertEvent(rule.name, s.labels, AlertState.RESOLVED, now, s.value)]
            return []
        if s.holding_since is None:
            s.holding_since = now
        if not s.firing and now - s.holding_since >= rule.for_s:
            s.firing = True
            return [AlertEvent(rule.name, s.labels, AlertState.FIRING, now, s.value)]
        return []

    def firing(self) -> list[Firing]:
        """Health alerts firing now (``since``: when the condition began to hold)."""
        return [
            Firing(name, s.labels, s.holding_since or s.seen_at, s.value)
            for (name, _, _), s in self._series.items()
            if s.firing
        ]
