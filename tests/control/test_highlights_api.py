"""Highlights on the control plane: operators mark points and ranges (validated, audited,
idempotent) and the list reaches the origin's ops API, which serves the clips."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from mainevent.media.origin.app import create_app as create_origin
from mainevent.media.origin.clips import ClipService
from mainevent.media.origin.live import LiveEvent, RenditionSpec
from mainevent.media.store import LocalSegmentStore
from tests.control.conftest import READER, Harness

pytestmark = pytest.mark.anyio

SECRET = "origin-admin-secret"


def _origin(tmp_path: Path) -> tuple[Any, LiveEvent]:
    event = LiveEvent(
        event_id="final",
        renditions=[RenditionSpec("v360", "video", 600, 640, 360)],
        store=LocalSegmentStore(tmp_path),
        segment_duration_ms=2000,
        window_segments=3,
        fps=30,
    )
    clips = ClipService({"final": event}, admin_secret=SECRET, state_dir=tmp_path / "hl")
    return create_origin({"final": event}, clips=clips), event


def _connect(h: Harness, app: Any, secret: str = SECRET) -> None:
    push = h.services.media_push
    assert push is not None
    push.url, push.secret = "http://origin", secret
    push.transport = httpx.ASGITransport(app=app)


def _at(event: dict[str, Any], seconds: float) -> str:
    start = datetime.fromisoformat(event["starts_at"])
    return (start + timedelta(seconds=seconds)).isoformat()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
async def test_marked_range_and_point_reach_the_origin(harness: Harness, tmp_path: Path) -> None:
    """A range and a point are stored, listed by start, audited, and pushed to the origin."""
    h = harness
    app, live = _origin(tmp_path)
    _connect(h, app)
    ev = await h.event()
    r = await h.op(
        "POST",
        "/v1/events/final/highlights",
        {"title": "Knockout", "start": _at(ev, 100), "end": _at(ev, 130)},
    )
    assert r.status_code == 201, r.text
    assert r.headers["media-sync"] == "ok"
    ko = r.json()
    assert ko["id"].startswith("h")
    assert ko["clip_playlist"] == f"/live/final/clips/{ko['id']}/master.m3u8"
    assert r.headers["location"] == f"/v1/events/final/highlights/{ko['id']}"
    r = await h.op("POST", "/v1/events/final/highlights", {"title": "Bell", "start": _at(ev, 10)})
    assert r.status_code == 201, r.text
    bell = r.json()
    assert bell["end"] is None
    assert bell["clip_mp4"] is None

    listed = await h.op("GET", "/v1/events/final/highlights", key=READER)
    assert [x["title"] for x in listed.json()["highlights"]] == ["Bell", "Knockout"]
    start_ms = round(datetime.fromisoformat(_at(ev, 100)).timestamp() * 1000)
    by_id = {x.id: x for x in live.highlights}
    assert by_id[ko["id"]].start_ms == start_ms
    assert by_id[ko["id"]].end_ms == start_ms + 30_000
    assert by_id[bell["id"]].end_ms is None

    audit = (await h.op("GET", f"/v1/audit?target_id={ko['id']}")).json()["entries"]
    assert [e["action"] for e in audit] == ["highlight.create"]

    r = await h.op("DELETE", f"/v1/events/final/highlights/{ko['id']}")
    assert r.status_code == 200, r.text
    assert r.headers["media-sync"] == "ok"
    assert [x.id for x in live.highlights] == [bell["id"]]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o") as c:
        gone = await c.get(f"/live/final/clips/{ko['id']}/v360/index.m3u8")
    assert gone.status_code == 404


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_the_same_idempotency_key_marks_once(harness: Harness, tmp_path: Path) -> None:
    """A retried POST with its Idempotency-Key replays the first answer, no second highlight."""
    h = harness
    ev = await h.event()
    body = {"title": "KO", "start": _at(ev, 5), "end": _at(ev, 8)}
    first = await h.op("POST", "/v1/events/final/highlights", body, idem="k-1")
    again = await h.op("POST", "/v1/events/final/highlights", body, idem="k-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert first.headers["media-sync"] == "off"  # no origin configured
    listed = (await h.op("GET", "/v1/events/final/highlights")).json()["highlights"]
    assert len(listed) == 1


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_bad_highlights_are_refused_precisely(harness: Harness) -> None:
    """Unknown events, reversed ranges, ranges outside the event and bad titles: precise 4xx."""
    h = harness
    ev = await h.event()

    async def post(body: dict[str, Any], event: str = "final") -> httpx.Response:
        return await h.op("POST", f"/v1/events/{event}/highlights", body)

    r = await post({"title": "X", "start": _at(ev, 1)}, event="nope")
    assert r.status_code == 404
    assert r.json()["error"]["reason"] == "event_not_found"
    r = await post({"title": "X", "start": _at(ev, 20), "end": _at(ev, 10)})
    assert r.status_code == 422
    err = r.json()["error"]["details"]["errors"][0]
    assert (err["field"], err["rule"]) == ("body.end", "range_reversed")
    r = await post({"title": "X", "start": _at(ev, -30), "end": _at(ev, 10)})
    assert r.status_code == 422
    err = r.json()["error"]["details"]["errors"][0]
    assert (err["field"], err["rule"]) == ("body.start", "outside_event")
    r = await post({"title": "X", "start": _at(ev, 10), "end": _at(ev, 4 * 3600)})
    assert r.status_code == 422
    assert r.json()["error"]["details"]["errors"][0]["rule"] == "outside_event"
    r = await post({"title": 'say "hi"', "start": _at(ev, 10)})
    assert r.status_code == 422
    r = await post({"title": "X", "start": "2026-01-01T00:00:00"})  # no offset
    assert r.status_code == 422
    r = await post({"title": "X", "start": _at(ev, 10), "extra": 1})
    assert r.status_code == 422
    r = await h.op("DELETE", "/v1/events/final/highlights/h999")
    assert r.status_code == 404
    assert r.json()["error"]["reason"] == "highlight_not_found"
    r = await h.op("DELETE", "/v1/events/final/highlights/bogus")
    assert r.status_code == 422
    r = await h.op(
        "POST", "/v1/events/final/highlights", {"title": "X", "start": _at(ev, 1)}, key=READER
    )
    assert r.status_code == 403


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_origin_down_or_refusing_is_reported_and_resynced(
    harness: Harness, tmp_path: Path
) -> None:
    """The highlight is kept when the origin is unreachable or refuses; `:sync` repairs it."""
    h = harness
    ev = await h.event()
    push = h.services.media_push
    assert push is not None
    push.url = "http://127.0.0.1:9"  # nothing listens on the discard port
    r = await h.op("POST", "/v1/events/final/highlights", {"title": "KO", "start": _at(ev, 5)})
    assert r.status_code == 201
    assert r.headers["media-sync"].startswith("failed: origin unreachable")
    app, live = _origin(tmp_path)
    _connect(h, app, secret="wrong")
    r = await h.op("POST", "/v1/events/final/highlights:sync")
    assert r.json()["media_sync"] == "failed: origin answered 403"
    _connect(h, app)
    r = await h.op("POST", "/v1/events/final/highlights:sync")
    assert r.json()["media_sync"] == "ok"
    assert [x.title for x in live.highlights] == ["KO"]
