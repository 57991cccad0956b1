"""The origin: an ASGI app serving the live event's playlists and media (ARCHITECTURE.md URLs).

    /live/<event>/master.m3u8                multivariant playlist
    /live/<event>/manifest.mpd               DASH MPD (same CMAF media)
    /live/<event>/<rendition>/index.m3u8     media playlist (LL-HLS: _HLS_msn, _HLS_part, _HLS_skip)
    /live/<event>/<rendition>/init*.mp4      CMAF init section
    /live/<event>/<rendition>/<msn>.m4s      segment
    /live/<event>/<rendition>/<msn>.<k>.m4s  LL-HLS part
    /live/<event>/startover.m3u8, /live/<event>/<rendition>/startover.m3u8
                                             start-over (EVENT) playlists, VOD at the end
    /live/<event>/vod.m3u8, /live/<event>/<rendition>/vod.m3u8, /live/<event>/vod.mpd
                                             post-event VOD (404 before the end)
    /player/, /static/...                    web player
    /healthz, /metrics
    /time                                    server clock, ISO 8601 (DASH UTCTiming)
    /rehearsal/<key>/<event>/...             an event in rehearsal (same names as /live/;
                                             `/live/<event>/` is 404 until it goes live)

In low-latency mode, blocking playlist reloads and requests for a part not yet produced (the
preload hint) are held until the part lands, for at most 3 × target duration (then 503); the
rules are in `blocking.py`, the waiting in `LiveEvent`. Served by uvicorn with the origin's
protocol (`protocol.py`, as `mainevent up` does), media playlist GETs are answered by the
protocol itself through `Origin.playlist_request`; this app serves everything else.

Names are matched by strict patterns and never joined into file paths as given, so there is no
path traversal. Unknown and expired objects are 404 with a short negative TTL (1 s); objects
that may still be published (future segments and parts) are 404 `no-store`, so no shield or
edge keeps the 404 once a playlist lists them.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from mainevent.common.tokens import TokenGate, TokenVerifier, split_token_path
from mainevent.media.manifest.errors import ManifestError
from mainevent.media.manifest.pathways import SteeringContext
from mainevent.media.origin.blocking import (
    HoldLimitReached,
    Rejection,
    cache_control,
    check_directives,
    parse_directives,
)
from mainevent.media.origin.clips import ClipService
from mainevent.media.origin.live import LiveEvent
from mainevent.media.shedding import DVR_OFF_RETRY_AFTER_S, Admission, ShedReason, shed_message

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
MPD_TYPE = "application/dash+xml"
TOKEN_SCOPE_KEY = "mainevent.token"
"""ASGI scope key: (token, session id) of a request that came with a valid playback token."""


def _steering(event: LiveEvent, request: Request) -> SteeringContext | Response | None:
    """The request's steering context (token, session, `?pathway=`); None without steering
    configured or when the request names neither; or a 400 naming what was wrong."""
    if event.pathways is None:
        return None
    token, session = request.scope.get(TOKEN_SCOPE_KEY, (None, None))
    pathway = request.query_params.get("pathway")
    if token is None and pathway is None:
        # A bare /live/ manifest stays the one-CDN playlist every existing client and cache
        # knows; steering is for requests naming a session (token) or a starting pathway.
        return None
    ctx = SteeringContext(token=token, session_id=session, pathway=pathway)
    try:
        ctx.validate(event.pathways)
    except ManifestError as exc:
        return PlainTextResponse(
            f"bad request: {exc}\n", 400, headers={"Cache-Control": "no-store"}
        )
    return ctx


def _manifest_cache(ctx: SteeringContext | None, shared: str) -> str:
    # A manifest carrying one viewer's token (or their starting pathway) is theirs alone.
    if ctx is not None and (ctx.token is not None or ctx.pathway is not None):
        return "private, no-store"
    return shared


_PLAYLIST = PLAYLIST_TYPE.encode()
_TEXT = b"text/plain; charset=utf-8"
_SEGMENT = re.compile(r"^(?P<msn>\d{1,18})\.m4s$")
_PART = re.compile(r"^(?P<msn>\d{1,18})\.(?P<part>\d{1,4})\.m4s$")
_INIT = re.compile(r"^init(-[0-9a-f]{12})?\.mp4$")
IMMUTABLE = "public, max-age=31536000, immutable"
RawResponse = tuple[int, bytes, list[tuple[bytes, bytes]]]
"""Status, body and header list, as ASGI sends them."""


@dataclass(frozen=True, slots=True)
class PlaylistHold:
    """A blocking playlist reload to hold: until `rendition` lists `msn` (part `part`)."""

    event: LiveEvent
    rendition: str
    msn: int
    part: int | None
    skip: bool
    hold_s: int


def web_dir() -> Path:
    """Directory of the static player files (inside the installed package)."""
    return Path(str(resources.files("mainevent") / "web"))


class Origin:
    """Request handlers bound to the live events this origin serves."""

    def __init__(
        self,
        events: Mapping[str, LiveEvent],
        *,
        cors_origin: str = "*",
        health: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.events = events
        self.rehearsal: dict[str, str] = {}
        """Events in rehearsal → their rehearsal key: served only under
        `/rehearsal/<key>/<event>/...` (operators, preflight); `/live/<event>/...` is 404."""
        self.cors_origin = cors_origin
        self.health_extra = health
        self.started = time.monotonic()
        self._cors = cors_origin.encode("latin-1")
        self._counters: dict[tuple[int, str, int], Any] = {}
        self.sheds = any(e.shedder is not None for e in events.values())
        """Some event has a live-edge-first budget (`shed_early` runs before routing)."""

    def _headers(self, cache: str) -> dict[str, str]:
        return {"Cache-Control": cache, "Access-Control-Allow-Origin": self.cors_origin}

    def _count(self, event: LiveEvent | None, kind: str, status: int, n: int = 1) -> None:
        if event is not None:
            # Children cached: `labels()` costs a lock and a lookup per call, and the LL-HLS
            # release path counts thousands of responses in one go.
            key = (id(event.metrics), kind, status)
            child = self._counters.get(key)
            if child is None:
                child = self._counters[key] = event.metrics.requests.labels(kind, str(status))
            child.inc(n)

    def _not_found(
        self, event: LiveEvent | None, kind: str, what: str, *, not_yet: bool = False
    ) -> Response:
        """404. `not_yet`: the object may still be published (a future segment or part), so no
        cache may keep the 404: the playlist that lists it next must find it downloadable at
        once through every edge (a 1 s negative TTL at the shield and again at the edge kept
        such 404s up to ~3 s after the object was listed). Gone or unknown objects keep it 1 s."""
        self._count(event, kind, 404)
        cache = "no-store" if not_yet else "max-age=1"
        return PlainTextResponse(f"not found: {what}\n", 404, headers=self._headers(cache))

    def _half_td(self, event: LiveEvent) -> str:
        return f"max-age={max(1, event.target_duration_s // 2)}"

    async def master(self, request: Request) -> Response:
        event = self.events.get(request.path_params["event"])
        if event is None:
            return self._not_found(None, "master", f"event {request.path_params['event']!r}")
        ctx = _steering(event, request)
        if isinstance(ctx, Response):
            self._count(event, "master", 400)
            return ctx
        text = event.multivariant(ctx)
        if text is None:
            return self._starting(event, "master")
        self._count(event, "master", 200)
        cache = _manifest_cache(ctx, self._half_td(event))
        return Response(text, 200, media_type=PLAYLIST_TYPE, headers=self._headers(cache))

    def _error(self, event: LiveEvent, kind: str, status: int, reason: str) -> Response:
        self._count(event, kind, status)
        cache = cache_control(event.target_duration_s, blocking=False, error=True)
        return PlainTextResponse(f"{reason}\n", status, headers=self._headers(cache))

    def _busy(self, event: LiveEvent, kind: str) -> Response:
        # Not cached: the refusal is about this origin's load now, not about the object.
        self._count(event, kind, 503)
        headers = self._headers("no-store") | {"Retry-After": "1"}
        return PlainTextResponse(
            "too many held requests on this origin; retry shortly\n", 503, headers=headers
        )

    async def media_playlist(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Media playlists, as a bare ASGI endpoint: it skips Request/Response objects and
        sends prepared header bytes and the one shared body. (Under `mainevent up` the
        origin's HTTP protocol answers playlist GETs itself, see `protocol.py`; this path
        serves in-process clients and pipelined requests.)"""
        params = scope.get("path_params") or {}
        r = self.playlist_request(
            params.get("event", ""), params.get("rendition", ""), scope["query_string"]
        )
        if isinstance(r, PlaylistHold):
            t0 = time.perf_counter()
            try:
                ok = await r.event.wait_for_playlist(r.rendition, r.msn, r.part, r.hold_s)
            except HoldLimitReached:
                r = self.hold_refused(r.event)
            else:
                r = self.held_playlist(r, ok, time.perf_counter() - t0)
        status, body, headers = r
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _raw(
        self, status: int, body: bytes, content_type: bytes, cache: str, *extra: tuple[bytes, bytes]
    ) -> RawResponse:
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", cache.encode()),
            (b"access-control-allow-origin", self._cors),
            *extra,
        ]
        return status, body, headers

    def _raw_error(
        self,
        event: LiveEvent | None,
        status: int,
        reason: str,
        cache: str,
        *extra: tuple[bytes, bytes],
    ) -> RawResponse:
        self._count(event, "playlist", status)
        return self._raw(status, f"{reason}\n".encode(), _TEXT, cache, *extra)

    def playlist_request(
        self, event_id: str, rendition: str, query_bytes: bytes
    ) -> RawResponse | PlaylistHold:
        """The answer to a media playlist GET, or (LL-HLS blocking reload) what to hold it for.

        The caller holds a `PlaylistHold` (`LiveEvent.wait_for_playlist` / `hold_playlist`,
        for at most `hold_s`) and then asks `held_playlist` for the answer, or `hold_refused`
        when the origin holds its maximum already.
        """
        event = self.events.get(event_id)
        if event is None or not event.has_rendition(rendition):
            return self._raw_error(event, 404, f"not found: rendition {rendition!r}", "max-age=1")
        if event.withdrawn:
            return self._raw_error(
                event, 410, f"gone: the retention of event {event_id!r} ran out", "max-age=60"
            )
        window = event.window(rendition)
        last = window.last_msn
        if last is None:
            return self._raw_error(event, 404, "no segment published yet", "no-store")
        d = parse_directives(query_bytes.decode("latin-1"))
        if not isinstance(d, Rejection):
            d = check_directives(
                d,
                low_latency=event.low_latency is not None,
                ended=window.ended,
                last_msn=last,
                delta_updates=event.can_skip_until_us is not None,
            )
        td = event.target_duration_s
        if isinstance(d, Rejection):
            return self._raw_error(
                event, d.status, d.reason, cache_control(td, blocking=False, error=True)
            )
        if event.low_latency is None:
            self._count(event, "playlist", 200)
            body = event.playlist_body(rendition, skip=d.skip)
            assert body is not None
            age = event.playlist_max_age_s(rendition)
            return self._raw(200, body, _PLAYLIST, f"max-age={age}" if age else "max-age=0")
        if d.msn is not None:
            return PlaylistHold(event, rendition, d.msn, d.part, d.skip, 3 * td)
        self._count(event, "playlist", 200)
        body = event.playlist_body(rendition, skip=d.skip)
        assert body is not None
        return self._raw(200, body, _PLAYLIST, cache_control(td, blocking=False))

    def held_playlist(self, h: PlaylistHold, ok: bool, held_s: float) -> RawResponse:
        """The answer to a blocking reload once its hold ended: the playlist (`ok`) with
        `CMSD-Static: ht=<ms held>`, or 503 when it was not listed within `hold_s`."""
        event = h.event
        td = event.target_duration_s
        if not ok:
            return self._raw_error(
                event,
                503,
                f"segment {h.msn} part {h.part} not available within {h.hold_s} s",
                cache_control(td, blocking=False, error=True),
            )
        self._count(event, "playlist", 200)
        body = event.playlist_body(h.rendition, skip=h.skip)
        assert body is not None
        cmsd = (b"cmsd-static", b"ht=%d" % round(held_s * 1000))
        return self._raw(200, body, _PLAYLIST, cache_control(td, blocking=True), cmsd)

    def hold_refused(self, event: LiveEvent) -> RawResponse:
        """503 + Retry-After: the origin holds as many requests as it may."""
        # Not cached: the refusal is about this origin's load now, not about the object.
        return self._raw_error(
            event,
            503,
            "too many held requests on this origin; retry shortly",
            "no-store",
            (b"retry-after", b"1"),
        )

    async def mpd(self, request: Request) -> Response:
        event = self.events.get(request.path_params["event"])
        if event is None:
            return self._not_found(None, "mpd", f"event {request.path_params['event']!r}")
        ctx = _steering(event, request)
        if isinstance(ctx, Response):
            self._count(event, "mpd", 400)
            return ctx
        text = event.mpd(f"{request.base_url}time", ctx)
        if text is None:
            return self._starting(event, "mpd")
        self._count(event, "mpd", 200)
        cache = _manifest_cache(ctx, "max-age=1")
        return Response(text, 200, media_type=MPD_TYPE, headers=self._headers(cache))

    # -- DVR archive: start-over and post-event VOD (archive.py) -------------------------

    def _archive_refusal(
        self, event: LiveEvent | None, event_id: str, kind: str, vod: bool
    ) -> Response | None:
        """Why the event's start-over/VOD object cannot be served (404/410), or None."""
        if event is None:
            return self._not_found(None, kind, f"event {event_id!r}")
        if event.archive is None:
            return self._not_found(
                event, kind, f"event {event_id!r} keeps no start-over/VOD archive (dvr.archive off)"
            )
        if event.withdrawn:
            self._count(event, kind, 410)
            return PlainTextResponse(
                f"gone: the retention of event {event_id!r} ran out; its playlists are withdrawn\n",
                410,
                headers=self._headers("max-age=60"),
            )
        if not vod and event.dvr_off and not event.archive.ended:
            self._count(event, kind, 503)
            seconds = DVR_OFF_RETRY_AFTER_S
            headers = self._headers("no-store") | {"Retry-After": str(seconds)}
            return PlainTextResponse(
                shed_message(ShedReason.DVR_OFF, seconds), 503, headers=headers
            )
        if vod and not event.archive.ended:
            return self._not_found(
                event, kind, f"VOD of event {event_id!r}: the event has not ended yet", not_yet=True
            )
        return None

    def _archived(
        self, event: LiveEvent, kind: str, body: str | bytes, media_type: str, vod: bool
    ) -> Response:
        self._count(event, kind, 200)
        # A VOD playlist never changes once written; a start-over playlist grows like the live one.
        cache = "public, max-age=300" if vod else self._half_td(event)
        return Response(body, 200, media_type=media_type, headers=self._headers(cache))

    def _starting(self, event: LiveEvent, kind: str) -> Response:
        """503 + Retry-After: nothing published yet to describe."""
        self._count(event, kind, 503)
        headers = self._headers("no-store") | {"Retry-After": "1"}
        return PlainTextResponse(
            "stream starting: no segment published yet\n", 503, headers=headers
        )

    async def archive_master(self, request: Request) -> Response:
        """`/live/<event>/startover.m3u8` and `/live/<event>/vod.m3u8`."""
        event_id = request.path_params["event"]
        event = self.events.get(event_id)
        name = request.url.path.rsplit("/", 1)[1]
        vod = name == "vod.m3u8"
        refused = self._archive_refusal(event, event_id, "master", vod)
        if refused is not None:
            return refused
        assert event is not None
        text = event.variant_playlist(name)
        if text is None:
            return self._starting(event, "master")
        return self._archived(event, "master", text, PLAYLIST_TYPE, vod)

    async def archive_playlist(self, request: Request) -> Response:
        """`/live/<event>/<rendition>/startover.m3u8` (`_HLS_skip` for delta updates) and
        `/live/<event>/<rendition>/vod.m3u8`."""
        event_id = request.path_params["event"]
        rendition = request.path_params["rendition"]
        event = self.events.get(event_id)
        vod = request.url.path.endswith("/vod.m3u8")
        refused = self._archive_refusal(event, event_id, "playlist", vod)
        if refused is not None:
            return refused
        assert event is not None
        if not event.has_rendition(rendition):
            return self._not_found(event, "playlist", f"rendition {rendition!r}")
        d = parse_directives(request.url.query)
        if not isinstance(d, Rejection) and d.blocking:
            d = Rejection(400, "start-over and VOD playlists offer no blocking reload (_HLS_msn)")
        if isinstance(d, Rejection):
            return self._error(event, "playlist", d.status, d.reason)
        body = event.vod_body(rendition) if vod else event.startover_body(rendition, skip=d.skip)
        if body is None:
            return self._not_found(event, "playlist", "no segment published yet", not_yet=True)
        return self._archived(event, "playlist", body, PLAYLIST_TYPE, vod)

    async def vod_mpd(self, request: Request) -> Response:
        """`/live/<event>/vod.mpd`: the static post-event MPD."""
        event_id = request.path_params["event"]
        event = self.events.get(event_id)
        refused = self._archive_refusal(event, event_id, "mpd", True)
        if refused is not None:
            return refused
        assert event is not None
        text = event.vod_mpd()
        if text is None:
            return self._not_found(event, "mpd", f"VOD of event {event_id!r}: no media to list")
        return self._archived(event, "mpd", text, MPD_TYPE, True)

    async def clock(self, request: Request) -> Response:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return PlainTextResponse(now, headers=self._headers("no-store"))

    async def _held_part(
        self, event: LiveEvent, rendition: str, name: str, msn: int, index: int
    ) -> Response:
        """A part not produced yet (the preload hint): hold until it is complete, serve it whole."""
        window = event.window(rendition)
        last = window.last_msn
        if window.part_state(msn, index) != "future":
            return self._not_found(event, "part", name)
        if msn > (-1 if last is None else last) + 2:
            return self._not_found(event, "part", name, not_yet=True)
        t0 = time.perf_counter()
        timeout = 3 * event.target_duration_s
        try:
            ok = await event.wait_for_part(rendition, msn, index, timeout)
        except HoldLimitReached:
            return self._busy(event, "part")
        if not ok:
            return self._error(event, "part", 503, f"part {name} not produced within {timeout} s")
        data = await event.store.read(event.event_id, rendition, name)
        if data is None:
            return self._not_found(event, "part", name)
        self._count(event, "part", 200)
        headers = self._headers(IMMUTABLE)
        headers["CMSD-Static"] = f"ht={round((time.perf_counter() - t0) * 1000)}"
        return Response(data, 200, media_type="video/mp4", headers=headers)

    async def media(self, request: Request) -> Response:
        event = self.events.get(request.path_params["event"])
        rendition = request.path_params["rendition"]
        name = request.path_params["name"]
        if event is None or not event.has_rendition(rendition):
            return self._not_found(event, "media", f"rendition {rendition!r}")
        msn: int | None = None
        if _INIT.match(name):
            kind = "init"
        elif m := _SEGMENT.match(name):
            kind = "segment"
            # Only segments listed now, or removed but still inside the RFC availability
            # period; future or long-gone numbers are 404 even if a copy is on disk.
            msn = int(m["msn"])
            if not event.is_available(rendition, msn):
                return self._unavailable(event, rendition, name, msn)
        elif m := _PART.match(name):
            kind = "part"
            msn = int(m["msn"])
        else:
            return self._not_found(event, "other", name)
        if msn is None:
            return await self._media(event, rendition, name, kind)
        request_class = event.request_class(rendition, msn)
        shedder = event.shedder
        admission = None if shedder is None else shedder.admit(request_class, time.monotonic())
        if admission is not None and not admission.admitted:
            return self._shed(event, kind, admission)
        response: Response | None = None
        try:
            response = await self._media(event, rendition, name, kind)
        finally:
            if shedder is not None and admission is not None:
                sent = len(response.body) if response is not None else 0
                shedder.done(admission, sent, time.monotonic())
        event.metrics.media_by_class.labels(event.event_id, request_class.value, "served").inc()
        return response

    def _shed(self, event: LiveEvent, kind: str, admission: Admission) -> Response:
        """503 + Retry-After for a DVR request over the budget; not cached (about load now)."""
        assert admission.reason is not None
        assert event.shedder is not None
        self._count(event, kind, 503)
        event.metrics.media_by_class.labels(
            event.event_id, admission.request_class.value, f"shed_{admission.reason.value}"
        ).inc()
        seconds = event.shedder.retry_after_s(admission.reason)
        headers = self._headers("no-store") | {"Retry-After": str(seconds)}
        return PlainTextResponse(shed_message(admission.reason, seconds), 503, headers=headers)

    def shed_early(self, path: str) -> RawResponse | None:
        """A DVR media request over the budget, answered before routing (a shed request must
        cost far less than a served one, or shedding itself eats the live edge's CPU)."""
        m = _MEDIA_PATH.fullmatch(path)
        if m is None:
            return None
        event = self.events.get(m["event"])
        if event is None or event.shedder is None or not event.has_rendition(m["rendition"]):
            return None
        request_class = event.request_class(m["rendition"], int(m["msn"]))
        reason = event.shedder.refusal(request_class, time.monotonic())
        if reason is None:
            return None
        event.shedder.count_shed(reason)
        kind = "part" if m["part"] else "segment"
        self._count(event, kind, 503)
        event.metrics.media_by_class.labels(
            event.event_id, request_class.value, f"shed_{reason.value}"
        ).inc()
        seconds = event.shedder.retry_after_s(reason)
        body = shed_message(reason, seconds).encode()
        return self._raw(503, body, _TEXT, "no-store", (b"retry-after", str(seconds).encode()))

    def _unavailable(self, event: LiveEvent, rendition: str, name: str, msn: int) -> Response:
        """404 for a segment not served: future (not cached), or before the window (naming
        the first segment that is)."""
        last = event.last_msn(rendition)
        if event.ended and (last is None or msn > last):
            return self._after_end(event, msn, last)
        if last is None or msn > last:
            return self._not_found(event, "segment", name, not_yet=True)
        firsts = [event.window(rendition).statistics().media_sequence]
        if event.archive is not None:
            firsts.append(event.archive.first_msn(rendition))
        known = [f for f in firsts if f is not None]
        oldest = min(known) if known else None
        if oldest is not None and msn < oldest:
            what = (
                f"segment {msn} is before the DVR window of {event.dvr_window_s} s "
                f"(the oldest available is {oldest})"
            )
        else:
            what = f"segment {msn} (a gap, or no longer available)"
        return self._not_found(event, "segment", what)

    def _after_end(self, event: LiveEvent, msn: int, last: int | None) -> Response:
        """410 for a segment after the end: it will never exist (cacheable, unlike the 404 of
        a live event's future segment)."""
        self._count(event, "segment", 410)
        after = "before its first segment" if last is None else f"with segment {last}"
        vod = "" if event.archive is None else f" (its VOD: /live/{event.event_id}/vod.m3u8)"
        return PlainTextResponse(
            f"gone: event {event.event_id!r} ended {after}; segment {msn} will never be "
            f"published{vod}\n",
            410,
            headers=self._headers("max-age=60"),
        )

    async def _media(self, event: LiveEvent, rendition: str, name: str, kind: str) -> Response:
        if kind == "part":
            m = _PART.match(name)
            assert m is not None
            if event.low_latency is not None:
                data = await event.store.read(event.event_id, rendition, name)
                if data is None:
                    return await self._held_part(
                        event, rendition, name, int(m["msn"]), int(m["part"])
                    )
        data = await event.store.read(event.event_id, rendition, name)
        if data is None:
            return self._not_found(event, kind, name)
        self._count(event, kind, 200)
        return Response(
            data,
            200,
            media_type="video/mp4" if kind != "segment" else "video/iso.segment",
            headers=self._headers(IMMUTABLE),
        )

    async def healthz(self, request: Request) -> Response:
        body: dict[str, Any] = {
            "status": "ok",
            "uptime_s": round(time.monotonic() - self.started, 3),
            "events": {},
        }
        for eid, ev in self.events.items():
            body["events"][eid] = {
                r: {"last_msn": ev.last_msn(r), "since_publish_s": ev.stalled_for(r)}
                for r in ev.rendition_ids
            }
        if self.health_extra is not None:
            body.update(self.health_extra())
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def metrics(self, request: Request) -> Response:
        seen: set[int] = set()
        chunks = []
        for ev in self.events.values():
            reg = ev.metrics.registry
            if id(reg) not in seen:
                seen.add(id(reg))
                chunks.append(generate_latest(reg))
        return Response(b"".join(chunks), 200, media_type=CONTENT_TYPE_LATEST)

    async def player(self, request: Request) -> Response:
        path = web_dir() / "player.html"
        if not path.exists():
            return PlainTextResponse("player page not installed\n", 404)
        return FileResponse(path, headers={"Cache-Control": "no-cache"})


