"""The origin's ingest: CMAF objects PUT by the packager's fan-out (DASH-IF live media ingest).

    PUT /ingest/<event>/<rendition>/init.mp4 | init-<12 hex>.mp4   CMAF header
    PUT /ingest/<event>/<rendition>/<msn>.<k>.m4s                  CMAF chunk (LL-HLS part k)
    PUT /ingest/<event>/<rendition>/<msn>.m4s                      CMAF segment (its chunks)
    PUT /ingest/<event>/<rendition>/end                            the rendition ended

Each object is validated here before the LiveEvent stores and lists it (write before publish,
on every origin): the header must parse and be the rendition's kind of track (and match its
digest name); a chunk must be one well-formed moof + mdat of the current header's track inside
segment `msn`'s epoch interval; a segment must be its contiguous chunks, start at a keyframe,
start in interval `msn` and last the segment duration (the cutter's rules). Each origin then
derives its playlists from the objects alone (epoch MSNs: the same numbers everywhere; a segment
it never got is listed as EXT-X-GAP when the next one comes).

Writes are idempotent: 201 new; 204 when the origin holds these very bytes under that name (a
retry); 409 `conflict` for other bytes under a taken name or an MSN already listed; 409
`init_required` for media before any header (the sender then re-sends the header). Errors use
the `{"error": {...}}` shape of the APIs; `Authorization: Bearer <secret>` when configured.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mainevent.media.cmaf import (
    CmafError,
    InitSection,
    Part,
    Segment,
    TrackDefaults,
    iter_boxes,
    parse_fragment,
    parse_init,
    parse_track_defaults,
)
from mainevent.media.origin.live import LiveEvent
from mainevent.media.store import StoreError

__all__ = ["IngestError", "IngestReceiver", "parse_part", "parse_segment", "with_ingest"]

SLATE_HEADER = "mainevent-slate"
BACKLOG_HEADER = "mainevent-backlog"
HIDDEN_HEADER = "mainevent-hidden"
MAX_OBJECT_BYTES = 64 * 1024 * 1024
_INIT = re.compile(r"^init(?:-(?P<digest>[0-9a-f]{12}))?\.mp4$")
_SEGMENT = re.compile(r"^(?P<msn>\d{1,18})\.m4s$")
_PART = re.compile(r"^(?P<msn>\d{1,18})\.(?P<part>\d{1,4})\.m4s$")


class IngestError(Exception):
    """An object the origin refuses: `status`, machine-readable `reason`, a message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class _Chunk:
    start: int
    duration: int
    independent: bool
    max_sample: int
    data: bytes


def _chunks(data: bytes, defaults: TrackDefaults) -> list[_Chunk]:
    """Every moof + mdat pair of `data`, parsed (ValidationError-free bytes only)."""
    try:
        boxes = list(iter_boxes(data))
    except CmafError as exc:
        raise IngestError(422, "invalid_media", f"not ISO BMFF: {exc}") from None
    if not boxes or len(boxes) % 2:
        raise IngestError(422, "invalid_media", "expected moof + mdat pairs")
    out = []
    for moof, mdat in zip(boxes[::2], boxes[1::2], strict=True):
        if (moof.type, mdat.type) != ("moof", "mdat"):
            raise IngestError(
                422, "invalid_media", f"expected moof + mdat, found {moof.type} + {mdat.type}"
            )
        try:
            start, samples = parse_fragment(
                data[moof.offset : moof.end], data[mdat.offset : mdat.end], defaults
            )
        except CmafError as exc:
            raise IngestError(
                422, "invalid_media", f"fragment at byte {moof.offset}: {exc}"
            ) from None
        if not samples:
            raise IngestError(422, "invalid_media", f"fragment at byte {moof.offset} is empty")
        out.append(
            _Chunk(
                start=start,
                duration=sum(s.duration for s in samples),
                independent=samples[0].is_sync,
                max_sample=max(s.duration for s in samples),
                data=data[moof.offset : mdat.end],
            )
        )
    return out


def _check_interval(start: int, msn: int, seg_ticks: int, what: str) -> None:
    if start // seg_ticks != msn:
        raise IngestError(
            422,
            "wrong_time",
            f"{what} starts at tick {start}, in segment {start // seg_ticks}'s interval, "
            f"not in segment {msn}'s",
        )


