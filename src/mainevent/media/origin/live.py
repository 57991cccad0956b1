"""Published state of one live event: what the packagers have stored, as the origin lists it.

Packager adapters call `on_init` / `on_part` / `on_segment` / `on_rejected`; each segment is
stored whole (memory + disk) before its window publishes it (write before publish). The origin
app reads rendered playlists and media from here. On start, `restore()` rebuilds the windows
from the store, so an origin restart loses nothing that was published.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mainevent.common.eventspec import DEFAULT_PART_TARGET_MS
from mainevent.media.cmaf import InitSection, Part, Segment
from mainevent.media.manifest import (
    LowLatency,
    MediaPlaylist,
    MediaRendition,
    MultivariantPlaylist,
    PublishedPart,
    PublishedSegment,
    RenditionReport,
    RenditionWindow,
    Variant,
    WindowError,
    render_media_playlist,
    render_multivariant_playlist,
)
from mainevent.media.manifest.dash import (
    DashRepresentation,
    MpdInfo,
    render_mpd,
    suggested_presentation_delay_ms,
)
from mainevent.media.manifest.dvr import VodGaps, delta_update, dvr_playlist
from mainevent.media.manifest.highlights import Highlight, insert_event_stream, with_highlights
from mainevent.media.manifest.parts import declared_part_target_us
from mainevent.media.manifest.pathways import (
    DashSteering,
    Pathways,
    SteeringContext,
    steered_multivariant,
)
from mainevent.media.origin.archive import END_RECORD, EndRecord, EventArchive, VodRun
from mainevent.media.origin.blocking import Hold, Waiters
from mainevent.media.origin.retention import RetentionPolicy, StoredSegment
from mainevent.media.shedding import Budget, LoadShedder, RequestClass, classify
from mainevent.media.store import SegmentRecord, SegmentStore

log = logging.getLogger(__name__)

AUDIO_GROUP = "aud"
LatencyMode = Literal["standard", "low"]
PlaylistFreshness = Literal["aligned", "half_td"]
DEFAULT_MAX_HELD = 20_000


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
    sample_rate: int | None = None
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (bytes, duration_us), recent
    playlist_text: str | None = None
    playlist_body: bytes | None = None
    delta_body: bytes | None = None
    timescale: int | None = None
    published_at: float | None = None  # monotonic time of the last publication
    slate: bool = False  # the last listed segment is the slate


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
        self.gaps = Counter(
            "mainevent_gap_segments_total",
            "MSNs listed as EXT-X-GAP because no pipeline delivered them in time",
            ["event", "rendition"],
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
            # Fine below 0.5 s: the goal is a p50 under 0.3 s.
            buckets=(0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10),
            registry=registry,
        )
        self.held = Gauge(
            "mainevent_origin_held_requests",
            "LL-HLS blocking playlist and preload-hint part requests held now",
            ["event"],
            registry=registry,
        )
        self.holds = Counter(
            "mainevent_origin_holds_total",
            "LL-HLS requests held (blocking playlist reloads, parts not produced yet) since start",
            ["event", "kind"],
            registry=registry,
        )
        self.media_by_class = Counter(
            "mainevent_origin_media_requests_by_class_total",
            "Segment and part requests by distance from the live edge (live, dvr) and outcome "
            "(served, or shed for concurrency/bandwidth: 503 + Retry-After)",
            ["event", "class", "outcome"],
            registry=registry,
        )
        self.degraded = Gauge(
            "mainevent_degraded",
            "1 while operators have switched the optional feature off for the event (degrade)",
            ["event", "feature"],
            registry=registry,
        )
        self.requests = Counter(
            "mainevent_origin_requests_total",
            "Origin requests by object type and status",
            ["type", "status"],
            registry=registry,
        )


def playlist_max_age(
    *, last_msn: int, segment_duration_ms: int, now_ms: int, half_td_s: int
) -> int:
    """Whole seconds a standard-mode media playlist may be cached: until the next segment can
    be listed at the earliest, never more than TD/2.

    Segment `last_msn + 1` ends at capture time (last_msn + 2)·D, so no playlist listing it
    exists before then. A copy cached for `floor(that − now)` seconds expires before it, in
    the shield and (with `Age` in whole seconds) at most a fraction of a second later at an
    edge. TD/2 regardless of the time (the RFC's figure) let shield and edge each keep the old
    playlist up to a second past the publication, and a player joining on such a copy stays
    that much further behind for its whole session. When the stream runs late (the next
    boundary is more than one segment in the past) the plain TD/2 applies, so a stalled event
    is not fetched through on every request.
    """
    until_ms = (last_msn + 2) * segment_duration_ms - now_ms
    if until_ms < -segment_duration_ms:
        return half_td_s
    return max(0, min(half_td_s, until_ms // 1000))


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
        latency: LatencyMode = "standard",
        part_target_ms: int = DEFAULT_PART_TARGET_MS,
        part_hold_back_ms: int | None = None,
        hold_back_ms: int | None = None,
        max_held_requests: int = DEFAULT_MAX_HELD,
        playlist_freshness: PlaylistFreshness = "half_td",
        pathways: Pathways | None = None,
        dvr_window_s: int = 0,
        archive: bool = False,
        vod_gaps: VodGaps = "exclude",
        shed_budget: Budget | None = None,
        live_edge_segments: int | None = None,
        retention_s: int | None = None,
    ) -> None:
        self.event_id = event_id
        self.playlist_freshness: PlaylistFreshness = playlist_freshness
        self.pathways = pathways
        """CDNs and steering server: manifests list one pathway per CDN (None: no steering)."""
        self.store = store
        self.segment_duration_ms = segment_duration_ms
        self.fps = fps
        self.metrics = metrics or Metrics(CollectorRegistry())
        self.monotonic = monotonic
        self.wall = wall
        self.target_duration_s = max(1, math.ceil(segment_duration_ms / 1000 - 1e-9))
        self.latency: LatencyMode = latency
        self.low_latency: LowLatency | None = None
        td_us = self.target_duration_s * 1_000_000
        if latency == "low":
            part_target_us = declared_part_target_us(part_target_ms, fps)
            self.low_latency = LowLatency(
                part_target_us=part_target_us,
                part_us=part_target_ms * 1000,
                part_hold_back_us=(
                    3 * part_target_us if part_hold_back_ms is None else part_hold_back_ms * 1000
                ),
                hold_back_us=3 * td_us if hold_back_ms is None else hold_back_ms * 1000,
                can_skip_until_us=6 * td_us,
            )
            # Delta updates only pay off when the window is longer than CAN-SKIP-UNTIL.
            window_segments = max(window_segments, -(-12 * td_us // (segment_duration_ms * 1000)))
        self.live_window_segments = window_segments
        """The live window without DVR: requests further behind the edge are DVR requests."""
        self.window_segments = window_segments
        self.dvr_window_s = 0
        self.dvr = False
        """The live playlists carry a DVR window longer than the live window."""
        self.can_skip_until_us: int | None = None
        self.dvr_start_offset_us: int | None = None
        self._dvr_settings(dvr_window_s)
        window_segments = self.window_segments
        self.archive: EventArchive | None = None
        if archive:
            self.archive = EventArchive(
                [spec.id for spec in renditions],
                target_duration_s=self.target_duration_s,
                segment_duration_us=segment_duration_ms * 1000,
                gaps=vod_gaps,
                can_skip_until_us=6 * td_us,
            )
        self.shedder = None if shed_budget is None else LoadShedder(shed_budget)
        self.live_edge_segments = (
            self.live_window_segments if live_edge_segments is None else live_edge_segments
        )
        self.retention = RetentionPolicy(retention_s)
        self.withdrawn = False
        """Retention ran out after the end: no playlist of the event is offered any more."""
        self._stored: dict[str, deque[StoredSegment]] = {spec.id: deque() for spec in renditions}
        self._retention_timer: asyncio.TimerHandle | None = None
        self._deleting: set[asyncio.Task[None]] = set()
        self.ended_wall = 0.0
        """Wall clock (epoch s) of the end; kept in the end record across restarts."""
        self.ended = False
        self._end_persisted = False
        self._end_lock = asyncio.Lock()
        self._refused_after_end: set[str] = set()
        holds = {k: self.metrics.holds.labels(event_id, k) for k in ("playlist", "part")}

        def held(key: Hashable) -> None:  # keys are ("playlist" | "part", rendition, msn, part)
            assert isinstance(key, tuple)
            holds[key[0]].inc()

        self.waiters = Waiters(max_held_requests, on_hold=held)
        waiters = self.waiters
        self.metrics.held.labels(event_id).set_function(lambda: waiters.held)
        self.metrics.degraded.labels(event_id, "dvr").set(0)
        self.started_wall = wall()
        self._r: dict[str, _Rendition] = {}
        for spec in renditions:
            window = RenditionWindow(
                target_duration_s=self.target_duration_s,
                window_segments=window_segments,
                segment_duration_us=segment_duration_ms * 1000,
                low_latency=self.low_latency,
            )
            self._r[spec.id] = _Rendition(spec=spec, window=window)
        self._master_text: str | None = None
        self.ready_event = asyncio.Event()  # set once every rendition has published
        self.highlights: tuple[Highlight, ...] = ()
        """Operator-marked points and ranges: EXT-X-DATERANGE / EventStream (`set_highlights`)."""
        self.on_end: Callable[[LiveEvent], None] | None = None
        """Called once `end()` has ended the windows (the ingest fan-out tells the origins)."""

    # -- queries --------------------------------------------------------------------------

    @property
    def rendition_ids(self) -> list[str]:
        return list(self._r)

    def rendition_spec(self, rendition: str) -> RenditionSpec:
        return self._r[rendition].spec

    def has_rendition(self, rendition: str) -> bool:
        return rendition in self._r

    def last_msn(self, rendition: str) -> int | None:
        return self._r[rendition].window.last_msn

    def next_msn_floor(self) -> int:
        """Smallest MSN a new encoder run may publish: above everything already published."""
        lasts = [r.window.last_msn for r in self._r.values() if r.window.last_msn is not None]
        return max(lasts) + 1 if lasts else 0

    def init_name(self, rendition: str) -> str | None:
        """Name of the init section the rendition's next segment will refer to."""
        return self._r[rendition].init_name

    def is_current_init(self, rendition: str, init: InitSection) -> bool:
        """Whether `init` is the one the rendition's listed media refers to now."""
        r = self._r[rendition]
        digest = hashlib.sha256(init.data).hexdigest()
        return r.init_name is not None and r.init_digests.get(digest) == r.init_name

    def window(self, rendition: str) -> RenditionWindow:
        return self._r[rendition].window

    def playlist(self, rendition: str) -> str | None:
        """The current media playlist text, or None before the first segment."""
        r = self._r[rendition]
        if r.window.last_msn is None:
            return None
        if r.playlist_text is None:
            r.playlist_text = render_media_playlist(
                with_highlights(
                    self._dvr(r.window.playlist(self.monotonic(), reports=self._reports(r))),
                    self.highlights,
                )
            )
        return r.playlist_text

    def playlist_body(self, rendition: str, *, skip: bool = False) -> bytes | None:
        """The playlist (or its delta update) as response bytes, rendered once per publication.

        Every request released by the same publication gets this same bytes object.
        """
        r = self._r[rendition]
        if r.window.last_msn is None:
            return None
        if skip and self.low_latency is not None:
            if r.delta_body is None:
                pl = r.window.playlist(self.monotonic(), skip=True, reports=self._reports(r))
                r.delta_body = render_media_playlist(with_highlights(pl, self.highlights)).encode()
            return r.delta_body
        if skip and self.can_skip_until_us is not None:
            if r.delta_body is None:
                pl = self._dvr(r.window.playlist(self.monotonic(), reports=self._reports(r)))
                pl = with_highlights(pl, self.highlights)
                r.delta_body = render_media_playlist(delta_update(pl)).encode()
            return r.delta_body
        if r.playlist_body is None:
            text = self.playlist(rendition)
            assert text is not None
            r.playlist_body = text.encode()
        return r.playlist_body

    def _dvr_settings(self, dvr_window_s: int) -> None:
        """Window depth and DVR controls for a DVR window of `dvr_window_s` (0 = none)."""
        if dvr_window_s < 0:
            raise ValueError(f"dvr_window_s must be >= 0, got {dvr_window_s}")
        td_us = self.target_duration_s * 1_000_000
        dvr_segments = -(-dvr_window_s * 1000 // self.segment_duration_ms)
        self.window_segments = max(self.live_window_segments, dvr_segments)
        self.dvr_window_s = dvr_window_s
        self.dvr = dvr_segments > self.live_window_segments
        # Delta updates (CAN-SKIP-UNTIL = 6 × TD, the least the RFC allows, so a reload is as
        # small as it can be) and the start at the live edge (3 × TD, HOLD-BACK) for standard
        # mode; LL-HLS playlists have both from their own server control already. Once
        # offered, `_HLS_skip=YES` stays accepted (answered by a full playlist if the window
        # no longer declares delta updates): a player that saw CAN-SKIP-UNTIL on its last
        # reload must not get a 400 because an operator shortened the window meanwhile.
        if self.dvr or self.low_latency is not None:
            self.can_skip_until_us = 6 * td_us
        self.dvr_start_offset_us = -3 * td_us if self.dvr and self.low_latency is None else None

    def set_dvr_window(self, dvr_window_s: int) -> None:
        """Change the DVR window while the event runs (its control-plane record changed).

        Shorter: the head of every live playlist (and the MPD's timeShiftBufferDepth) drops to
        the new depth at once; the removed segments stay downloadable for the RFC's period, and
        start-over/VOD keep everything. Longer: the playlists grow to the new depth as new
        segments come (what already left the window is not listed again: the media sequence
        never goes back). An ended event's playlists no longer change."""
        if self.ended or dvr_window_s == self.dvr_window_s:
            return
        before = self.dvr_window_s
        self._dvr_settings(dvr_window_s)
        now = self.monotonic()
        for r in self._r.values():
            r.window.resize(self.window_segments, now)
            r.playlist_text = r.playlist_body = r.delta_body = None
        log.info(
            "event %s: DVR window %d s -> %d s (%d segments)",
            self.event_id,
            before,
            dvr_window_s,
            self.window_segments,
        )

    def _dvr(self, pl: MediaPlaylist) -> MediaPlaylist:
        """The live playlist with the DVR controls (standard mode: CAN-SKIP-UNTIL, EXT-X-START)."""
        if not self.dvr or self.low_latency is not None:
            return pl
        return dvr_playlist(
            pl, can_skip_until_us=self.can_skip_until_us, start_offset_us=self.dvr_start_offset_us
        )

    def playlist_max_age_s(self, rendition: str) -> int:
        """`max-age` of a standard-mode media playlist answered now (see `playlist_max_age`)."""
        last = self._r[rendition].window.last_msn
        half_td = max(1, self.target_duration_s // 2)
        if last is None or self.playlist_freshness == "half_td" or self._r[rendition].window.ended:
            return half_td
        return playlist_max_age(
            last_msn=last,
            segment_duration_ms=self.segment_duration_ms,
            now_ms=round(self.wall() * 1000),
            half_td_s=half_td,
        )

    def _reports(self, r: _Rendition) -> list[RenditionReport]:
        if self.low_latency is None:
            return []
        reports = []
        for other in self._r.values():
            if other is r:
                continue
            pos = other.window.position()
            if pos is not None:
                reports.append(
                    RenditionReport(
                        uri=f"../{other.spec.id}/index.m3u8",
                        last_msn=pos.msn,
                        last_part=pos.index if pos.index >= 0 else None,
                    )
                )
        return reports

    def _changed(self, r: _Rendition) -> None:
        """A publication in `r`: drop cached texts (every rendition's, for the rendition
        reports, in LL mode) and release the held requests it satisfies."""
        if self.low_latency is None:
            r.playlist_text = r.playlist_body = r.delta_body = None
        else:
            for o in self._r.values():
                o.playlist_text = o.playlist_body = o.delta_body = None
        rid = r.spec.id
        window = r.window
        if self.waiters.held:

            def satisfied(key: Hashable) -> bool:
                assert isinstance(key, tuple)
                kind, rendition, msn, part = key
                if rendition != rid:
                    return False
                if window.ended:
                    return True
                if kind == "playlist":
                    return window.contains(msn, part)
                return window.part_state(msn, part) != "future"

            self.waiters.release_if(satisfied)

    async def wait_for_playlist(
        self, rendition: str, msn: int, part: int | None, hold_s: float
    ) -> bool:
        """Hold until the rendition's playlist lists segment `msn` (part `part`); False on timeout.

        Raises `HoldLimitReached` when the origin holds its maximum of requests already.
        """
        window = self._r[rendition].window
        if window.ended or window.contains(msn, part):
            return True
        return await self.waiters.wait(("playlist", rendition, msn, part), hold_s)

    def hold_playlist(
        self,
        rendition: str,
        msn: int,
        part: int | None,
        hold_s: float,
        on_done: Callable[[bool], None],
    ) -> Hold | None:
        """`wait_for_playlist` as a callback: None when the playlist lists it already, else a
        hold that calls `on_done(True)` from inside the publication that lists it (or
        `on_done(False)` after `hold_s`). Raises `HoldLimitReached` like `wait_for_playlist`."""
        window = self._r[rendition].window
        if window.ended or window.contains(msn, part):
            return None
        return self.waiters.hold(("playlist", rendition, msn, part), hold_s, on_done)

    async def wait_for_part(self, rendition: str, msn: int, index: int, hold_s: float) -> bool:
        """Hold until part `index` of segment `msn` is listed or will never be; False on timeout."""
        window = self._r[rendition].window
        if window.part_state(msn, index) != "future":
            return True
        return await self.waiters.wait(("part", rendition, msn, index), hold_s)

    async def end(self) -> None:
        """The event ended: every playlist gets EXT-X-ENDLIST; held requests are answered; the
        start-over playlists turn VOD and the VOD playlists and MPD exist from now on.

        The playlists change at once; the end record (`archive.EndRecord`) is on stable
        storage when this returns, so an origin restarted over the same store serves the VOD
        and never lists another live segment, without being told again. Idempotent."""
        self._end_now(self.wall())
        async with self._end_lock:
            if self._end_persisted:
                return
            record = EndRecord.of(self.ended_wall, {rid: self.last_msn(rid) for rid in self._r})
            await self.store.put_event_meta(self.event_id, END_RECORD, record.encode())
            self._end_persisted = True

    def _end_now(self, ended_wall: float) -> None:
        if self.ended:
            return
        self.ended = True
        self.ended_wall = ended_wall
        now = self.monotonic()
        for r in self._r.values():
            r.window.end(now)
        if self.archive is not None:
            self.archive.end(now)
        for r in self._r.values():
            self._changed(r)
        self.apply_retention()
        if self.on_end is not None:
            self.on_end(self)

    def mpd(self, utc_timing_url: str, steering: SteeringContext | None = None) -> str | None:
        """The live DASH MPD over the same CMAF segments, or None until every rendition published."""
        if not self.ready():
            return None
        reps = self._dash_representations()
        if reps is None:
            return None
        first_msn_listed = None
        for r in self._r.values():
            stats = r.window.statistics()
            if stats.media_sequence is not None:
                first_msn_listed = (
                    stats.media_sequence
                    if first_msn_listed is None
                    else max(first_msn_listed, stats.media_sequence)
                )
        d_ms = self.segment_duration_ms
        # Anchor the MPD timeline at the start of the UTC day of the stream: it stays the same
        # across origin restarts, and `$Number$` is the epoch MSN (number n covers [n·D, (n+1)·D)).
        first_msn = first_msn_listed or 0
        anchor_ms = (first_msn * d_ms) // 86_400_000 * 86_400_000
        info = MpdInfo(
            availability_start_ms=anchor_ms,
            publish_time_ms=round(self.wall() * 1000),
            segment_duration_ms=d_ms,
            start_number=anchor_ms // d_ms,
            # DVR off: DASH players' seekable range shrinks to the live window (what is behind
            # it answers 503 meanwhile).
            time_shift_buffer_ms=(
                (self.live_window_segments if self.dvr_off else self.window_segments) - 1
            )
            * d_ms,
            minimum_update_period_ms=d_ms,
            suggested_presentation_delay_ms=suggested_presentation_delay_ms(d_ms),
            min_buffer_ms=d_ms,
            utc_timing_url=utc_timing_url,
        )
        dash_steering = (
            None
            if self.pathways is None or steering is None
            else DashSteering.of(self.pathways, self.event_id, steering)
        )
        return insert_event_stream(
            render_mpd(info, reps, dash_steering), self.highlights, anchor_ms
        )

    def set_highlights(self, highlights: tuple[Highlight, ...]) -> None:
        """Replace the highlights; the next playlist and MPD carry them."""
        self.highlights = highlights
        for r in self._r.values():
            r.playlist_text = r.playlist_body = r.delta_body = None

    def is_available(self, rendition: str, msn: int) -> bool:
        """Whether segment `msn` may be served: the live/DVR window has it available, or a
        start-over/VOD playlist still on offer lists it."""
        if self._r[rendition].window.is_available(msn, self.monotonic()):
            return True
        return (
            self.archive is not None and not self.withdrawn and self.archive.lists(rendition, msn)
        )

    # -- DVR: classification, start-over, VOD, retention --------------------------------------

    def request_class(self, rendition: str, msn: int | None) -> RequestClass:
        """LIVE, or DVR for a segment more than `live_edge_segments` behind the live edge."""
        return classify(msn, self._r[rendition].window.last_msn, self.live_edge_segments)

    @property
    def dvr_off(self) -> bool:
        """Operators switched DVR off for the event (`set_dvr_off`)."""
        return self.shedder is not None and self.shedder.dvr_off

    def set_dvr_off(self, off: bool) -> None:
        """DVR off (the `degrade` command) or back on: while off, every segment or part more
        than `live_edge_segments` behind the live edge, and the start-over playlists, answer
        503 + Retry-After; the live edge is served as before and the archive keeps recording,
        so turning it back on loses nothing."""
        if self.shedder is None:
            if not off:
                return
            self.shedder = LoadShedder(Budget())  # no budget: refuses only while DVR is off
        self.shedder.dvr_off = off
        self.metrics.degraded.labels(self.event_id, "dvr").set(1 if off else 0)

    def startover_body(self, rendition: str, *, skip: bool = False) -> bytes | None:
        """The start-over playlist bytes (None: no archive kept, withdrawn or nothing yet)."""
        if self.archive is None or self.withdrawn:
            return None
        return self.archive.startover_body(rendition, self.monotonic(), skip=skip)

    def vod_body(self, rendition: str) -> bytes | None:
        """The post-event VOD playlist bytes (None before the end, or withdrawn)."""
        if self.archive is None or self.withdrawn:
            return None
        return self.archive.vod_body(rendition, self.monotonic())

    def variant_playlist(self, name: str) -> str | None:
        """The multivariant playlist whose media playlists are `<rendition>/<name>`
        (`startover.m3u8`, `vod.m3u8`): the live one with its media URIs renamed."""
        text = self.multivariant()
        return None if text is None else text.replace("/index.m3u8", f"/{name}")

    def vod_mpd(self) -> str | None:
        """The static post-event MPD (None before the end, or withdrawn)."""
        from mainevent.media.manifest.dash_vod import MpdRun, render_vod_mpd

        archive = self.archive
        if archive is None or self.withdrawn or not archive.ended or not self.ready():
            return None
        now = self.monotonic()
        reps = self._dash_representations()
        if reps is None:
            return None
        # Periods list the segments every rendition has: a segment one rendition alone lost
        # (still in the other renditions' HLS playlists) splits the Period there, and a new run
        # of any rendition (a cut, a new init section) starts a new Period.
        at: dict[str, dict[int, VodRun]] = {}
        for r in self._r:
            at[r] = {
                msn: run
                for run in archive.vod_runs(r, now, _msn_of_uri)
                for msn in range(run.first, run.first + run.count)
            }
        first, *others = at.values()
        runs: list[MpdRun] = []
        previous: tuple[int, ...] | None = None
        for msn in sorted(set(first).intersection(*others)):
            key = tuple(at[r][msn].first for r in at)
            last = runs[-1] if runs else None
            if last is not None and key == previous and last.first + last.count == msn:
                runs[-1] = MpdRun(last.first, last.count + 1, last.inits)
            else:
                runs.append(MpdRun(msn, 1, {r: f"{r}/{at[r][msn].init_uri}" for r in at}))
            previous = key
        if not runs:
            return None
        return render_vod_mpd(runs, reps, self.segment_duration_ms)

    def apply_retention(self) -> list[tuple[str, int]]:
        """Delete what retention allows now (never a listed segment); arm the next look.
        Returns the (rendition, msn) pairs scheduled for deletion."""
        if self.retention.retention_s is None:
            return []
        now_ms = round(self.wall() * 1000)
        if (
            self.archive is not None
            and self.archive.ended
            and not self.withdrawn
            and now_ms >= round(self.ended_wall * 1000) + self.retention.retention_s * 1000
        ):
            self.withdrawn = True
            log.info("event %s: retention over, playlists withdrawn", self.event_id)
        deleted: list[tuple[str, int]] = []
        deadline: int | None = None
        for rid, stored in self._stored.items():
            listed = self._listed_ranges(rid)
            due = set(self.retention.due(_past(stored, now_ms, self.retention), listed, now_ms))
            gone = []
            while stored and stored[0].msn in due:
                gone.append(stored.popleft().msn)
            if gone:
                deleted.extend((rid, m) for m in gone)
                self._spawn_delete(rid, gone)
            nd = self.retention.next_deadline(list(stored)[:1], listed)
            if nd is not None:
                deadline = nd if deadline is None else min(deadline, nd)
        if self.archive is not None and self.archive.ended and not self.withdrawn:
            end_deadline = round(self.ended_wall * 1000) + self.retention.retention_s * 1000
            deadline = end_deadline if deadline is None else min(deadline, end_deadline)
        self._arm_retention(deadline, now_ms)
        return deleted

    def _listed_ranges(self, rendition: str) -> list[range]:
        if self.withdrawn:
            return []
        out = []
        stats = self._r[rendition].window.statistics()
        if stats.media_sequence is not None and stats.last_msn is not None:
            # Removed segments stay downloadable about one window longer (SPEC §1): keep a
            # whole window's worth behind the head as well.
            out.append(
                range(max(0, stats.media_sequence - stats.listed_segments - 1), stats.last_msn + 1)
            )
        if self.archive is not None:
            listed = self.archive.listed_msns(rendition)
            if listed is not None:
                out.append(listed)
        return out

    def _spawn_delete(self, rendition: str, msns: list[int]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (sans-IO tests): the caller deletes
        task = loop.create_task(self.store.delete(self.event_id, rendition, msns))
        self._deleting.add(task)
        task.add_done_callback(self._deleted)

    def _deleted(self, task: asyncio.Task[None]) -> None:
        self._deleting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("event %s: retention delete failed: %s", self.event_id, task.exception())

    def _arm_retention(self, deadline_ms: int | None, now_ms: int) -> None:
        if self._retention_timer is not None:
            self._retention_timer.cancel()
            self._retention_timer = None
        if deadline_ms is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        delay = max(0.05, (deadline_ms - now_ms) / 1000)
        self._retention_timer = loop.call_later(delay, self.apply_retention)

    def _dash_representations(self) -> list[DashRepresentation] | None:
        reps = []
        for r in self._r.values():
            if r.timescale is None or r.init_name is None or r.codec is None:
                return None
            peak, _avg = self._peak_avg(r)
            reps.append(
                DashRepresentation(
                    id=r.spec.id,
                    kind="video" if r.spec.kind == "video" else "audio",
                    codecs=r.codec,
                    bandwidth=peak,
                    timescale=r.timescale,
                    init=f"{r.spec.id}/{r.init_name}",
                    width=r.width,
                    height=r.height,
                    frame_rate=self.fps if r.spec.kind == "video" else None,
                    audio_sampling_rate=r.sample_rate,
                )
            )
        return reps

    def ready(self) -> bool:
        """Every rendition has an init section and at least one published segment."""
        return all(r.codec is not None and r.window.last_msn is not None for r in self._r.values())

    def multivariant(self, steering: SteeringContext | None = None) -> str | None:
        """The multivariant playlist, or None until every rendition has published.

        With `pathways` configured and a `steering` context, every variant and rendition is
        listed once per CDN (absolute URLs, with the context's token) and the steering server is
        named; `ManifestError` if the context names an unknown pathway."""
        if not self.ready():
            return None
        if self.pathways is not None and steering is not None:
            return render_multivariant_playlist(
                steered_multivariant(self._build_master(), self.pathways, self.event_id, steering)
            )
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

    async def on_init(self, rendition: str, init: InitSection, *, name: str | None = None) -> str:
        """Store an encoder run's init section; returns the name segments refer to.

        `name`: the name the packager gave it (an origin fed by ingest keeps it, so every
        origin's playlists name the same bytes the same way)."""
        r = self._r[rendition]
        if self.ended and r.init_name is not None:
            # An encoder still (or again, after a restart) running after the end: nothing it
            # makes is listed, and the VOD and MPD keep naming the init they were made with.
            return r.init_name
        digest = hashlib.sha256(init.data).hexdigest()
        known = r.init_digests.get(digest)
        if known is None:
            name = name or ("init.mp4" if not r.init_digests else f"init-{digest[:12]}.mp4")
        else:
            name = known
        if known is None:
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
        r.timescale, r.sample_rate = init.track.timescale, init.track.sample_rate
        return name

    def on_part(self, rendition: str, part: Part) -> None:
        """Keep a completed part in memory, then (LL-HLS mode) list it and release its waiters."""
        r = self._r[rendition]
        if r.window.ended:
            return
        self.store.put_part(self.event_id, rendition, part.msn, part.index, part.data)
        if self.low_latency is None or r.timescale is None:
            return
        published = PublishedPart(
            index=part.index,
            duration_us=part.duration * 1_000_000 // r.timescale,
            independent=part.independent,
        )
        try:
            r.window.add_part(part.msn, published, self.monotonic())
        except WindowError as exc:
            # The segment is still published whole; only its early listing is lost.
            log.warning("event %s rendition %s: part not listed: %s", self.event_id, rendition, exc)
            return
        self._changed(r)

    async def on_segment(
        self,
        rendition: str,
        segment: Segment,
        *,
        suspect: str | None = None,
        slate_parts: list[bytes] | None = None,
    ) -> None:
        """Store a validated segment whole, then publish it in the rendition's window.

        `suspect` (damaged input during its capture) is logged: with a single pipeline there
        is no better copy, and a damaged picture beats a hole in the stream. `slate_parts`:
        the segment is the slate standing in for lost input (its parts' bytes, stored for
        LL-HLS part requests); slate runs are set off by EXT-X-DISCONTINUITY on both ends.
        """
        r = self._r[rendition]
        if suspect:
            log.warning(
                "event %s rendition %s: segment %d published with damaged input (%s)",
                self.event_id,
                rendition,
                segment.msn,
                suspect,
            )
        if r.window.ended:
            # The event ended (on command, or before a restart): the encoder may still be
            # running; nothing more is stored or listed, so the VOD stays what it was.
            self._refuse_after_end(rendition, segment.msn)
            return
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
        ll = self.low_latency
        if ll is not None and any(not 0 < d <= ll.part_target_us for d, _ in parts):
            # An encoder cutting parts longer than the declared PART-TARGET (misconfigured,
            # or restarted with other settings): the segment is listed whole, without parts,
            # rather than in a playlist that breaks the PART-TARGET rule.
            longest = max(d for d, _ in parts)
            log.warning(
                "event %s rendition %s: segment %d listed without parts: a part lasts %d µs, "
                "more than the part target (%d µs)",
                self.event_id,
                rendition,
                segment.msn,
                longest,
                ll.part_target_us,
            )
            parts = ()
        record = SegmentRecord(
            msn=segment.msn,
            duration_us=duration_us,
            program_date_time_ms=segment.program_date_time_ms,
            init_name=r.init_name,
            size=len(segment.data),
            parts=parts,
            discontinuity=(slate_parts is not None) != r.slate,
            slate=slate_parts is not None,
        )
        if slate_parts is not None:
            for i, data in enumerate(slate_parts):
                self.store.put_part(self.event_id, rendition, segment.msn, i, data)
        await self.store.put_segment(self.event_id, rendition, record, segment.data)
        if r.window.ended:
            # Ended while it was being stored: it stays on disk unlisted (a restart lists only
            # up to the end record's last MSN).
            self._refuse_after_end(rendition, segment.msn)
            return
        r.slate = slate_parts is not None
        self._publish(r, record)
        end_s = (segment.start + segment.duration) / segment.timescale
        labels = (self.event_id, rendition)
        self.metrics.segments.labels(*labels).inc()
        self.metrics.segment_bytes.labels(*labels).inc(len(segment.data))
        self.metrics.last_msn.labels(*labels).set(segment.msn)
        self.metrics.publish_delay.labels(*labels).observe(max(0.0, self.wall() - end_s))

    def _refuse_after_end(self, rendition: str, msn: int) -> None:
        """Count a segment handed in after the end (logged once per rendition: a restarted
        origin's encoder may keep producing them)."""
        self.metrics.rejected.labels(self.event_id, rendition, "event ended").inc()
        if rendition not in self._refused_after_end:
            self._refused_after_end.add(rendition)
            log.warning(
                "event %s rendition %s: segment %d (and any later) not published: the event "
                "ended; its playlists stay VOD",
                self.event_id,
                rendition,
                msn,
            )

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
            discontinuity=record.discontinuity,
        )
        r.window.publish(seg, now)
        if self.archive is not None:
            self.archive.publish(r.spec.id, seg, now, slate=record.slate)
        if self.retention.retention_s is not None:
            end_ms = record.program_date_time_ms + record.duration_us // 1000
            self._stored[r.spec.id].append(StoredSegment(record.msn, end_ms))
        for msn in r.window.expired(now):
            self.store.forget(self.event_id, r.spec.id, [msn])
        if self.retention.retention_s is not None:
            self.apply_retention()
        r.sizes.append((record.size, record.duration_us))
        del r.sizes[:-32]
        self._changed(r)
        r.published_at = now
        if len(r.sizes) <= 3:
            self._master_text = None  # bandwidth figures settle over the first segments
        if not self.ready_event.is_set() and self.ready():
            self.ready_event.set()

    def publish_gap(self, rendition: str, msn: int) -> bool:
        """List `msn` (and any MSN skipped before it) as EXT-X-GAP: no pipeline delivered it.

        Keeps the live window advancing through a total loss of input; False when nothing
        can be listed yet (no init section) or `msn` is not after the last listed segment.
        """
        r = self._r[rendition]
        last = r.window.last_msn
        if r.window.ended or r.init_name is None or (last is not None and msn <= last):
            return False
        d_us = self.segment_duration_ms * 1000
        gap = PublishedSegment(
            msn=msn,
            duration_us=d_us,
            program_date_time_ms=msn * d_us // 1000,
            init_uri=r.init_name,
            gap=True,
        )
        now = self.monotonic()
        r.window.publish(gap, now)
        if self.archive is not None:
            self.archive.publish(rendition, gap, now, slate=False)
        for old in r.window.expired(now):
            self.store.forget(self.event_id, r.spec.id, [old])
        self.metrics.gaps.labels(self.event_id, rendition).inc()
        self._changed(r)
        return True

    def on_rejected(
        self,
        rendition: str,
        msn: int,
        reason: str,
        *,
        drop_parts: bool = True,
        source: str | None = None,
    ) -> None:
        """Count and log a segment that failed validation; it is never published."""
        log.warning(
            "event %s rendition %s: segment %d%s rejected: %s",
            self.event_id,
            rendition,
            msn,
            f" from {source}" if source else "",
            reason,
        )
        short = reason.split(":", 1)[0][:60]
        self.metrics.rejected.labels(self.event_id, rendition, short).inc()
        r = self._r[rendition]
        if drop_parts and self.low_latency is not None:
            r.window.drop_parts(msn)
            self._changed(r)

    def restore(self) -> int:
        """Re-list what the store holds (after a restart); returns the number of segments.

        An event that ended before (its end record is in the store) comes back ended: listed
        up to the last MSN it had at the end, ENDLIST, VOD on offer, retention counted from
        the recorded end."""
        from mainevent.media.cmaf import CmafError, parse_init

        end = self._stored_end()
        count = 0
        for rid, r in self._r.items():
            inits = self.store.inits(self.event_id, rid)
            for name, data in inits.items():
                r.init_digests[hashlib.sha256(data).hexdigest()] = name
            limit = None if end is None else end.last_msn(rid)
            for rec in self.store.records(self.event_id, rid):
                if end is not None and (limit is None or rec.msn > limit):
                    break  # stored after the end: never listed
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
                r.timescale, r.sample_rate = track.timescale, track.sample_rate
        self._master_text = None
        if self.ready():
            self.ready_event.set()
        if end is not None:
            self._end_now(end.ended_wall)
            self._end_persisted = True
            log.warning(
                "event %s ended before this start (end record in the store): serving it as "
                "VOD; a new live event needs another event id or a fresh data dir",
                self.event_id,
            )
        return count

    def _stored_end(self) -> EndRecord | None:
        data = self.store.event_meta(self.event_id, END_RECORD)
        if data is None:
            return None
        try:
            return EndRecord.decode(data)
        except ValueError as exc:
            # Written whole (temp + rename), so this is damage, not a torn write: the event
            # did end; keep everything stored and count retention from now.
            log.error(
                "event %s: unreadable %s (%s); treating the event as ended",
                self.event_id,
                END_RECORD,
                exc,
            )
            return EndRecord.of(self.wall(), {rid: 2**62 for rid in self._r})


def _past(
    stored: deque[StoredSegment], now_ms: int, policy: RetentionPolicy
) -> list[StoredSegment]:
    """The head of `stored` (MSN order = capture order) whose retention may have run out."""
    assert policy.retention_s is not None
    limit = now_ms - policy.retention_s * 1000
    return list(itertools.takewhile(lambda seg: seg.end_ms <= limit, stored))


def _msn_of_uri(uri: str) -> int:
    return int(uri.split("/")[-1].split(".", 1)[0])
