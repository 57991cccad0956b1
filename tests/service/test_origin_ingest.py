"""Origin ingest over HTTP (in-process ASGI): validated, idempotent PUTs of real CMAF objects, and
two origins fed by the packager's fan-out deriving the same playlists (LL-HLS holds included)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from mainevent.media.cmaf import InitSection, Segment
from mainevent.media.manifest import parse_media_playlist
from mainevent.media.origin.app import create_app
from mainevent.media.origin.fanout import FanoutCore, IngestObject
from mainevent.media.origin.ingest import IngestReceiver, with_ingest
from mainevent.media.origin.ingest_client import FanoutPublisher, FanoutStore
from mainevent.media.origin.live import LiveEvent, RenditionSpec
from mainevent.media.store import LocalSegmentStore, SegmentStore
from tests.service.ingest_media import RENDITION, Media, make_media
from tests.unit.cmaf_media import FIRST_MSN

pytestmark = pytest.mark.anyio

SECRET = "s3cret"
AUTH = {"authorization": f"Bearer {SECRET}"}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    return make_media(Path(tmp_path_factory.mktemp("ingest-media")), runs=2)


def make_event(store: SegmentStore, latency: str = "standard") -> LiveEvent:
    return LiveEvent(
        event_id="demo",
        renditions=[RenditionSpec(RENDITION, "video", 300, 320, 180)],
        store=store,
        segment_duration_ms=2000,
        window_segments=6,
        fps=30,
        latency="low" if latency == "low" else "standard",
        part_target_ms=500,
    )


def origin(tmp: Path, latency: str = "standard") -> tuple[LiveEvent, httpx.AsyncClient]:
    event, transport = origin_app(tmp, latency)
    return event, httpx.AsyncClient(transport=transport, base_url="http://origin")


def origin_app(tmp: Path, latency: str = "standard") -> tuple[LiveEvent, httpx.ASGITransport]:
    event = make_event(LocalSegmentStore(tmp), latency)
    app = with_ingest(create_app({"demo": event}), IngestReceiver({"demo": event}, secret=SECRET))
    return event, httpx.ASGITransport(app=app)


def url(name: str) -> str:
    return f"/ingest/demo/{RENDITION}/{name}"


async def put_segment(c: httpx.AsyncClient, seg: Segment, **kw: bytes) -> httpx.Response:
    return await c.put(url(f"{seg.msn}.m4s"), content=kw.get("data", seg.data), headers=AUTH)


async def test_put_lists_validated_objects_and_writes_are_idempotent(
    tmp_path: Path, media: Media
) -> None:
    """201 new → listed; the same bytes again 204; other bytes under a taken name 409."""
    event, c = origin(tmp_path)
    async with c:
        assert (
            await c.put(url("init.mp4"), content=media.init.data, headers=AUTH)
        ).status_code == 201
        assert (
            await c.put(url("init.mp4"), content=media.init.data, headers=AUTH)
        ).status_code == 204
        s0, s1 = media.segments[:2]
        assert (await put_segment(c, s0)).status_code == 201
        assert (await put_segment(c, s0)).status_code == 204
        r = await put_segment(c, s0, data=s1.data)
        assert r.status_code == 409
        assert r.json()["error"]["reason"] == "conflict"
        pl = parse_media_playlist((await c.get(f"/live/demo/{RENDITION}/index.m3u8")).text)
        assert [s.uri for s in pl.segments] == [f"{s0.msn}.m4s"]
        got = await c.get(f"/live/demo/{RENDITION}/{s0.msn}.m4s")
        assert got.content == s0.data
    assert event.last_msn(RENDITION) == s0.msn


async def test_corrupt_or_mistimed_media_is_refused_before_it_is_listed(
    tmp_path: Path, media: Media
) -> None:
    """422 for a truncated segment, flipped box sizes, or a segment named for another interval;
    409 init_required before any header; 401 without the secret; 400 for a bad name."""
    event, c = origin(tmp_path)
    s0 = media.segments[0]
    async with c:
        r = await put_segment(c, s0)
        assert (r.status_code, r.json()["error"]["reason"]) == (409, "init_required")
        await c.put(url("init.mp4"), content=media.init.data, headers=AUTH)
        cut = await put_segment(c, s0, data=s0.data[: len(s0.data) - 1000])
        assert (cut.status_code, cut.json()["error"]["reason"]) == (422, "invalid_media")
        garbage = bytearray(s0.data)
        garbage[0:4] = b"\xff\xff\xff\xff"
        assert (await put_segment(c, s0, data=bytes(garbage))).status_code == 422
        renamed = await c.put(url(f"{s0.msn + 1}.m4s"), content=s0.data, headers=AUTH)
        assert (renamed.status_code, renamed.json()["error"]["reason"]) == (422, "wrong_time")
        half = b"".join(p.data for p in s0.parts[:2])
        assert (await put_segment(c, s0, data=half)).status_code == 422  # 1 s of a 2 s segment
        bad_init = await c.put(url("init-000000000000.mp4"), content=media.init.data, headers=AUTH)
        assert bad_init.status_code == 422
        assert (await c.put(url(f"{s0.msn}.m4s"), content=s0.data)).status_code == 401
        assert (await c.put(url("../x"), content=b"x", headers=AUTH)).status_code in (400, 404)
        assert (await c.put(url("index.m3u8"), content=b"x", headers=AUTH)).status_code == 400
        r = await c.put(
            f"/ingest/other/{RENDITION}/init.mp4", content=media.init.data, headers=AUTH
        )
        assert r.status_code == 404
        assert event.last_msn(RENDITION) is None  # nothing invalid was listed
        assert (await put_segment(c, s0)).status_code == 201


async def test_a_missed_segment_is_listed_as_a_gap_with_the_same_numbers(
    tmp_path: Path, media: Media
) -> None:
    """An origin that never got segment n lists n as EXT-X-GAP when n + 1 comes: MSNs agree."""
    _, c = origin(tmp_path)
    async with c:
        await c.put(url("init.mp4"), content=media.init.data, headers=AUTH)
        s0, _, s2 = media.segments[:3]
        await put_segment(c, s0)
        assert (await put_segment(c, s2)).status_code == 201
        pl = parse_media_playlist((await c.get(f"/live/demo/{RENDITION}/index.m3u8")).text)
    assert [(s.uri, s.gap) for s in pl.segments] == [
        (f"{FIRST_MSN}.m4s", False),
        (f"{FIRST_MSN + 1}.m4s", True),
        (f"{FIRST_MSN + 2}.m4s", False),
    ]


async def test_two_origins_fed_by_the_fanout_derive_the_same_playlists_and_hold_reloads(
    tmp_path: Path, media: Media
) -> None:
    """The packager's LiveEvent stores through FanoutStore; both origins list the same MSNs with
    the same bytes, and an LL-HLS blocking reload held on each is released by the fan-out."""
    built = [origin_app(tmp_path / f"o{i}", "low") for i in range(2)]
    apps = [t for _, t in built]
    replicas = [(e, httpx.AsyncClient(transport=t, base_url="http://origin")) for e, t in built]
    publisher = FanoutPublisher(
        ["http://o0", "http://o1"],
        secret=SECRET,
        core=FanoutCore(2),
        registry=CollectorRegistry(),
        transport=lambda i: apps[i],
    )
    fanout = FanoutStore(LocalSegmentStore(tmp_path / "packager"), publisher)
    packager = make_event(fanout, "low")
    packager.on_end = lambda ev: fanout.ended(ev.event_id, ev.rendition_ids)
    serve = asyncio.create_task(publisher.serve())
    try:
        await packager.on_init(RENDITION, media.init)
        first = media.segments[:3]
        for seg in first:
            for p in seg.parts:
                packager.on_part(RENDITION, p)
            await packager.on_segment(RENDITION, seg)
        last = first[-1].msn

        async def listed(event: LiveEvent, msn: int) -> None:
            while event.last_msn(RENDITION) != msn:  # noqa: ASYNC110 - fan-out in flight
                await asyncio.sleep(0.01)

        async with asyncio.timeout(20):
            for event, _ in replicas:
                await listed(event, last)
        # Blocking reloads for the next segment, held on both origins.
        holds = [
            asyncio.create_task(
                c.get(f"/live/demo/{RENDITION}/index.m3u8?_HLS_msn={last + 1}&_HLS_part=0")
            )
            for _, c in replicas
        ]
        await asyncio.sleep(0.2)
        assert not any(h.done() for h in holds)
        nxt = media.segments[3]
        packager.on_part(RENDITION, nxt.parts[0])
        async with asyncio.timeout(20):
            answers = await asyncio.gather(*holds)
        for r in answers:
            assert r.status_code == 200
            assert f"{last + 1}.0.m4s" in r.text
        bodies = []
        for _, c in replicas:
            text = (await c.get(f"/live/demo/{RENDITION}/index.m3u8")).text
            pl = parse_media_playlist(text)
            bodies.append([(s.uri, s.program_date_time_ms) for s in pl.segments])
            for seg in first:
                got = await c.get(f"/live/demo/{RENDITION}/{seg.msn}.m4s")
                assert got.content == seg.data
        ours = parse_media_playlist(packager.playlist(RENDITION) or "")
        assert bodies[0] == bodies[1] == [(s.uri, s.program_date_time_ms) for s in ours.segments]
        stats = publisher.statistics()
        assert [s["dropped"] for s in stats] == [0, 0]
        # The event ends on the packager: every origin ends it after the last segment.
        await packager.on_segment(RENDITION, nxt)
        await packager.end()
        async with asyncio.timeout(20):
            for event, _ in replicas:
                while not event.window(RENDITION).ended:  # noqa: ASYNC110 - fan-out in flight
                    await asyncio.sleep(0.01)
        for event, c in replicas:
            assert event.last_msn(RENDITION) == nxt.msn
            text = (await c.get(f"/live/demo/{RENDITION}/index.m3u8")).text
            assert text.rstrip().endswith("#EXT-X-ENDLIST")
    finally:
        serve.cancel()
        await asyncio.gather(serve, return_exceptions=True)
        for _, c in replicas:
            await c.aclose()


class _Recorder:
    """Stands in for the HTTP side of the fan-out: what the packager offered, in order."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def offer(self, obj: IngestObject) -> None:
        self.names.append(obj.name)