class _AsgiEndpoint:
    """Marks a bound method as a bare ASGI endpoint for Starlette's router (which would
    otherwise call it with a Request)."""

    def __init__(self, handler: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope, receive, send)


_PLAYLIST_PATH = re.compile(r"/live/(?P<event>[^/]+)/(?P<rendition>[^/]+)/index\.m3u8")
_REHEARSAL_PATH = re.compile(
    r"/rehearsal/(?P<key>[A-Za-z0-9_-]{1,64})/(?P<event>[^/]+)/(?P<rest>.+)"
)
REHEARSAL_SCOPE_KEY = "mainevent.rehearsal"


def rehearsal_route(origin: Origin, path: str) -> str | None:
    """`/rehearsal/<key>/<event>/<rest>` with the event's current key → `/live/<event>/<rest>`;
    None for any other path, a wrong key, or an event not in rehearsal."""
    m = _REHEARSAL_PATH.fullmatch(path)
    if m is None:
        return None
    key = origin.rehearsal.get(m["event"])
    if key is None or not hmac.compare_digest(key, m["key"]):
        return None
    return f"/live/{m['event']}/{m['rest']}"


def hidden(origin: Origin, path: str) -> bool:
    """Whether `path` is under `/live/<event>/` of an event still in rehearsal."""
    if not origin.rehearsal or not path.startswith("/live/"):
        return False
    return path[6:].split("/", 1)[0] in origin.rehearsal


