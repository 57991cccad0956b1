"""Highlights on the origin: the operator's points and ranges (pushed by the control plane),
clip playlists per range and the exported MP4 of a clip.

    PUT  /_ops/events/<event>/highlights          replace the event's highlights (admin secret)
    GET  /_ops/events/<event>/highlights          what the origin has
    GET  /live/<event>/clips/<id>/master.m3u8     clip multivariant playlist (VOD)
    GET  /live/<event>/clips/<id>/<rendition>/index.m3u8   clip media playlist (VOD, ENDLIST)
    GET  /live/<event>/clips/<id>/<rendition>/<msn>.m4s    a segment of the clip (and init*.mp4)
    GET  /live/<event>/clips/<id>/clip.mp4        the clip remuxed to one MP4 (download)

The PUT body is the whole list, `{"highlights": [{"id", "title", "start_ms", "end_ms"?,
"number"?}]}`: pushing it again is harmless, so the control plane re-sends the full list after
every change. A clip lists the stored segments overlapping its range (disk index, so segments
that left the live window and origin restarts are covered); it answers 409 until the live
edge has passed the range's end. Ops errors are JSON `{"error": code, "detail": text}` like the
other `/_ops/` routes; media errors are plain text like the rest of `/live/`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from mainevent.media.encode.remux import RemuxError, TrackData, remux_mp4
from mainevent.media.manifest import render_media_playlist
from mainevent.media.manifest.errors import ManifestError
from mainevent.media.manifest.highlights import (
    ClipSegment,
    Highlight,
    clip_playlist,
    clip_segments,
)
from mainevent.media.origin.live import LiveEvent

__all__ = ["ADMIN_SECRET_HEADER", "ClipService", "parse_highlights"]

log = logging.getLogger(__name__)

ADMIN_SECRET_HEADER = "X-Mainevent-Admin-Secret"
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
MAX_HIGHLIGHTS = 1000
_SEGMENT = re.compile(r"^(?P<msn>\d{1,18})\.m4s$")
_INIT = re.compile(r"^init(-[0-9a-f]{12})?\.mp4$")
_IMMUTABLE = "public, max-age=31536000, immutable"
_CLIP_CACHE = "max-age=5"
"""Clip playlists can change when the operator edits the range: cached briefly."""


class _Refused(Exception):
    def __init__(self, status: int, code: str, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.retry_after = retry_after


def parse_highlights(body: Any) -> tuple[Highlight, ...]:
    """The highlights of a PUT body, validated; `_Refused` (422) naming the first bad entry."""
    if not isinstance(body, dict) or set(body) != {"highlights"}:
        raise _Refused(422, "bad_body", 'expected exactly {"highlights": [...]}')
    items = body["highlights"]
    if not isinstance(items, list) or len(items) > MAX_HIGHLIGHTS:
        raise _Refused(422, "bad_body", f"highlights must be a list of at most {MAX_HIGHLIGHTS}")
    out: dict[str, Highlight] = {}
    allowed = {"id", "title", "start_ms", "end_ms", "number"}
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not {"id", "title", "start_ms"} <= set(item) <= allowed:
            raise _Refused(
                422, "bad_highlight", f"highlights[{i}]: needs id, title, start_ms (end_ms, number)"
            )
        end = item.get("end_ms")
        ints = [item["start_ms"], 0 if end is None else end, item.get("number", 0)]
        if not all(type(v) is int for v in ints):
            raise _Refused(422, "bad_highlight", f"highlights[{i}]: times must be integers (ms)")
        if not isinstance(item["id"], str) or not isinstance(item["title"], str):
            raise _Refused(422, "bad_highlight", f"highlights[{i}]: id and title must be strings")
        try:
            h = Highlight(
                id=item["id"],
                title=item["title"],
                start_ms=item["start_ms"],
                end_ms=item.get("end_ms"),
                number=item.get("number", 0),
            )
        except ManifestError as exc:
            raise _Refused(422, "bad_highlight", f"highlights[{i}]: {exc}") from None
        if h.id in out:
            raise _Refused(422, "duplicate_id", f"highlights[{i}]: id {h.id!r} given twice")
        out[h.id] = h
    return tuple(out.values())


def _json_error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse(
        {"error": code, "detail": detail}, status_code=status, headers={"Cache-Control": "no-store"}
    )


def _text(status: int, text: str, cache: str = "max-age=1", **extra: str) -> Response:
    return PlainTextResponse(f"{text}\n", status, headers={"Cache-Control": cache, **extra})


class ClipService:
    """Highlights and clips of the events this origin serves.

    `state_dir` keeps each event's highlights (`<event>/highlights.json`, so an origin restart
    lists them again before the control plane pushes) and the exported MP4s; None keeps the
    highlights in memory and refuses MP4 export. `ffmpeg` is needed for the export only.
    """

    def __init__(
        self,
        events: Mapping[str, LiveEvent],
        *,
        admin_secret: str | None,
        state_dir: Path | None = None,
        ffmpeg: str | None = None,
    ) -> None:
        self.events = events
        self.admin_secret = admin_secret
        self.state_dir = state_dir
        self.ffmpeg = ffmpeg
        self._export_locks: dict[str, asyncio.Lock] = {}
        for event in events.values():
            self._load(event)

    # -- state --------------------------------------------------------------------------------

    def _state_path(self, event_id: str) -> Path | None:
        return None if self.state_dir is None else self.state_dir / event_id / "highlights.json"

    def _load(self, event: LiveEvent) -> None:
        path = self._state_path(event.event_id)
        if path is None or not path.exists():
            return
        try:
            event.set_highlights(parse_highlights(json.loads(path.read_text("utf-8"))))
        except (OSError, ValueError, _Refused) as exc:
            log.error("ignoring unreadable %s: %s", path, exc)

    def _save(self, event_id: str, body: dict[str, Any]) -> None:
        path = self._state_path(event_id)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(body, separators=(",", ":")), "utf-8")
        os.replace(tmp, path)

    # -- ops ----------------------------------------------------------------------------------

    def _denied(self, request: Request) -> JSONResponse | None:
        given = request.headers.get(ADMIN_SECRET_HEADER)
        if given is None:
            return _json_error(
                401, "missing_secret", f"send the admin secret in {ADMIN_SECRET_HEADER}"
            )
        secret = self.admin_secret
        if not secret or not hmac.compare_digest(given.encode(), secret.encode()):
            return _json_error(403, "bad_secret", "the admin secret does not match")
        return None

    def _ops_event(self, request: Request) -> LiveEvent | JSONResponse:
        eid = request.path_params["event"]
        event = self.events.get(eid)
        if event is None:
            known = ", ".join(self.events)
            return _json_error(
                404, "unknown_event", f"this origin serves no event {eid!r}; it serves: {known}"
            )
        return event

    async def put_highlights(self, request: Request) -> Response:
        if (refused := self._denied(request)) is not None:
            return refused
        event = self._ops_event(request)
        if isinstance(event, JSONResponse):
            return event
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _json_error(400, "bad_json", f"body is not JSON: {exc}")
        try:
            highlights = parse_highlights(body)
        except _Refused as exc:
            return _json_error(exc.status, exc.code, exc.detail)
        await asyncio.to_thread(self._save, event.event_id, body)
        event.set_highlights(highlights)
        return JSONResponse({"event": event.event_id, "highlights": len(highlights)})

    async def get_highlights(self, request: Request) -> Response:
        event = self._ops_event(request)
        if isinstance(event, JSONResponse):
            return event
        return JSONResponse(
            {
                "event": event.event_id,
                "highlights": [
                    {
                        "id": h.id,
                        "title": h.title,
                        "start_ms": h.start_ms,
                        "end_ms": h.end_ms,
                        "number": h.number,
                        "clip": None
                        if h.end_ms is None
                        else f"/live/{event.event_id}/clips/{h.id}/master.m3u8",
                    }
                    for h in event.highlights
                ],
            },
            headers={"Cache-Control": "no-store"},
        )

    # -- clips --------------------------------------------------------------------------------

    def _clip(self, request: Request) -> tuple[LiveEvent, Highlight]:
        event = self.events.get(request.path_params["event"])
        if event is None:
            raise _Refused(404, "", f"not found: event {request.path_params['event']!r}")
        cid = request.path_params["clip"]
        h = next((h for h in event.highlights if h.id == cid), None)
        if h is None:
            raise _Refused(404, "", f"not found: highlight {cid!r}")
        if h.end_ms is None:
            raise _Refused(404, "", f"highlight {cid!r} is a point; only ranges have clips")
        return event, h

    async def _segments(self, event: LiveEvent, h: Highlight, rendition: str) -> list[ClipSegment]:
        """The clip's segments in `rendition`; `_Refused` while the range is still being
        captured (409 + Retry-After) or when nothing of it is stored (404)."""
        if not event.has_rendition(rendition):
            raise _Refused(404, "", f"not found: rendition {rendition!r}")
        assert h.end_ms is not None
        records = await asyncio.to_thread(event.store.records, event.event_id, rendition)
        stored = [
            ClipSegment(r.msn, r.duration_us, r.program_date_time_ms, r.init_name, r.discontinuity)
            for r in records
        ]
        covered_ms = max(
            (s.program_date_time_ms + s.duration_us // 1000 for s in stored), default=0
        )
        if covered_ms < h.end_ms and not event.window(rendition).ended:
            wait_s = max(1, math.ceil((h.end_ms - covered_ms) / 1000))
            raise _Refused(
                409,
                "clip_not_ready",
                f"clip {h.id} not complete: its range ends after the newest stored segment; "
                f"retry in {wait_s} s",
                retry_after=wait_s,
            )
        segments = clip_segments(stored, h.start_ms, h.end_ms)
        if not segments:
            raise _Refused(404, "", f"no stored media in the range of highlight {h.id!r}")
        return segments

    @staticmethod
    def _refusal(exc: _Refused) -> Response:
        if exc.retry_after is not None:
            return _text(
                exc.status, exc.detail, "no-store", **{"Retry-After": str(exc.retry_after)}
            )
        return _text(exc.status, exc.detail)

    async def clip_master(self, request: Request) -> Response:
        try:
            event, _ = self._clip(request)
        except _Refused as exc:
            return self._refusal(exc)
        # The live multivariant's URIs are relative (`<rendition>/index.m3u8`), so the same
        # text served from the clip's directory points at the clip's media playlists.
        text = event.multivariant()
        if text is None:
            return _text(503, "stream starting: no segment published yet", "no-store")
        return Response(text, 200, media_type=PLAYLIST_TYPE, headers={"Cache-Control": _CLIP_CACHE})

    async def clip_playlist(self, request: Request) -> Response:
        try:
            event, h = self._clip(request)
            segments = await self._segments(event, h, request.path_params["rendition"])
        except _Refused as exc:
            return self._refusal(exc)
        pl = clip_playlist(segments, event.target_duration_s, h)
        return Response(
            render_media_playlist(pl),
            200,
            media_type=PLAYLIST_TYPE,
            headers={"Cache-Control": _CLIP_CACHE},
        )

    async def clip_media(self, request: Request) -> Response:
        name = request.path_params["name"]
        rendition = request.path_params["rendition"]
        try:
            event, h = self._clip(request)
            segments = await self._segments(event, h, rendition)
        except _Refused as exc:
            return self._refusal(exc)
        m = _SEGMENT.match(name)
        listed = (
            any(s.msn == int(m["msn"]) for s in segments)
            if m
            else _INIT.match(name) is not None and any(s.init_name == name for s in segments)
        )
        if not listed:
            return _text(404, f"not found: {name} is not part of clip {h.id}")
        data = await event.store.read(event.event_id, rendition, name)
        if data is None:
            return _text(404, f"not found: {name}")
        media_type = "video/iso.segment" if m else "video/mp4"
        return Response(data, 200, media_type=media_type, headers={"Cache-Control": _IMMUTABLE})

    def _export_renditions(self, event: LiveEvent) -> list[str]:
        """The best video rendition and the first audio one."""
        specs = [event.rendition_spec(r) for r in event.rendition_ids]
        video = sorted((s for s in specs if s.kind == "video"), key=lambda s: -s.bitrate_kbps)
        audio = [s for s in specs if s.kind == "audio"]
        return [s.id for s in video[:1] + audio[:1]]

    async def clip_mp4(self, request: Request) -> Response:
        try:
            event, h = self._clip(request)
            if self.state_dir is None or self.ffmpeg is None:
                raise _Refused(404, "", "clip export is not enabled on this origin")
            tracks: list[tuple[str, list[ClipSegment]]] = []
            for rendition in self._export_renditions(event):
                tracks.append((rendition, await self._segments(event, h, rendition)))
        except _Refused as exc:
            return self._refusal(exc)
        key = hashlib.sha256(
            repr([(r, [(s.msn, s.init_name) for s in segs]) for r, segs in tracks]).encode()
        ).hexdigest()[:16]
        out = self.state_dir / event.event_id / "clips" / f"{h.id}-{key}.mp4"
        lock = self._export_locks.setdefault(str(out), asyncio.Lock())
        async with lock:
            if not out.exists():
                try:
                    await self._export(event, tracks, out)
                except _Refused as exc:
                    return self._refusal(exc)
                except RemuxError as exc:
                    log.error("clip %s/%s export failed: %s", event.event_id, h.id, exc)
                    return _text(500, f"clip export failed: {exc}", "no-store")
        return FileResponse(
            out,
            media_type="video/mp4",
            filename=f"{event.event_id}-{h.id}.mp4",
            headers={"Cache-Control": _CLIP_CACHE},
        )

    async def _export(
        self, event: LiveEvent, tracks: list[tuple[str, list[ClipSegment]]], out: Path
    ) -> None:
        assert self.ffmpeg is not None
        data: list[TrackData] = []
        for rendition, segments in tracks:
            inits = {s.init_name for s in segments}
            if len(inits) != 1:
                raise _Refused(
                    409,
                    "init_changed",
                    f"{rendition}: the encoder restarted inside the clip; cannot export it whole",
                )
            init = await event.store.read(event.event_id, rendition, inits.pop())
            bodies = [
                await event.store.read(event.event_id, rendition, f"{s.msn}.m4s") for s in segments
            ]
            if init is None or any(b is None for b in bodies):
                raise _Refused(
                    404, "", f"{rendition}: part of the clip's media is no longer stored"
                )
            data.append(TrackData(init, [b for b in bodies if b is not None]))
        await remux_mp4(self.ffmpeg, data, out)

    def routes(self) -> list[Route]:
        """Starlette routes (the ops pair is matched before any catch-all `/_ops/` app)."""
        return [
            Route("/_ops/events/{event}/highlights", self.put_highlights, methods=["PUT"]),
            Route("/_ops/events/{event}/highlights", self.get_highlights, methods=["GET"]),
            Route("/live/{event}/clips/{clip}/master.m3u8", self.clip_master),
            Route("/live/{event}/clips/{clip}/clip.mp4", self.clip_mp4),
            Route("/live/{event}/clips/{clip}/{rendition}/index.m3u8", self.clip_playlist),
            Route("/live/{event}/clips/{clip}/{rendition}/{name}", self.clip_media),
        ]
