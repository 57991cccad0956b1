"""Highlights on the control plane: operators mark points and ranges of an event (wall-clock,
the same timeline as the playlists' EXT-X-PROGRAM-DATE-TIME); each change is audited and
idempotent, then the event's whole list is pushed to the media plane (the origin's
`PUT /_ops/events/<id>/highlights` with the admin secret), which lists them as EXT-X-DATERANGE
and serves clips.

    POST   /v1/events/{id}/highlights          {"title", "start", "end"?}     (operator)
    GET    /v1/events/{id}/highlights                                         (read-only)
    DELETE /v1/events/{id}/highlights/{hid}                                   (operator)

The push happens after the commit; its outcome is the `Media-Sync` response header (`ok`,
`off` without `media_ops_url`, or `failed: <why>`). A failed push is repaired by the next
change (the whole list is sent every time) or `POST /v1/events/{id}/highlights:sync`.

No `from __future__ import annotations` here: FastAPI must see the dependency types the caller
passes in as real annotations.
"""

import logging
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import anyio
import httpx
from fastapi import FastAPI, Path, Response
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from mainevent.control.db import EventRow, HighlightRow, as_utc, utcnow
from mainevent.control.errors import Invalid, NotFound
from mainevent.control.schemas import ID_PATTERN
from mainevent.control.store import ControlStore, Mutation, request_hash

__all__ = ["HighlightIn", "HighlightOut", "MediaPush", "add_highlight_routes"]

log = logging.getLogger(__name__)

ADMIN_SECRET_HEADER = "X-Mainevent-Admin-Secret"
_TITLE = r'^[^"\x00-\x1f\x7f]{1,200}$'
_HID = re.compile(r"^h([1-9][0-9]{0,17})$")


class HighlightIn(BaseModel):
    """A point (`end` left out) or a range `[start, end)` of the event, in wall-clock time."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(
        pattern=_TITLE, description="Shown to viewers; 1-200 characters, no quotes or controls."
    )
    start: AwareDatetime = Field(description="Capture time the highlight starts (ISO 8601).")
    end: AwareDatetime | None = Field(
        default=None, description="End of a range (after `start`); absent for a point."
    )


class HighlightOut(BaseModel):
    """A stored highlight and where its clip is (ranges only)."""

    id: str
    event_id: str
    title: str
    start: datetime
    end: datetime | None
    clip_playlist: str | None = Field(description="Clip multivariant playlist path on the origin.")
    clip_mp4: str | None = Field(description="Exported MP4 path on the origin.")
    created_at: datetime
    created_by: str


def _out(row: HighlightRow) -> dict[str, Any]:
    hid = f"h{row.id}"
    base = f"/live/{row.event_id}/clips/{hid}"
    start, end = as_utc(row.starts_at), as_utc(row.ends_at)
    return HighlightOut(
        id=hid,
        event_id=row.event_id,
        title=row.title,
        start=start,  # type: ignore[arg-type]
        end=end,
        clip_playlist=None if end is None else f"{base}/master.m3u8",
        clip_mp4=None if end is None else f"{base}/clip.mp4",
        created_at=as_utc(row.created_at),  # type: ignore[arg-type]
        created_by=row.created_by,
    ).model_dump(mode="json")


def _ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


def _outside(field: str, rule: str, message: str) -> Invalid:
    return Invalid(
        "invalid_request",
        f"invalid request: body.{field}: {message}",
        details={"errors": [{"field": f"body.{field}", "rule": rule, "message": message}]},
    )


def check_range(body: HighlightIn, event: EventRow) -> None:
    """422 when the range is reversed or lies outside the event's schedule (when it has one)."""
    if body.end is not None and body.end <= body.start:
        raise _outside("end", "range_reversed", "must be after start")
    starts, ends = as_utc(event.starts_at), as_utc(event.ends_at)
    if starts is not None and body.start < starts:
        raise _outside("start", "outside_event", "is before the event's starts_at")
    last = body.end or body.start
    if ends is not None and last > ends:
        field = "end" if body.end is not None else "start"
        raise _outside(field, "outside_event", "is after the event's ends_at")


class MediaPush:
    """Sends an event's highlights to the origin (`None` URL: the control plane keeps them)."""

    def __init__(
        self,
        url: str | None,
        secret: str | None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 3.0,
    ) -> None:
        self.url = url.rstrip("/") if url else None
        self.secret = secret
        self.transport = transport
        self.timeout_s = timeout_s

    async def push(self, event_id: str, items: list[dict[str, Any]]) -> str:
        """The `Media-Sync` outcome: `ok`, `off` or `failed: <why>` (never raises)."""
        if self.url is None:
            return "off"
        try:
            async with httpx.AsyncClient(transport=self.transport, timeout=self.timeout_s) as c:
                r = await c.put(
                    f"{self.url}/_ops/events/{event_id}/highlights",
                    json={"highlights": items},
                    headers={ADMIN_SECRET_HEADER: self.secret or ""},
                )
        except httpx.HTTPError as exc:
            log.warning("highlights of %s not pushed to %s: %s", event_id, self.url, exc)
            return f"failed: origin unreachable ({type(exc).__name__})"
        if r.status_code != 200:
            log.warning("origin refused highlights of %s: %d %s", event_id, r.status_code, r.text)
            return f"failed: origin answered {r.status_code}"
        return "ok"


