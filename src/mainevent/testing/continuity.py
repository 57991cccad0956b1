"""Watch a live media playlist and prove its continuity (for failover tests and benchmarks).

A `PlaylistRecorder` polls one media playlist several times per segment duration and records
every MSN it ever lists: when it first appeared, whether it was a gap or after a discontinuity,
and a digest of the segment's bytes, fetched when it was first listed and again a while later.
From that: MSNs that were skipped (never listed), gaps, discontinuities, and MSNs whose content
changed (published twice with different content).
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin

import httpx

from mainevent.media.manifest import parse_media_playlist


@dataclass
class Listed:
    """One MSN as the recorder saw it."""

    msn: int
    first_seen: float  # time.time()
    gap: bool
    discontinuity: bool
    uri: str
    digest: str | None = None
    recheck: str | None = None  # digest of a second fetch, ≥ `recheck_after_s` later


@dataclass
class ContinuityReport:
    listed: dict[int, Listed]
    missing: list[int]  # between the first and last MSN, never listed
    gaps: list[int]
    discontinuities: list[int]
    changed: list[int]  # content differed between two fetches
    advances: list[float]  # time.time() whenever the last MSN grew
    errors: list[str] = field(default_factory=list)

    @property
    def media(self) -> list[int]:
        return sorted(m for m, e in self.listed.items() if not e.gap)

    def longest_freeze_s(self, start: float, end: float) -> float:
        """Longest time without the playlist's last MSN advancing within [start, end]."""
        points = [start, *[t for t in self.advances if start <= t <= end], end]
        return max(b - a for a, b in itertools.pairwise(points))


class PlaylistRecorder:
    """Polls `url` (a media playlist) in a thread until `stop()`."""

    def __init__(self, url: str, *, every_s: float = 0.2, recheck_after_s: float = 1.5) -> None:
        self.url = url
        self.every_s = every_s
        self.recheck_after_s = recheck_after_s
        self.listed: dict[int, Listed] = {}
        self.advances: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PlaylistRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> ContinuityReport:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        return self.report()

    def report(self) -> ContinuityReport:
        msns = sorted(self.listed)
        missing = [m for m in range(msns[0], msns[-1] + 1) if m not in self.listed] if msns else []
        return ContinuityReport(
            listed=dict(self.listed),
            missing=missing,
            gaps=[m for m in msns if self.listed[m].gap],
            discontinuities=[m for m in msns if self.listed[m].discontinuity],
            changed=[
                m
                for m in msns
                if self.listed[m].recheck is not None
                and self.listed[m].recheck != self.listed[m].digest
            ],
            advances=list(self.advances),
            errors=list(self.errors),
        )

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                try:
                    self._poll(client)
                except Exception as exc:  # recorded, never silently ends the recording
                    self.errors.append(f"{time.time():.3f} {type(exc).__name__}: {exc}")
                self._stop.wait(self.every_s)

    def _digest(self, client: httpx.Client, uri: str) -> str | None:
        r = client.get(urljoin(self.url, uri))
        if r.status_code != 200:
            return None
        return hashlib.sha256(r.content).hexdigest()

    def _poll(self, client: httpx.Client) -> None:
        r = client.get(self.url)
        if r.status_code != 200:
            self.errors.append(f"{time.time():.3f} playlist HTTP {r.status_code}")
            return
        pl = parse_media_playlist(r.text)
        now = time.time()
        last = max(self.listed) if self.listed else None
        for i, seg in enumerate(pl.segments):
            msn = pl.media_sequence + pl.skipped_segments + i
            if msn in self.listed:
                continue
            entry = Listed(msn, now, seg.gap, seg.discontinuity, seg.uri)
            if not seg.gap:
                entry.digest = self._digest(client, seg.uri)
            self.listed[msn] = entry
        if self.listed and (last is None or max(self.listed) > last):
            self.advances.append(now)
        for e in self.listed.values():
            if (
                e.digest is not None
                and e.recheck is None
                and now - e.first_seen >= self.recheck_after_s
            ):
                e.recheck = self._digest(client, e.uri) or e.digest