_MEDIA_PATH = re.compile(
    r"/live/(?P<event>[^/]+)/(?P<rendition>[^/]+)/(?P<msn>\d{1,18})(?P<part>\.\d{1,4})?\.m4s"
)


class _OriginApp(Starlette):
    """Starlette, with media playlist GETs answered before routing and middleware: held
    LL-HLS requests are released thousands at a time and every µs per response counts."""

    origin: Origin
    gate: _Gate | None = None
    # What the players released by one publication share, per playlist (`protocol.py`).
    releases: dict[tuple[int, str, bool], Any]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/rehearsal/"):
            live = rehearsal_route(self.origin, scope["path"])
            if live is None:
                await _not_live(send, self.origin.cors_origin)
                return
            scope = dict(scope, path=live, raw_path=live.encode())
            scope[REHEARSAL_SCOPE_KEY] = True
        elif scope["type"] == "http" and self.gate is not None:
            path: str = scope["path"]
            if path.startswith("/t/") or (self.gate.required and path.startswith("/live/")):
                check = self.gate.check(path, time.time())
                if not check.allowed:
                    await _forbidden(send, str(check.reason), self.origin.cors_origin)
                    return
                # The token is checked once here and never reaches routing or any cache key;
                # steered manifests carry it into every pathway's URLs (`_steering`).
                scope = dict(scope, path=check.path, raw_path=check.path.encode())
                if check.claims is not None:
                    token, _ = split_token_path(path)
                    scope[TOKEN_SCOPE_KEY] = (token, check.claims.session_id)
        if (
            scope["type"] == "http"
            and REHEARSAL_SCOPE_KEY not in scope
            and hidden(self.origin, scope["path"])
        ):
            await _not_live(send, self.origin.cors_origin)
            return
        if scope["type"] == "http" and scope["method"] == "GET":
            m = _PLAYLIST_PATH.fullmatch(scope["path"])
            if m is not None:
                scope["path_params"] = m.groupdict()
                await self.origin.media_playlist(scope, receive, send)
                return
            if self.origin.sheds:
                refused = self.origin.shed_early(scope["path"])
                if refused is not None:
                    await _send_raw(send, refused)
                    return
        await super().__call__(scope, receive, send)