async def test_switching_back_to_a_stored_init_section_is_sent_to_the_origins(
    tmp_path: Path, media: Media
) -> None:
    """Live → slate → live: the packager stores the live init once, but the origins are told to
    switch back to it before the next live segment (else they would list it under the slate's)."""
    rec = _Recorder()
    packager = make_event(FanoutStore(LocalSegmentStore(tmp_path), rec))  # type: ignore[arg-type]
    other = InitSection(media.init.data + b"\0\0\0\x08free", media.init.track)
    s0, s1, s2 = media.segments[:3]
    await packager.on_init(RENDITION, media.init)
    await packager.on_segment(RENDITION, s0)
    slate_name = await packager.on_init(RENDITION, other)
    await packager.on_segment(RENDITION, s1, slate_parts=[p.data for p in s1.parts])
    await packager.on_init(RENDITION, media.init)
    await packager.on_segment(RENDITION, s2)
    segs = [n for n in rec.names if n.endswith(".m4s") and n.count(".") == 1]
    assert segs == [f"{s.msn}.m4s" for s in (s0, s1, s2)]
    inits = [n for n in rec.names if n.endswith(".mp4")]
    assert inits == ["init.mp4", slate_name, "init.mp4"]
    assert rec.names.index("init.mp4", 1) < rec.names.index(f"{s2.msn}.m4s")


