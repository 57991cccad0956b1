"""CMCD v2 event-mode reporting of the headless player (sans-IO), as hls.js 1.7 does it.

Mirrors ``@svta/cml-cmcd``'s ``CmcdReporter`` as hls.js configures it with
``cmcd: {version: 2, contentId, eventTargets: [{url, events: ["t", "e", "bc", "rr"],
interval}]}``, so the collector sees our players and hls.js alike:

- persistent keys on every record: ``v=2``, ``sid``, ``cid``, ``sf=h``, ``st=l``, ``sta``
  (player state), ``mtp`` (throughput estimate, kbps), ``pr`` (playback rate), ``bl`` (buffer
  ahead of the playhead as of the last append, ms);
- events: ``t`` at start and every ``interval_s``; ``bc`` with ``br``/``ot`` on a rendition
  switch; ``rr`` per media response with ``url``, ``rc``, ``ts`` = request start, ``ttfb``,
  ``ttlb``; ``e`` with ``ec`` on a fatal error; each with ``ts`` and ``sn`` counting up from 0;
- transport: ``POST url`` with ``Content-Type: application/cmcd``, one record per line, each
  ending in ``\\n``; a batch answered 429 or 5xx goes back to the head of the queue and is sent
  with the next. Unlike cml-cmcd, ``Retry-After`` is honoured (the collector asks players to
  back off when it is over capacity); 410 stops reporting.

``CmcdReporter`` takes ``now`` (epoch seconds) everywhere; the player's adapter posts what
``take()`` returns and arms one timer at ``next_deadline()``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from mainevent.common.cmcd import CmcdValue, encode_dict

__all__ = ["CMCD_CONTENT_TYPE", "CmcdReporter", "CmcdTarget", "PlayerState"]

CMCD_CONTENT_TYPE = "application/cmcd"

RETRY_S = 1.0
"""Wait before resending a batch that failed without a Retry-After."""


class PlayerState:
    """CMCD ``sta`` values the headless player reports."""

    STARTING = "s"
    PLAYING = "p"
    REBUFFERING = "r"
    ENDED = "e"
    FATAL = "f"
    QUIT = "q"


@dataclass(frozen=True, slots=True)
class CmcdTarget:
    """One event target (hls.js ``eventTargets`` entry)."""

    url: str
    """Where reports are POSTed (the collector's ``/v1/cmcd/<event>``)."""
    interval_s: float = 1.0
    """Time-interval (``t``) period; 0 = no time-interval events."""
    events: tuple[str, ...] = ("t", "e", "bc", "rr")
    batch_size: int = 1
    """Records per POST (cml-cmcd's default: every record at once)."""

    def __post_init__(self) -> None:
        if self.interval_s < 0 or self.batch_size < 1:
            raise ValueError("interval must not be negative and batch size must be at least 1")


class CmcdReporter:
    """The queue, the persistent keys and the sequence number of one session's reports."""

    def __init__(self, target: CmcdTarget, sid: str, cid: str, now: float) -> None:
        self.target = target
        self._data: dict[str, CmcdValue] = {
            "v": 2,
            "sid": sid,
            "cid": cid,
            "sf": "h",
            "st": "l",
            "sta": PlayerState.STARTING,
            "pr": 1,
        }
        self._queue: deque[str] = deque()
        self._sending: list[str] = []
        self._sn = 0
        self._in_flight = 0
        self._hold_until = 0.0
        self.disposed = False
        self.sent = 0
        """Records the collector accepted (answered 2xx)."""
        self._next_t: float | None = None
        if "t" in target.events and target.interval_s > 0:
            self._next_t = now + target.interval_s
            self.record("t", now)  # cml-cmcd's start() fires one at once

    # --- inputs -----------------------------------------------------------------------------

    def update(self, **data: CmcdValue) -> None:
        """Change persistent keys (``sta``, ``bl``, ``mtp``...) carried by every later record."""
        self._data.update(data)

    def record(self, event: str, now: float, **data: CmcdValue) -> None:
        """Queue one record of type ``event`` (ignored unless the target wants it)."""
        if self.disposed or event not in self.target.events:
            return
        item: dict[str, CmcdValue] = {**self._data, **data, "e": event}
        item.setdefault("ts", round(now * 1000))
        item["sn"] = self._sn
        self._sn += 1
        self._queue.append(encode_dict(item))

    def response(
        self, url: str, status: int, started: float, ttfb_s: float, ttlb_s: float, now: float
    ) -> None:
        """A media response fully received (``rr``): ``ts`` is when the request began."""
        self.record(
            "rr",
            now,
            url=url,
            rc=status,
            ts=round(started * 1000),
            ttfb=round(ttfb_s * 1000),
            ttlb=round(ttlb_s * 1000),
        )

    # --- time and transport -----------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When to call ``tick``/``take`` next: the next time-interval record, or the end of a
        back-off with records waiting (None: nothing is due)."""
        if self.disposed:
            return None
        due = [self._next_t] if self._next_t is not None else []
        if self._queue and self._hold_until:
            due.append(self._hold_until)
        return min(due) if due else None

    def tick(self, now: float) -> None:
        """Record the time-interval event(s) due by ``now``."""
        if self._next_t is None or now < self._next_t or self.disposed:
            return
        self.record("t", now)
        while self._next_t <= now:
            self._next_t += self.target.interval_s

    def take(self, now: float, *, flush: bool = False) -> bytes | None:
        """The next body to POST, or None (queue shorter than a batch, one already in flight,
        or the collector asked to wait)."""
        if self.disposed or self._in_flight or not self._queue or now < self._hold_until:
            return None
        if len(self._queue) < self.target.batch_size and not flush:
            return None
        n = len(self._queue) if flush else self.target.batch_size
        lines = [self._queue.popleft() for _ in range(min(n, len(self._queue)))]
        self._in_flight = len(lines)
        self._sending = lines
        return ("\n".join(lines) + "\n").encode()

    def answered(self, status: int | None, now: float, retry_after_s: float | None = None) -> None:
        """The POST of the last ``take()`` ended: ``status`` None for a transport error."""
        lines, self._sending = self._sending, []
        self._in_flight = 0
        if status == 410:
            self.disposed = True
            self._queue.clear()
            return
        if status is None or status == 429 or 500 <= status < 600:
            self._queue.extendleft(reversed(lines))  # resent first, same sn: deduplicated
            self._hold_until = now + (retry_after_s or RETRY_S)
            return
        if 200 <= status < 300:
            self.sent += len(lines)

    @property
    def pending(self) -> int:
        """Records not yet accepted by the collector."""
        return len(self._queue) + self._in_flight