async def _not_live(send: Send, cors_origin: str) -> None:
    # Not cached anywhere: the same path is served once the event goes live.
    body = b"not found: event not live\n"
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [
                (b"content-type", _TEXT),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"access-control-allow-origin", cors_origin.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _send_raw(send: Send, response: RawResponse) -> None:
    status, body, headers = response
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _forbidden(send: Send, reason: str, cors_origin: str) -> None:
    body = json.dumps({"error": "forbidden", "reason": reason}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"x-token-denied", reason.encode()),
                (b"access-control-allow-origin", cors_origin.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _Gate(TokenGate):
    """TokenGate that remembers whether tokens are required on /live/."""

    __slots__ = ("required",)

    def __init__(self, keys: Mapping[str, str], required: bool) -> None:
        protected: tuple[str, ...] = ("/live/",) if required else ()
        super().__init__(TokenVerifier(dict(keys)), protected=protected)
        self.required = required


def create_app(
    events: Mapping[str, LiveEvent],
    *,
    cors_origin: str = "*",
    health: Callable[[], dict[str, Any]] | None = None,
    token_keys: Mapping[str, str] | None = None,
    require_token: bool = False,
    clips: ClipService | None = None,
) -> Starlette:
    """The origin ASGI app for `events` (event id → LiveEvent); `clips` adds the highlight
    routes (`clips.py`)."""
    origin = Origin(events, cors_origin=cors_origin, health=health)
    routes = [
        *(clips.routes() if clips is not None else ()),
        Route("/live/{event}/master.m3u8", origin.master),
        Route("/live/{event}/manifest.mpd", origin.mpd),
        Route("/live/{event}/{rendition}/index.m3u8", _AsgiEndpoint(origin.media_playlist)),
        Route("/live/{event}/startover.m3u8", origin.archive_master),
        Route("/live/{event}/vod.m3u8", origin.archive_master),
        Route("/live/{event}/vod.mpd", origin.vod_mpd),
        Route("/live/{event}/{rendition}/startover.m3u8", origin.archive_playlist),
        Route("/live/{event}/{rendition}/vod.m3u8", origin.archive_playlist),
        Route("/live/{event}/{rendition}/{name}", origin.media),
        Route("/healthz", origin.healthz),
        Route("/metrics", origin.metrics),
        Route("/time", origin.clock),
        Route("/player/", origin.player),
        Route(
            "/player",
            lambda r: RedirectResponse("/player/" + (f"?{r.url.query}" if r.url.query else "")),
        ),
        Mount("/static", StaticFiles(directory=web_dir(), check_dir=False), name="static"),
    ]
    app = _OriginApp(routes=routes)
    app.origin = origin
    app.releases = {}
    if token_keys or require_token:
        app.gate = _Gate(token_keys or {}, require_token)
    app.state.origin = origin
    return app