async def test_a_restored_origin_hides_its_event_until_its_backlog_is_through(
    tmp_path: Path, media: Media
) -> None:
    """After a restart an origin's window may be old: viewers get 404 no-store (the shield asks
    the next origin) until a PUT says nothing more is queued for it; and an event the packager
    hides (rehearsal) is hidden here too."""
    event, c = origin(tmp_path)
    s0, s1, s2 = media.segments[:3]
    async with c:
        await c.put(url("init.mp4"), content=media.init.data, headers=AUTH)
        await put_segment(c, s0)
    # "Restart": a new LiveEvent on the same directory re-lists segment s0.
    event = make_event(LocalSegmentStore(tmp_path))
    assert event.restore() == 1
    app = create_app({"demo": event})
    origin_state = app.state.origin

    def hide(eid: str, hidden: bool) -> None:
        if hidden:
            origin_state.rehearsal[eid] = "k"
        else:
            origin_state.rehearsal.pop(eid)

    receiver = IngestReceiver({"demo": event}, secret=SECRET, hide=hide)
    with_ingest(app, receiver)
    receiver.catch_up("demo")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://origin"
    ) as c:
        hidden = await c.get(f"/live/demo/{RENDITION}/index.m3u8")
        assert (hidden.status_code, hidden.headers["cache-control"]) == (404, "no-store")
        r = await c.put(
            url(f"{s1.msn}.m4s"), content=s1.data, headers=AUTH | {"mainevent-backlog": "1"}
        )
        assert r.status_code == 201
        assert (await c.get(f"/live/demo/{RENDITION}/index.m3u8")).status_code == 404
        r = await c.put(
            url(f"{s2.msn}.m4s"), content=s2.data, headers=AUTH | {"mainevent-backlog": "0"}
        )
        assert r.status_code == 201
        shown = await c.get(f"/live/demo/{RENDITION}/index.m3u8")
        assert shown.status_code == 200
        assert [s.uri for s in parse_media_playlist(shown.text).segments] == [
            f"{s.msn}.m4s" for s in (s0, s1, s2)
        ]
        # The packager hides the event (rehearsal): so does this origin, until it shows it.
        again = AUTH | {"mainevent-backlog": "0", "mainevent-hidden": "1"}
        assert (
            await c.put(url(f"{s2.msn}.m4s"), content=s2.data, headers=again)
        ).status_code == 204
        assert (await c.get(f"/live/demo/{RENDITION}/index.m3u8")).status_code == 404
        again["mainevent-hidden"] = "0"
        await c.put(url(f"{s2.msn}.m4s"), content=s2.data, headers=again)
        assert (await c.get(f"/live/demo/{RENDITION}/index.m3u8")).status_code == 200