def _media_items(rows: list[HighlightRow]) -> list[dict[str, Any]]:
    items = []
    for r in rows:
        ends = as_utc(r.ends_at)
        item: dict[str, Any] = {
            "id": f"h{r.id}",
            "title": r.title,
            "start_ms": _ms(as_utc(r.starts_at)),  # type: ignore[arg-type]
            "number": r.id,
        }
        if ends is not None:
            item["end_ms"] = _ms(ends)
        items.append(item)
    return items


def add_highlight_routes(
    app: FastAPI,
    store: ControlStore,
    media: MediaPush,
    *,
    reader: Any,
    operator: Any,
    idem_key: Any,
    errors: Callable[..., dict[int | str, dict[str, Any]]] | None = None,
    auth: dict[str, Any] | None = None,
) -> None:
    """Add the routes above; `reader`/`operator`/`idem_key` are the app's dependency types,
    `errors(*codes)` the app's OpenAPI error responses and `auth` its operator security."""

    def doc(*codes: int) -> dict[str, Any]:
        return {"responses": errors(*codes) if errors else {}, "openapi_extra": auth}

    def rows_of(event_id: str) -> list[HighlightRow]:
        with store.db.read() as s:
            if s.get(EventRow, event_id) is None:
                raise NotFound("event_not_found", f"no event {event_id!r}")
            q = (
                select(HighlightRow)
                .where(HighlightRow.event_id == event_id)
                .order_by(HighlightRow.starts_at, HighlightRow.id)
            )
            rows = list(s.scalars(q))
            s.expunge_all()
            return rows

    async def sync(event_id: str) -> str:
        rows = await anyio.to_thread.run_sync(rows_of, event_id)
        return await media.push(event_id, _media_items(rows))

    def answer(m: Mutation, synced: str) -> Response:
        headers = {"Media-Sync": synced}
        if m.replayed:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(m.body, status_code=m.status, headers=headers)

    EventId = Path(pattern=ID_PATTERN, description="Event id.")

    @app.post(
        "/v1/events/{event_id}/highlights",
        status_code=201,
        response_model=HighlightOut,
        tags=["highlights"],
        **doc(400, 401, 403, 404, 409, 413, 422),
    )
    async def create_highlight(
        body: HighlightIn, actor: operator, key: idem_key, event_id: str = EventId
    ) -> Response:
        """Mark a point or range (audited `highlight.create`), then push the list to the origin."""
        path = f"/v1/events/{event_id}/highlights"
        fp = request_hash("POST", path, body.model_dump_json().encode())

        def apply(s: Session) -> Mutation:
            event = s.get(EventRow, event_id)
            if event is None:
                raise NotFound("event_not_found", f"no event {event_id!r}")
            check_range(body, event)
            row = HighlightRow(
                event_id=event_id,
                title=body.title,
                starts_at=body.start,
                ends_at=body.end,
                created_at=utcnow(),
                created_by=actor.name,
            )
            s.add(row)
            s.flush()
            out = _out(row)
            store.record(s, actor, "highlight.create", "highlight", out["id"], None, out, key)
            return Mutation(201, out)

        m = await anyio.to_thread.run_sync(
            lambda: store.idempotent(actor, key, "POST", path, fp, apply)
        )
        resp = answer(m, await sync(event_id))
        resp.headers["Location"] = f"{path}/{m.body['id']}"
        return resp

    @app.get(
        "/v1/events/{event_id}/highlights",
        tags=["highlights"],
        **doc(401, 403, 404, 422),
    )
    async def list_highlights(_actor: reader, event_id: str = EventId) -> dict[str, Any]:
        """The event's highlights by start time."""
        rows = await anyio.to_thread.run_sync(rows_of, event_id)
        return {"highlights": [_out(r) for r in rows]}

    @app.delete(
        "/v1/events/{event_id}/highlights/{highlight_id}",
        tags=["highlights"],
        **doc(400, 401, 403, 404, 409, 422),
    )
    async def delete_highlight(
        actor: operator,
        key: idem_key,
        event_id: str = EventId,
        highlight_id: str = Path(pattern=_HID.pattern, description="Highlight id (`h<n>`)."),
    ) -> Response:
        """Remove a highlight (audited `highlight.delete`); its clip is no longer served."""
        path = f"/v1/events/{event_id}/highlights/{highlight_id}"
        m_id = _HID.fullmatch(highlight_id)
        assert m_id is not None

        def apply(s: Session) -> Mutation:
            if s.get(EventRow, event_id) is None:
                raise NotFound("event_not_found", f"no event {event_id!r}")
            row = s.get(HighlightRow, int(m_id[1]))
            if row is None or row.event_id != event_id:
                raise NotFound(
                    "highlight_not_found", f"event {event_id!r} has no highlight {highlight_id!r}"
                )
            before = _out(row)
            s.delete(row)
            store.record(s, actor, "highlight.delete", "highlight", highlight_id, before, None, key)
            return Mutation(200, {"deleted": before})

        m = await anyio.to_thread.run_sync(
            lambda: store.idempotent(
                actor, key, "DELETE", path, request_hash("DELETE", path, b""), apply
            )
        )
        return answer(m, await sync(event_id))

    @app.post(
        "/v1/events/{event_id}/highlights:sync",
        tags=["highlights"],
        **doc(401, 403, 404, 413, 422),
    )
    async def sync_highlights(_actor: operator, event_id: str = EventId) -> Response:
        """Push the event's highlights to the origin again (after it was unreachable)."""
        synced = await sync(event_id)
        return JSONResponse({"media_sync": synced}, headers={"Media-Sync": synced})