def parse_part(
    data: bytes, *, msn: int, index: int, defaults: TrackDefaults, timescale: int, segment_ms: int
) -> Part:
    """A CMAF chunk as LL-HLS part `index` of segment `msn`; `IngestError` when it is not one."""
    chunks = _chunks(data, defaults)
    if len(chunks) != 1:
        raise IngestError(422, "invalid_media", f"a part is one moof + mdat, got {len(chunks)}")
    c = chunks[0]
    _check_interval(c.start, msn, segment_ms * timescale // 1000, f"part {msn}.{index}")
    return Part(msn, index, c.start, c.duration, c.independent, data)


def parse_segment(
    data: bytes,
    *,
    msn: int,
    defaults: TrackDefaults,
    timescale: int,
    segment_ms: int,
    video: bool,
) -> Segment:
    """A CMAF segment `msn` (its chunks, contiguous, keyframe first, the segment's duration)."""
    chunks = _chunks(data, defaults)
    seg_ticks = segment_ms * timescale // 1000
    first = chunks[0]
    _check_interval(first.start, msn, seg_ticks, f"segment {msn}")
    if video and not first.independent:
        raise IngestError(422, "invalid_media", f"segment {msn} does not start with a keyframe")
    end = first.start
    for i, c in enumerate(chunks):
        if c.start != end:
            raise IngestError(
                422, "invalid_media", f"chunk {i} starts at tick {c.start}, expected {end}"
            )
        end += c.duration
    duration = end - first.start
    tolerance = max(max(c.max_sample for c in chunks), first.start - msn * seg_ticks)
    if abs(duration - seg_ticks) > tolerance:
        raise IngestError(
            422,
            "invalid_media",
            f"segment {msn} lasts {duration} ticks, expected {seg_ticks}±{tolerance}",
        )
    parts = tuple(
        Part(msn, i, c.start, c.duration, c.independent, c.data) for i, c in enumerate(chunks)
    )
    return Segment(msn, first.start, duration, timescale, parts, data)


def _error(err: IngestError) -> Response:
    body = {"error": {"reason": err.reason, "message": err.message, "retryable": False}}
    return Response(
        json.dumps(body),
        err.status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


class IngestReceiver:
    """Validates PUT objects and hands them to the events' LiveEvents (`routes()`)."""

    def __init__(
        self,
        events: Mapping[str, LiveEvent],
        *,
        secret: str | None = None,
        max_bytes: int = MAX_OBJECT_BYTES,
        hide: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.events = events
        self.secret = secret
        self.max_bytes = max_bytes
        self.hide = hide
        """Hides (True) or shows (False) an event from viewers (the origin's rehearsal gate:
        404 no-store, so the shield asks the next origin)."""
        self._defaults: dict[tuple[str, str, str], tuple[TrackDefaults, InitSection]] = {}
        self._ended: dict[str, set[str]] = {}  # event → renditions whose `end` came
        self._hidden: dict[str, set[str]] = {}  # event → why it is hidden now

    def _why(self, event_id: str, reason: str, on: bool) -> None:
        reasons = self._hidden.setdefault(event_id, set())
        before = bool(reasons)
        if on:
            reasons.add(reason)
        else:
            reasons.discard(reason)
        if bool(reasons) != before and self.hide is not None:
            self.hide(event_id, bool(reasons))

    def catch_up(self, event_id: str) -> None:
        """`event_id` was restored from disk after a restart: it may lack what was published
        meanwhile, so it is hidden until a PUT says nothing more is queued for this origin."""
        self._why(event_id, "catching_up", True)

    def caught_up(self, event_id: str) -> None:
        """Nothing more is queued for us (or no sender came for a while)."""
        self._why(event_id, "catching_up", False)

    def routes(self) -> list[Route]:
        return [Route("/ingest/{event}/{rendition}/{name}", self.put, methods=["PUT", "POST"])]

    async def put(self, request: Request) -> Response:
        try:
            status = await self._put(request)
        except IngestError as err:
            return _error(err)
        eid = request.path_params["event"]  # a known event: `_put` refused any other
        if request.headers.get(BACKLOG_HEADER) == "0":
            self.caught_up(eid)
        # The packager's own visibility (an event in rehearsal is hidden there): the same here.
        self._why(eid, "sender", request.headers.get(HIDDEN_HEADER) == "1")
        return Response(b"", status, headers={"Cache-Control": "no-store"})

    async def _put(self, request: Request) -> int:
        if self.secret is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.secret}".encode()):
                raise IngestError(
                    401, "unauthorized", "ingest needs 'Authorization: Bearer <secret>'"
                )
        p = request.path_params
        event = self.events.get(p["event"])
        if event is None:
            raise IngestError(404, "unknown_event", f"this origin serves no event {p['event']!r}")
        rendition, name = p["rendition"], p["name"]
        if not event.has_rendition(rendition):
            raise IngestError(404, "unknown_rendition", f"event has no rendition {rendition!r}")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise IngestError(413, "too_large", f"objects are at most {self.max_bytes} bytes")
        data = await request.body()
        if name == "end":
            return await self._end(event, rendition)
        if len(data) > self.max_bytes:
            raise IngestError(413, "too_large", f"objects are at most {self.max_bytes} bytes")
        if not data:
            raise IngestError(422, "invalid_media", "empty body")
        if m := _INIT.match(name):
            return await self._init(event, rendition, name, m["digest"], data)
        if m := _PART.match(name):
            return await self._part(event, rendition, name, int(m["msn"]), int(m["part"]), data)
        if m := _SEGMENT.match(name):
            slate = request.headers.get(SLATE_HEADER) == "1"
            return await self._segment(event, rendition, name, int(m["msn"]), data, slate)
        raise IngestError(
            400, "bad_name", "names are init.mp4, init-<12 hex>.mp4, <msn>.m4s or <msn>.<k>.m4s"
        )

    async def _end(self, event: LiveEvent, rendition: str) -> int:
        """`end` of one rendition; the event ends (EXT-X-ENDLIST) once every rendition's came,
        so no origin ends a rendition before its last segment arrived."""
        if event.window(rendition).ended:
            return 204
        ended = self._ended.setdefault(event.event_id, set())
        ended.add(rendition)
        if ended >= set(event.rendition_ids):
            await event.end()
        return 201

    async def _same(self, event: LiveEvent, rendition: str, name: str, data: bytes) -> bool | None:
        """Whether the origin holds `data` under `name` (None: it holds nothing there)."""
        held = await event.store.read(event.event_id, rendition, name)
        return None if held is None else held == data

    async def _init(
        self, event: LiveEvent, rendition: str, name: str, digest: str | None, data: bytes
    ) -> int:
        sha = hashlib.sha256(data).hexdigest()
        if digest is not None and sha[:12] != digest:
            raise IngestError(422, "invalid_media", f"{name} does not match its content's digest")
        try:
            init = parse_init(data)
            defaults = parse_track_defaults(data)
        except CmafError as exc:
            raise IngestError(422, "invalid_media", f"not a CMAF header: {exc}") from None
        kind = event.rendition_spec(rendition).kind
        if init.track.kind != kind:
            raise IngestError(
                422, "invalid_media", f"{rendition} is {kind}; the header is {init.track.kind}"
            )
        same = await self._same(event, rendition, name, data)
        if same is False:
            raise IngestError(409, "conflict", f"{name} is held with other bytes")
        await event.on_init(rendition, init, name=name)
        self._defaults[(event.event_id, rendition, name)] = (defaults, init)
        return 204 if same else 201

    async def _track(self, event: LiveEvent, rendition: str) -> tuple[TrackDefaults, InitSection]:
        name = event.init_name(rendition)
        if name is None:
            raise IngestError(409, "init_required", f"{rendition}: no init section yet")
        key = (event.event_id, rendition, name)
        known = self._defaults.get(key)
        if known is None:  # restored from disk after a restart
            data = await event.store.read(event.event_id, rendition, name)
            if data is None:
                raise IngestError(409, "init_required", f"{rendition}: {name} is not stored")
            known = self._defaults[key] = (parse_track_defaults(data), parse_init(data))
        return known

    async def _part(
        self, event: LiveEvent, rendition: str, name: str, msn: int, index: int, data: bytes
    ) -> int:
        same = await self._same(event, rendition, name, data)
        if same is not None:
            if same:
                return 204
            raise IngestError(409, "conflict", f"{name} is held with other bytes")
        last = event.last_msn(rendition)
        if last is not None and msn <= last:
            raise IngestError(409, "conflict", f"segment {msn} is listed already")
        defaults, init = await self._track(event, rendition)
        part = parse_part(
            data,
            msn=msn,
            index=index,
            defaults=defaults,
            timescale=init.track.timescale,
            segment_ms=event.segment_duration_ms,
        )
        event.on_part(rendition, part)
        return 201

    async def _segment(
        self, event: LiveEvent, rendition: str, name: str, msn: int, data: bytes, slate: bool
    ) -> int:
        last = event.last_msn(rendition)
        if last is not None and msn <= last:
            same = await self._same(event, rendition, name, data)
            if same:
                return 204
            raise IngestError(
                409, "conflict", f"segment {msn} is listed already (other bytes, or a gap)"
            )
        defaults, init = await self._track(event, rendition)
        segment = parse_segment(
            data,
            msn=msn,
            defaults=defaults,
            timescale=init.track.timescale,
            segment_ms=event.segment_duration_ms,
            video=init.track.kind == "video",
        )
        slate_parts = [p.data for p in segment.parts] if slate else None
        try:
            await event.on_segment(rendition, segment, slate_parts=slate_parts)
        except StoreError as exc:
            raise IngestError(503, "store_failed", f"segment {msn} not stored: {exc}") from None
        if event.last_msn(rendition) != msn:
            raise IngestError(409, "conflict", f"segment {msn} was not listed (see the log)")
        return 201


def with_ingest(app: Starlette, receiver: IngestReceiver) -> Starlette:
    """`app` (the origin's, from `create_app`) with the ingest routes in front of its own."""
    for route in reversed(receiver.routes()):
        app.router.routes.insert(0, route)
    return app
