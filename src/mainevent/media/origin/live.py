"""Published state of one live event: what the packagers have stored, as the origin lists it.

Packager adapters call `on_init` / `on_part` / `on_segment` / `on_rejected`; each segment is
stored whole (memory + disk) before its window publishes it (write before publish). The origin
app reads rendered playlists and media from here. On start, `restore()` rebuilds the windows
from the store, so an origin restart loses nothing that was published.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mainevent.media.cmaf import InitSection, Part, Segment
from mainevent.media.manifest import (
    MediaRendition,
    MultivariantPlaylist,
    PublishedPart,
    PublishedSegment,
    RenditionWindow,
    Variant,
    render_media_playlist,
    render_multivariant_playlist,
)
from mainevent.media.store import SegmentRecord, SegmentStore

log = logging.getLogger(__name__)

AUDIO_GROUP = "aud"


@dataclass(frozen=True, slots=True)
class RenditionSpec:
    """A rendition the event produces (from its ladder)."""

    id: str
    kind: str  # "video" | "audio"
    bitrate_kbps: int
    width: int | None = None
    height: int | None = None


@dataclass(slots=True)
class _Rendition:
    spec: RenditionSpec
    window: RenditionWindow
    codec: str | None = None
    width: int | None = None
    height: int | None = None
    init_name: str | None = None
    init_digests: dict[str, str] = field(default_factory=dict)  # sha256 -> name
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (bytes, duration_us), recent
    playlist_text: str | None = None
    published_at: float | None = None  # monotonic time of the last publication


class Metrics:
    """Prometheus metrics of the publishing side (one registry per process/app)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.segments = Counter(
            "mainevent_segments_published_total",
            "Segments stored and listed",
            ["event", "rendition"],
            registry=registry,
        )
        self.rejected = Counter(
            "mainevent_segments_rejected_total",
            "Segments that failed validation and were not published",
            ["event", "rendition", "reason"],
            registry=registry,
        )
        self.segment_bytes = Counter(
            "mainevent_segment_bytes_total",
            "Bytes of published segments",
            ["event", "rendition"],
            registry=registry,
        )
        self.last_msn = Gauge(
            "mainevent_last_msn",
            "Media sequence number of the newest published segment",
            ["event", "rendition"],
            registry=registry,
        )
        self.publish_delay = Histogram(
            "mainevent_publish_delay_seconds",
            "Wall clock at publication minus the capture time of the segment's end",
            ["event", "rendition"],
            buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10),
            registry=registry,
        )
        self.requests = Counter(
            "mainevent_origin_requests_total",
            "Origin requests by object type and status",
            ["type", "status"],
            registry=registry,
        )


