"""Per-segment selection between redundant pipelines (sans-IO).

Two (or more) pipelines encode the same venue feed into epoch-locked segments: segment `n` of
any pipeline covers the same capture interval, so for every rendition and every `n` the origin
may publish whichever copy is good. This core decides which, and when:

- The *preferred* pipeline's segment is published the moment it arrives.
- Another pipeline's copy is held until the preferred one is known to be missing: it failed
  validation, its pipeline moved past `n`, its pipeline is unhealthy, or `late_after_s`
  passed since the segment's capture interval ended. Then the copy is published instead.
- Segments are published in MSN order and at most once per (rendition, MSN): a copy that
  arrives after its MSN was decided is discarded, never published a second time.
- Published media always beats slate. An MSN is declared lost (the adapter lists the slate or
  EXT-X-GAP, so the live window keeps advancing) only when `gap_after_s` passed since its
  interval ended and no pipeline can still deliver it: each pipeline has moved past it
  (skipped or rejected it) or stopped delivering (no valid copy for 2·D + gap_after_s). A
  pipeline that keeps delivering, even late, is waited for: latency grows rather than a slate
  being listed, and the adapter raises an alarm for late listings.
  (A fixed deadline once turned a pipeline backlog under CPU load into permanent slate: every
  copy arrived after its MSN was declared lost and was discarded while media kept flowing.)
- Preference: operator-forced, or automatic: the first pipeline in order (primary) unless it
  has been unhealthy for `failover_hold_s`, in which case the next healthy one (a verdict that
  flickers under CPU load, on every pipeline at once, causes no switch). Failback to the
  primary happens only after it has been healthy, and delivered every segment on time, for
  `failback_hold_s` (no flapping).

All times are wall-clock seconds since the Unix epoch, like MSNs (`n · D` is when segment `n`
starts), passed in by the caller.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

AUTO = "auto"

Outcome = Literal["published", "discarded", "gap"]


class SelectorError(ValueError):
    """An impossible request (unknown pipeline or rendition, bad mode)."""


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish `pipeline`'s copy of segment `msn` of `rendition` now."""

    rendition: str
    msn: int
    pipeline: str
    reason: str  # "preferred" or "fallback: <why the preferred copy is not used>"


@dataclass(frozen=True, slots=True)
class Discard:
    """Drop `pipeline`'s copy: its MSN is already decided (published or lost)."""

    rendition: str
    msn: int
    pipeline: str
    reason: str


@dataclass(frozen=True, slots=True)
class Gap:
    """No pipeline delivered `msn` of `rendition` in time: list it (and any before it) as lost.

    `cause` says, per pipeline, why it cannot deliver (for the log; not part of equality).
    """

    rendition: str
    msn: int
    cause: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class Switched:
    """The preferred pipeline changed."""

    previous: str
    current: str
    reason: str


Action = Publish | Discard | Gap | Switched


@dataclass(frozen=True, slots=True)
class Decision:
    """What happened to one (rendition, MSN), for status pages and continuity checks."""

    rendition: str
    msn: int
    outcome: Outcome
    pipeline: str | None
    reason: str


@dataclass(slots=True)
class _PipelineState:
    healthy: bool = False
    healthy_since: float | None = None
    unhealthy_since: float | None = None
    last_offered: dict[str, int] = field(default_factory=dict)  # rendition -> newest MSN seen
    # rendition -> (when, seconds after its interval's end) of the newest valid copy offered,
    # whether or not it could still be published: how late this pipeline delivers.
    delivered: dict[str, tuple[float, float]] = field(default_factory=dict)
    published: int = 0
    fallbacks_for: int = 0  # segments another pipeline had to cover for this one


_REJECTED = "rejected"
_READY = "ready"
_SUSPECT = "suspect"  # valid, but made from damaged input: used only if no clean copy comes


