"""The playback model of the headless player (sans-IO): a virtual playhead over a buffer.

Downloaded segments are appended per track ("main", "audio") as ranges of media time
(integer microseconds). Once every track holds enough media ahead of the start position,
playback starts and the playhead advances at 1x wall time; when it reaches the end of the
media buffered on any track the player stalls until enough is buffered again. Live latency is
the wall clock minus the program date time of the media under the playhead. Time comes in as
`now` (epoch seconds); nothing here reads a clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

PlaybackState = Literal["buffering", "playing", "stalled", "ended"]


@dataclass(frozen=True, slots=True)
class PlaybackConfig:
    """When playback may start or resume, and which holes it plays through."""

    start_buffer_us: int = 500_000
    """Media needed ahead of the playhead on every track before playback starts."""
    resume_buffer_us: int = 500_000
    """Media needed ahead of the playhead on every track to leave a stall."""
    max_hole_us: int = 100_000
    """Holes between buffered segments up to this size are played through (hls.js maxBufferHole)."""

    def __post_init__(self) -> None:
        if min(self.start_buffer_us, self.resume_buffer_us, self.max_hole_us) < 0:
            raise ValueError("buffer thresholds must not be negative")


@dataclass(frozen=True, slots=True)
class PlaybackStarted:
    """The playhead started moving `startup_s` after the play request."""

    at: float
    startup_s: float


@dataclass(frozen=True, slots=True)
class StallStarted:
    """The playhead reached the end of the buffer while more media was expected."""

    at: float
    position_us: int


@dataclass(frozen=True, slots=True)
class StallEnded:
    """Enough media arrived to resume after a stall of `duration_s`."""

    at: float
    duration_s: float


@dataclass(frozen=True, slots=True)
class PlaybackEnded:
    """The playhead reached the end of a finished (ENDLIST) presentation."""

    at: float


PlaybackEvent = PlaybackStarted | StallStarted | StallEnded | PlaybackEnded


@dataclass(frozen=True, slots=True)
class PlaybackStats:
    """Snapshot of the model as of the last `advance()`."""

    state: PlaybackState
    position_us: int
    buffer_ahead_s: float
    startup_s: float | None
    played_s: float
    stalls: int
    stall_time_s: float
    latency_s: float | None
    longest_stall_s: float = 0.0
    """The longest single stall so far (an ongoing one counted up to the last `advance()`)."""


class PlaybackModel:
    """Virtual playhead, per-track buffered ranges, startup, stalls and latency."""

    def __init__(
        self,
        tracks: Iterable[str],
        start_position_us: int,
        requested_at: float,
        config: PlaybackConfig | None = None,
    ) -> None:
        self._config = config or PlaybackConfig()
        self._ranges: dict[str, list[tuple[int, int]]] = {t: [] for t in tracks}
        if not self._ranges:
            raise ValueError("a playback needs at least one track")
        self._complete: set[str] = set()
        # Per track, (start_us, end_us, pdt_ms) of recently appended segments that carry a PDT.
        self._pdt: dict[str, deque[tuple[int, int, int]]] = {
            t: deque(maxlen=64) for t in self._ranges
        }
        self._position_us = start_position_us
        self._state: PlaybackState = "buffering"
        self._requested_at = requested_at
        self._last_now = requested_at
        self._started_at: float | None = None
        self._played_us = 0
        self._stalls = 0
        self._stall_started_at: float | None = None
        self._stall_time_s = 0.0
        self._longest_stall_s = 0.0

    # -- inputs ---------------------------------------------------------------------------

    def advance(self, now: float) -> list[PlaybackEvent]:
        """Move the playhead to wall time `now` (earlier times are ignored)."""
        if now <= self._last_now:
            return []
        events: list[PlaybackEvent] = []
        if self._state == "playing":
            elapsed_us = round((now - self._last_now) * 1_000_000)
            ahead = self._playable_ahead_us()
            if elapsed_us < ahead:
                self._move(elapsed_us)
            else:
                self._move(ahead)
                at = self._last_now + ahead / 1_000_000
                if self._complete == set(self._ranges):
                    self._state = "ended"
                    events.append(PlaybackEnded(at))
                else:
                    self._state = "stalled"
                    self._stalls += 1
                    self._stall_started_at = at
                    events.append(StallStarted(at, self._position_us))
        self._last_now = now
        return events

    def append(
        self,
        track: str,
        start_us: int,
        duration_us: int,
        now: float,
        pdt_ms: int | None = None,
    ) -> list[PlaybackEvent]:
        """A segment of `track` covering [start_us, start_us + duration_us) finished downloading."""
        events = self.advance(now)
        ranges = self._ranges[track]
        ranges.append((start_us, start_us + duration_us))
        self._ranges[track] = _merge(ranges, self._config.max_hole_us)
        if pdt_ms is not None:
            self._pdt[track].append((start_us, start_us + duration_us, pdt_ms))
        events += self._check_ready()
        return events

    def complete(self, track: str, now: float) -> list[PlaybackEvent]:
        """`track` will get no more media (its playlist has ENDLIST and everything is fetched)."""
        events = self.advance(now)
        self._complete.add(track)
        events += self._check_ready()
        return events

    def seek(self, position_us: int, now: float) -> list[PlaybackEvent]:
        """Jump the playhead (e.g. back to the live window after falling behind it)."""
        events = self.advance(now)
        self._position_us = position_us
        if self._state == "playing" and self._playable_ahead_us() <= 0:
            self._state = "stalled"
            self._stalls += 1
            self._stall_started_at = now
            events.append(StallStarted(now, position_us))
        events += self._check_ready()
        return events

    # -- queries --------------------------------------------------------------------------

    @property
    def state(self) -> PlaybackState:
        return self._state

    @property
    def position_us(self) -> int:
        return self._position_us

    @property
    def started(self) -> bool:
        return self._started_at is not None

    def buffer_ahead_us(self, track: str | None = None) -> int:
        """Media buffered contiguously ahead of the playhead (on `track`, or on all tracks)."""
        if track is None:
            return self._playable_ahead_us()
        return self._ahead_us(track)

    def fetch_position_us(self, track: str) -> int:
        """Where the next segment of `track` should start: the end of its buffer at the playhead."""
        found = self._range_at_playhead(track)
        return found[1] if found is not None else self._position_us

    def latency_s(self) -> float | None:
        """Wall clock minus the PDT at the playhead, as of the last advance (SPEC.md §6).

        The PDT is that of the first track's segment under the playhead ("main": the video
        frame on screen), extrapolated within the segment; another track's only when the first
        has none there. None before playback started or where no segment carries a PDT.
        """
        if self._started_at is None:
            return None
        pos = self._position_us
        for pdts in self._pdt.values():
            for start, end, pdt_ms in reversed(pdts):
                if start <= pos <= end:
                    pdt_s = pdt_ms / 1000 + (pos - start) / 1_000_000
                    return self._last_now - pdt_s
        return None

    def statistics(self) -> PlaybackStats:
        stall_time = self._stall_time_s
        longest = self._longest_stall_s
        if self._state == "stalled" and self._stall_started_at is not None:
            ongoing = max(0.0, self._last_now - self._stall_started_at)
            stall_time += ongoing
            longest = max(longest, ongoing)
        return PlaybackStats(
            state=self._state,
            position_us=self._position_us,
            buffer_ahead_s=self._playable_ahead_us() / 1_000_000,
            startup_s=None if self._started_at is None else self._started_at - self._requested_at,
            played_s=self._played_us / 1_000_000,
            stalls=self._stalls,
            stall_time_s=stall_time,
            latency_s=self.latency_s(),
            longest_stall_s=longest,
        )

    # -- internals ------------------------------------------------------------------------

    def _move(self, delta_us: int) -> None:
        self._position_us += delta_us
        self._played_us += delta_us
        floor = self._position_us - self._config.max_hole_us
        for track, ranges in self._ranges.items():
            self._ranges[track] = [r for r in ranges if r[1] > floor]

    def _range_at_playhead(self, track: str) -> tuple[int, int] | None:
        pos = self._position_us
        hole = self._config.max_hole_us
        for start, end in self._ranges[track]:
            if start - hole <= pos < end:
                return start, end
        return None

    def _ahead_us(self, track: str) -> int:
        found = self._range_at_playhead(track)
        return max(0, found[1] - self._position_us) if found is not None else 0

    def _playable_ahead_us(self) -> int:
        return min(self._ahead_us(t) for t in self._ranges)

    def _check_ready(self) -> list[PlaybackEvent]:
        """Start or resume if enough is buffered (after skipping a hole, as a gap jumper would)."""
        if self._state not in ("buffering", "stalled"):
            return []
        self._skip_hole()
        ahead = self._playable_ahead_us()
        finished = self._complete == set(self._ranges)
        need = (
            self._config.start_buffer_us
            if self._state == "buffering"
            else self._config.resume_buffer_us
        )
        if ahead < need and not (finished and ahead > 0):
            return []
        now = self._last_now
        if self._state == "buffering":
            self._state = "playing"
            self._started_at = now
            return [PlaybackStarted(now, now - self._requested_at)]
        self._state = "playing"
        started = self._stall_started_at if self._stall_started_at is not None else now
        duration = max(0.0, now - started)
        self._stall_time_s += duration
        self._longest_stall_s = max(self._longest_stall_s, duration)
        self._stall_started_at = None
        return [StallEnded(now, duration)]

    def _skip_hole(self) -> None:
        """Move the playhead forward to buffered media if every track has some just ahead."""
        targets: list[int] = []
        for track in self._ranges:
            if self._range_at_playhead(track) is not None:
                targets.append(self._position_us)
                continue
            later = [start for start, _end in self._ranges[track] if start > self._position_us]
            if not later:
                return
            targets.append(min(later))
        self._position_us = max(targets)


def _merge(ranges: list[tuple[int, int]], hole_us: int) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1] + hole_us:
            prev_start, prev_end = merged[-1]
            merged[-1] = (prev_start, max(prev_end, end))
        else:
            merged.append((start, end))
    return merged