class LiveEvent:
    """One event's renditions, windows and stored media."""

    def __init__(
        self,
        *,
        event_id: str,
        renditions: list[RenditionSpec],
        store: SegmentStore,
        segment_duration_ms: int,
        window_segments: int,
        fps: int,
        metrics: Metrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.event_id = event_id
        self.store = store
        self.segment_duration_ms = segment_duration_ms
        self.fps = fps
        self.metrics = metrics or Metrics(CollectorRegistry())
        self.monotonic = monotonic
        self.wall = wall
        self.target_duration_s = max(1, math.ceil(segment_duration_ms / 1000 - 1e-9))
        self._r: dict[str, _Rendition] = {}
        for spec in renditions:
            window = RenditionWindow(
                target_duration_s=self.target_duration_s,
                window_segments=window_segments,
                segment_duration_us=segment_duration_ms * 1000,
            )
            self._r[spec.id] = _Rendition(spec=spec, window=window)
        self._master_text: str | None = None
        self.ready_event = asyncio.Event()  # set once every rendition has published

    # -- queries --------------------------------------------------------------------------

    @property
    def rendition_ids(self) -> list[str]:
        return list(self._r)

    def has_rendition(self, rendition: str) -> bool:
        return rendition in self._r

    def last_msn(self, rendition: str) -> int | None:
        return self._r[rendition].window.last_msn

    def next_msn_floor(self) -> int:
        """Smallest MSN a new encoder run may publish: above everything already published."""
        lasts = [r.window.last_msn for r in self._r.values() if r.window.last_msn is not None]
        return max(lasts) + 1 if lasts else 0

    def playlist(self, rendition: str) -> str | None:
        """The current media playlist text, or None before the first segment."""
        r = self._r[rendition]
        if r.window.last_msn is None:
            return None
        if r.playlist_text is None:
            r.playlist_text = render_media_playlist(r.window.playlist(self.monotonic()))
        return r.playlist_text

    def is_available(self, rendition: str, msn: int) -> bool:
        return self._r[rendition].window.is_available(msn, self.monotonic())

    def ready(self) -> bool:
        """Every rendition has an init section and at least one published segment."""
        return all(r.codec is not None and r.window.last_msn is not None for r in self._r.values())

    def multivariant(self) -> str | None:
        """The multivariant playlist, or None until every rendition has published."""
        if not self.ready():
            return None
        if self._master_text is None:
            self._master_text = render_multivariant_playlist(self._build_master())
        return self._master_text

    def stalled_for(self, rendition: str) -> float | None:
        """Seconds since the rendition last published (None before the first segment)."""
        r = self._r[rendition]
        return None if r.published_at is None else self.monotonic() - r.published_at

    def _peak_avg(self, r: _Rendition) -> tuple[int, int]:
        rates = [b * 8 * 1_000_000 // max(d, 1) for b, d in r.sizes]
        if not rates:
            return r.spec.bitrate_kbps * 1000, r.spec.bitrate_kbps * 1000
        total_b = sum(b for b, _ in r.sizes)
        total_d = sum(d for _, d in r.sizes)
        return max(rates), total_b * 8 * 1_000_000 // max(total_d, 1)

    def _build_master(self) -> MultivariantPlaylist:
        audio = [r for r in self._r.values() if r.spec.kind == "audio"]
        video = [r for r in self._r.values() if r.spec.kind == "video"]
        a_peak, a_avg = (0, 0)
        media: list[MediaRendition] = []
        for i, a in enumerate(audio):
            peak, avg = self._peak_avg(a)
            a_peak, a_avg = max(a_peak, peak), max(a_avg, avg)
            media.append(
                MediaRendition(
                    type="AUDIO",
                    group_id=AUDIO_GROUP,
                    name=a.spec.id,
                    uri=f"{a.spec.id}/index.m3u8",
                    default=i == 0,
                    autoselect=True,
                    channels="2",
                )
            )
        a_codec = audio[0].codec if audio else None
        variants = []
        for v in sorted(video, key=lambda r: -(r.spec.bitrate_kbps)):
            peak, avg = self._peak_avg(v)
            codecs = ",".join(c for c in (v.codec, a_codec) if c)
            variants.append(
                Variant(
                    uri=f"{v.spec.id}/index.m3u8",
                    bandwidth=peak + a_peak,
                    average_bandwidth=avg + a_avg,
                    codecs=codecs,
                    resolution=(v.width, v.height) if v.width and v.height else None,
                    frame_rate=Fraction(self.fps),
                    audio=AUDIO_GROUP if audio else None,
                )
            )
        return MultivariantPlaylist(variants=tuple(variants), media=tuple(media))

    # -- publication (called by packager adapters) ----------------------------------------

    async def on_init(self, rendition: str, init: InitSection) -> str:
        """Store an encoder run's init section; returns the name segments refer to."""
        r = self._r[rendition]
        digest = hashlib.sha256(init.data).hexdigest()
        name = r.init_digests.get(digest)
        if name is None:
            name = "init.mp4" if not r.init_digests else f"init-{digest[:12]}.mp4"
            await self.store.put_init(self.event_id, rendition, name, init.data)
            r.init_digests[digest] = name
            if r.init_name is not None:
                log.warning(
                    "event %s rendition %s: encoder init changed, new %s (discontinuity)",
                    self.event_id,
                    rendition,
                    name,
                )
        r.init_name = name
        if r.codec != init.track.codec:
            self._master_text = None
        r.codec = init.track.codec
        r.width, r.height = init.track.width, init.track.height
        return name

    def on_part(self, rendition: str, part: Part) -> None:
        """Keep a completed part in memory (listed by the LL-HLS mode)."""
        self.store.put_part(self.event_id, rendition, part.msn, part.index, part.data)

    async def on_segment(self, rendition: str, segment: Segment) -> None:
        """Store a validated segment whole, then publish it in the rendition's window."""
        r = self._r[rendition]
        if r.init_name is None:
            raise RuntimeError(f"{rendition}: segment {segment.msn} before any init section")
        last = r.window.last_msn
        if last is not None and segment.msn <= last:
            # Never reuse or rewind a media sequence number.
            self.on_rejected(
                rendition, segment.msn, f"msn {segment.msn} not after published {last}"
            )
            return
        duration_us = segment.duration * 1_000_000 // segment.timescale
        parts = tuple(
            (p.duration * 1_000_000 // segment.timescale, p.independent) for p in segment.parts
        )
        record = SegmentRecord(
            msn=segment.msn,
            duration_us=duration_us,
            program_date_time_ms=segment.program_date_time_ms,
            init_name=r.init_name,
            size=len(segment.data),
            parts=parts,
        )
        await self.store.put_segment(self.event_id, rendition, record, segment.data)
        self._publish(r, record)
        end_s = (segment.start + segment.duration) / segment.timescale
        labels = (self.event_id, rendition)
        self.metrics.segments.labels(*labels).inc()
        self.metrics.segment_bytes.labels(*labels).inc(len(segment.data))
        self.metrics.last_msn.labels(*labels).set(segment.msn)
        self.metrics.publish_delay.labels(*labels).observe(max(0.0, self.wall() - end_s))

    def _publish(self, r: _Rendition, record: SegmentRecord) -> None:
        now = self.monotonic()
        seg = PublishedSegment(
            msn=record.msn,
            duration_us=record.duration_us,
            program_date_time_ms=record.program_date_time_ms,
            init_uri=record.init_name,
            parts=tuple(
                PublishedPart(index=i, duration_us=d, independent=ind)
                for i, (d, ind) in enumerate(record.parts)
            ),
        )
        r.window.publish(seg, now)
        for msn in r.window.expired(now):
            self.store.forget(self.event_id, r.spec.id, [msn])
        r.sizes.append((record.size, record.duration_us))
        del r.sizes[:-32]
        r.playlist_text = None
        r.published_at = now
        if len(r.sizes) <= 3:
            self._master_text = None  # bandwidth figures settle over the first segments
        if not self.ready_event.is_set() and self.ready():
            self.ready_event.set()

    def on_rejected(
        self, rendition: str, msn: int, reason: str, *, drop_parts: bool = True
    ) -> None:
        """Count and log a segment that failed validation; it is never published."""
        log.warning(
            "event %s rendition %s: segment %d rejected: %s", self.event_id, rendition, msn, reason
        )
        short = reason.split(":", 1)[0][:60]
        self.metrics.rejected.labels(self.event_id, rendition, short).inc()

    def restore(self) -> int:
        """Re-list what the store holds (after a restart); returns the number of segments."""
        from mainevent.media.cmaf import CmafError, parse_init

        count = 0
        for rid, r in self._r.items():
            inits = self.store.inits(self.event_id, rid)
            for name, data in inits.items():
                r.init_digests[hashlib.sha256(data).hexdigest()] = name
            for rec in self.store.records(self.event_id, rid):
                if rec.init_name not in inits:
                    log.warning(
                        "segment %s/%d refers to missing %s; skipped", rid, rec.msn, rec.init_name
                    )
                    continue
                last = r.window.last_msn
                if last is not None and rec.msn <= last:
                    continue
                r.init_name = rec.init_name
                self._publish(r, rec)
                count += 1
            if r.init_name is not None:
                try:
                    track = parse_init(inits[r.init_name]).track
                except CmafError as exc:
                    log.error("stored %s/%s is not a valid init section: %s", rid, r.init_name, exc)
                    continue
                r.codec, r.width, r.height = track.codec, track.width, track.height
        self._master_text = None
        if self.ready():
            self.ready_event.set()
        return count