class Selector:
    """Decides, per rendition and MSN, which pipeline's segment is published."""

    def __init__(
        self,
        *,
        pipelines: Sequence[str],
        renditions: Sequence[str],
        segment_duration_s: float,
        late_after_s: float,
        gap_after_s: float,
        failback_hold_s: float,
        failover_hold_s: float = 0.0,
        history: int = 64,
    ) -> None:
        if len(pipelines) < 1 or len(set(pipelines)) != len(pipelines):
            raise SelectorError(f"pipelines must be distinct and non-empty, got {pipelines}")
        if AUTO in pipelines:
            raise SelectorError(f"{AUTO!r} cannot name a pipeline")
        if failover_hold_s < 0:
            raise SelectorError(f"failover_hold_s must be ≥ 0, got {failover_hold_s}")
        if segment_duration_s <= 0 or late_after_s < 0 or gap_after_s < late_after_s:
            raise SelectorError(
                "need segment_duration_s > 0 and 0 ≤ late_after_s ≤ gap_after_s, got "
                f"{segment_duration_s}, {late_after_s}, {gap_after_s}"
            )
        self.order = tuple(pipelines)
        self.renditions = tuple(renditions)
        self.d = segment_duration_s
        self.late_after_s = late_after_s
        self.gap_after_s = gap_after_s
        self.failback_hold_s = failback_hold_s
        self.failover_hold_s = failover_hold_s
        self.mode = AUTO
        self.preferred = self.order[0]
        self.switches = 0
        self._p = {name: _PipelineState() for name in self.order}
        self._last: dict[str, int | None] = dict.fromkeys(self.renditions)
        # rendition -> msn -> pipeline -> _READY | _SUSPECT | _REJECTED
        self._pending: dict[str, dict[int, dict[str, str]]] = {r: {} for r in self.renditions}
        self.history: dict[str, deque[Decision]] = {
            r: deque(maxlen=history) for r in self.renditions
        }

    # -- inputs ---------------------------------------------------------------------------

    def restore(self, rendition: str, last_msn: int | None) -> None:
        """The rendition already published up to `last_msn` (after an origin restart)."""
        self._check(rendition=rendition)
        self._last[rendition] = last_msn

    def set_health(self, pipeline: str, healthy: bool, now: float) -> list[Action]:
        """The pipeline's feed and transcoder are (not) healthy as of `now`."""
        self._check(pipeline=pipeline)
        st = self._p[pipeline]
        if healthy and not st.healthy:
            st.healthy_since = now
        elif not healthy:
            st.healthy_since = None
            if st.healthy or st.unhealthy_since is None:
                st.unhealthy_since = now
        if healthy:
            st.unhealthy_since = None
        st.healthy = healthy
        return self._prefer(now)

    def force(self, mode: str, now: float) -> list[Action]:
        """Operator choice: a pipeline name (always prefer it) or `auto`."""
        if mode != AUTO:
            self._check(pipeline=mode)
        self.mode = mode
        return self._prefer(now)

    def offer(
        self, pipeline: str, rendition: str, msn: int, now: float, *, suspect: bool = False
    ) -> list[Action]:
        """`pipeline` has validated and can deliver segment `msn` of `rendition`.

        `suspect`: the copy is well-formed but its pipeline saw damaged input during its
        capture interval; another pipeline's clean copy replaces it, and it is published only
        when no clean copy arrives in time (continuity first).
        """
        self._check(pipeline=pipeline, rendition=rendition)
        self._saw(pipeline, rendition, msn)
        self._p[pipeline].delivered[rendition] = (now, max(0.0, now - (msn + 1) * self.d))
        last = self._last[rendition]
        if last is not None and msn <= last:
            return [self._discard(rendition, msn, pipeline)]
        if suspect:
            self._miss(pipeline, now)
        self._pending[rendition].setdefault(msn, {})[pipeline] = _SUSPECT if suspect else _READY
        return self._resolve(rendition, now)

    def reject(self, pipeline: str, rendition: str, msn: int, now: float) -> list[Action]:
        """`pipeline`'s copy of `msn` failed validation (or could not be stored)."""
        self._check(pipeline=pipeline, rendition=rendition)
        self._saw(pipeline, rendition, msn)
        self._miss(pipeline, now)
        last = self._last[rendition]
        if last is None or msn > last:
            self._pending[rendition].setdefault(msn, {})[pipeline] = _REJECTED
        return self._resolve(rendition, now)

    def tick(self, now: float) -> list[Action]:
        """Apply deadlines: late copies fall back, lost MSNs become gaps, failback happens."""
        actions: list[Action] = []
        for r in self.renditions:
            actions += self._resolve(r, now)
            last = self._last[r]
            if last is None:
                continue  # nothing published yet: the event has not started
            if now >= (last + 1) * self.d + self.late_after_s:
                for p in self.order:
                    if self._p[p].last_offered.get(r, -1) < last:
                        self._miss(p, now)  # behind: not delivering on time
            due = self._lost_up_to(r, now)
            if due > last:
                # No pipeline can deliver anything up to `due`; _resolve published what it could.
                for p in self.order:
                    self._miss(p, now)
                actions.append(Gap(r, due, self._gap_cause(r, due, now)))
                for m in [m for m in self._pending[r] if m <= due]:
                    del self._pending[r][m]
                self._last[r] = due
                self.history[r].append(Decision(r, due, "gap", None, "no pipeline in time"))
        # Last: a pipeline that just missed a deadline must not fail back in the same tick.
        return actions + self._prefer(now)

    def _lost_up_to(self, rendition: str, now: float) -> int:
        """The highest MSN up to which no pipeline can deliver any more (a prefix)."""
        due = math.floor((now - self.gap_after_s) / self.d + 1e-9) - 1  # the fixed deadline
        for st in self._p.values():
            if self._delivering(st, rendition, now):
                # Still delivering, however late: it holds back everything it has not moved
                # past (what it skipped or rejected, it will not deliver).
                due = min(due, st.last_offered.get(rendition, -1))
        return due

    def _delivering(self, st: _PipelineState, rendition: str, now: float) -> bool:
        """It offered a valid copy within two segments plus the gap allowance.

        Two segments, not one: a transcoder starved of CPU (on a loaded 2-core machine, load
        20–30) delivered a segment only every 3.6–5 s and was once taken for stopped.
        """
        newest = st.delivered.get(rendition)
        return newest is not None and now - newest[0] <= 2 * self.d + self.gap_after_s + 1e-9

    def _gap_cause(self, rendition: str, msn: int, now: float) -> str:
        fixed = (msn + 1) * self.d + self.gap_after_s
        parts = [
            f"deadline for segment {msn} (capture end + {self.gap_after_s:g} s) passed "
            f"{max(0.0, now - fixed):.1f} s ago"
        ]
        for name, st in self._p.items():
            newest = st.delivered.get(rendition)
            seen = st.last_offered.get(rendition)
            health = "healthy" if st.healthy else "unhealthy"
            if newest is None:
                parts.append(f"{name} ({health}): delivered nothing")
                continue
            at, late = newest
            state = (
                "delivering"
                if self._delivering(st, rendition, now)
                else f"silent for {now - at:.1f} s"
            )
            parts.append(
                f"{name} ({health}, {state}): newest segment {seen}, {late:.1f} s after its "
                "capture end"
            )
        return "; ".join(parts)

    # -- queries --------------------------------------------------------------------------

    def last_msn(self, rendition: str) -> int | None:
        return self._last[rendition]

    def status(self, now: float) -> dict[str, object]:
        """JSON-able view: mode, preference, per-pipeline health, recent decisions."""
        return {
            "mode": self.mode,
            "preferred": self.preferred,
            "switches": self.switches,
            "failback_hold_s": self.failback_hold_s,
            "pipelines": {
                name: {
                    "healthy": st.healthy,
                    "healthy_for_s": None
                    if st.healthy_since is None
                    else round(now - st.healthy_since, 3),
                    "published_segments": st.published,
                    "covered_by_others": st.fallbacks_for,
                }
                for name, st in self._p.items()
            },
            "recent": {
                r: [
                    {"msn": d.msn, "outcome": d.outcome, "pipeline": d.pipeline, "reason": d.reason}
                    for d in list(h)[-8:]
                ]
                for r, h in self.history.items()
            },
        }

    # -- internals ------------------------------------------------------------------------

    def _check(self, *, pipeline: str | None = None, rendition: str | None = None) -> None:
        if pipeline is not None and pipeline not in self._p:
            raise SelectorError(f"unknown pipeline {pipeline!r}; known: {', '.join(self.order)}")
        if rendition is not None and rendition not in self._last:
            raise SelectorError(f"unknown rendition {rendition!r}")

    def _saw(self, pipeline: str, rendition: str, msn: int) -> None:
        seen = self._p[pipeline].last_offered
        seen[rendition] = max(msn, seen.get(rendition, msn))

    def _miss(self, pipeline: str, now: float) -> None:
        """The pipeline failed to deliver a segment: its failback clock starts again now."""
        st = self._p[pipeline]
        if st.healthy:
            st.healthy_since = now

    def _discard(self, rendition: str, msn: int, pipeline: str) -> Discard:
        decided = next((d for d in reversed(self.history[rendition]) if d.msn == msn), None)
        why = (
            f"msn {msn} already {decided.outcome}"
            + (f" from {decided.pipeline}" if decided and decided.pipeline else "")
            if decided
            else f"msn {msn} is behind the published {self._last[rendition]}"
        )
        return Discard(rendition, msn, pipeline, why)

    def _resolve(self, rendition: str, now: float) -> list[Action]:
        """Publish pending MSNs in order while each one can be decided."""
        actions: list[Action] = []
        pending = self._pending[rendition]
        for msn in sorted(pending):
            copies = pending[msn]
            choice = self._choose(rendition, msn, copies, now)
            if choice is None:
                break
            del pending[msn]
            if isinstance(choice, str):
                continue  # every pipeline failed this MSN: the window lists it as a gap
            pipeline, reason = choice
            self._last[rendition] = msn
            self._p[pipeline].published += 1
            if pipeline != self.preferred:
                self._p[self.preferred].fallbacks_for += 1
            self.history[rendition].append(Decision(rendition, msn, "published", pipeline, reason))
            actions.append(Publish(rendition, msn, pipeline, reason))
            for other, state in copies.items():
                if other != pipeline and state in (_READY, _SUSPECT):
                    actions.append(self._discard(rendition, msn, other))
        return actions

    def _choose(
        self, rendition: str, msn: int, copies: dict[str, str], now: float
    ) -> tuple[str, str] | str | None:
        pref = self.preferred
        if copies.get(pref) == _READY:
            return pref, "preferred"
        ready = [p for p in self.order if copies.get(p) == _READY]
        if not ready:
            suspects = sorted(
                (p for p in self.order if copies.get(p) == _SUSPECT), key=lambda p: p != pref
            )
            decided = all(copies.get(p) in (_REJECTED, _SUSPECT) for p in self.order)
            if suspects and (decided or now >= (msn + 1) * self.d + self.late_after_s):
                return suspects[0], "suspect: no clean copy in time"
            if decided:
                return _REJECTED
            return None
        pst = self._p[pref]
        if copies.get(pref) == _REJECTED:
            why = "preferred copy failed validation"
        elif copies.get(pref) == _SUSPECT:
            why = "preferred copy made from damaged input"
        elif pst.last_offered.get(rendition, -1) > msn:
            why = "preferred pipeline skipped it"
        elif not pst.healthy:
            why = "preferred pipeline unhealthy"
        elif now >= (msn + 1) * self.d + self.late_after_s:
            why = "preferred copy late"
        else:
            return None
        if copies.get(pref) not in (_REJECTED, _SUSPECT):
            self._miss(pref, now)
        return ready[0], f"fallback: {why}"

    def _prefer(self, now: float) -> list[Action]:
        """Re-evaluate the preferred pipeline (forced mode, failover, failback with hold)."""
        if self.mode != AUTO:
            return self._switch(self.mode, "forced by operator")
        current = self._p[self.preferred]
        primary = self.order[0]
        pst = self._p[primary]
        if (
            self.preferred != primary
            and pst.healthy_since is not None
            and now - pst.healthy_since >= self.failback_hold_s
        ):
            return self._switch(
                primary, f"failback: {primary} healthy for {now - pst.healthy_since:.1f} s"
            )
        since = current.unhealthy_since
        if current.healthy or (since is not None and now - since < self.failover_hold_s - 1e-9):
            return []  # a verdict that flickers (CPU load, often on every pipeline) is waited out
        for name in self.order:
            if self._p[name].healthy and name != self.preferred:
                held = (
                    ""
                    if since is None or self.failover_hold_s == 0
                    else f" for {now - since:.1f} s"
                )
                return self._switch(name, f"failover: {self.preferred} unhealthy{held}")
        return []

    def _switch(self, to: str, reason: str) -> list[Action]:
        if to == self.preferred:
            return []
        previous, self.preferred = self.preferred, to
        self.switches += 1
        return [Switched(previous, to, reason)]
