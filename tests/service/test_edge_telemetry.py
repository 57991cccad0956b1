"""Edges and the shield hand one access record per /live/ response to their telemetry sink,
and the HTTP sink delivers them to a real collector."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from mainevent.cli import main
from mainevent.common.telemetry import HttpTelemetrySink, MemoryTelemetrySink
from mainevent.config import TelemetrySettings
from mainevent.control.telemetry.events import EventTiming
from mainevent.control.telemetry.server import TelemetryServer, build_service
from mainevent.media.edge import ADMIN_HEADER, EdgeConfig, EdgeServer
from mainevent.media.edge.stub import StubObject, StubUpstream

pytestmark = pytest.mark.anyio

SECRET = "drill-secret"
SEG = "/live/final/v360/100.m4s"


async def test_each_response_becomes_an_access_record() -> None:
    """Status, bytes, cache result, region header, UA and CMCD of every response are recorded."""
    stub = StubUpstream()
    await stub.start()
    shield_sink, edge_sink = MemoryTelemetrySink(), MemoryTelemetrySink()
    shield = EdgeServer(EdgeConfig("shield", stub.url), sink=shield_sink)
    await shield.start()
    edge = EdgeServer(EdgeConfig("cdn-b", shield.url, admin_secret=SECRET), sink=edge_sink)
    await edge.start()
    stub.publish(SEG, StubObject(b"s" * 5000))
    try:
        async with httpx.AsyncClient(timeout=10) as c:
            h = {"x-client-region": "us", "user-agent": "mainevent-player/1"}
            assert (
                await c.get(edge.url + SEG + "?CMCD=br%3D2500%2Csid%3D%22p1%22", headers=h)
            ).status_code == 200
            assert (await c.get(edge.url + SEG, headers=h)).status_code == 200
            assert (
                await c.get(edge.url + "/live/final/v360/999.m4s", headers=h)
            ).status_code == 404
            r = await c.post(
                edge.url + "/_edge/fault",
                json={"error_status": 503, "error_rate": 1.0},
                headers={ADMIN_HEADER: SECRET},
            )
            assert r.status_code == 200, r.text
            assert (await c.get(edge.url + SEG, headers=h)).status_code == 503
            assert (await c.get(edge.url + "/metrics")).status_code == 200  # not a /live/ path
    finally:
        await edge.close()
        await shield.close()
        await stub.stop()
    recs = list(edge_sink.records)
    assert [(r.status, r.cache) for r in recs] == [
        (200, "MISS"),
        (200, "HIT"),
        (404, "MISS"),
        (503, "FAULT"),
    ]
    first = recs[0]
    assert first.cdn == "cdn-b"
    assert first.path == SEG
    assert first.bytes == 5000
    assert first.region == "us"
    assert first.user_agent == "mainevent-player/1"
    assert first.client == "127.0.0.1"
    assert first.cmcd == "br%3D2500%2Csid%3D%22p1%22"
    assert first.ttfb_ms >= 0
    assert abs(first.ts - time.time()) < 60
    assert recs[1].cmcd is None
    assert [(r.cdn, r.cache) for r in shield_sink.records][:1] == [("shield", "MISS")]


async def test_the_http_sink_delivers_batches_to_the_collector(tmp_path: Path) -> None:
    """Records offered to HttpTelemetrySink arrive at a real collector and count as requests."""
    settings = TelemetrySettings(db_path=tmp_path / "t.db")
    server = TelemetryServer(build_service(settings, {"final": EventTiming(2000)}))
    url = server.bind()
    stub = StubUpstream()
    await stub.start()
    sink = HttpTelemetrySink(url, interval_s=0.05)
    edge = EdgeServer(EdgeConfig("cdn-a", stub.url), sink=sink)
    await edge.start()
    stub.publish(SEG, StubObject(b"x" * 100))
    collector = server.service.collector
    try:
        async with asyncio.TaskGroup() as tg:
            serving = tg.create_task(server.serve())
            posting = tg.create_task(sink.serve())
            async with httpx.AsyncClient(timeout=10) as c:
                for _ in range(5):
                    assert (await c.get(edge.url + SEG)).status_code == 200
            deadline = time.monotonic() + 10
            while collector.access_records < 5 or sink.sent < 5:  # answered, too
                assert time.monotonic() < deadline, "records never reached the collector"
                await asyncio.sleep(0.02)
            posting.cancel()
            server.stop()
            await serving
    finally:
        await edge.close()
        await stub.stop()
    assert sink.sent == 5
    assert sink.dropped == 0


def test_a_full_sink_drops_and_counts_instead_of_blocking() -> None:
    """The sink queue is bounded: past it records are dropped (counted), offer never waits."""
    sink = HttpTelemetrySink("http://127.0.0.1:9", max_queued=10)
    from mainevent.common.telemetry import AccessRecord

    rec = AccessRecord(0.0, "cdn-a", SEG, 200, 1, 1.0, "HIT", "127.0.0.1", None, None, None)
    for _ in range(25):
        sink.offer(rec)
    assert sink.dropped == 15


async def _edge_with_sink(stub: StubUpstream) -> tuple[EdgeServer, MemoryTelemetrySink]:
    sink = MemoryTelemetrySink()
    edge = EdgeServer(EdgeConfig("cdn-a", stub.url, admin_secret=SECRET), sink=sink)
    await edge.start()
    return edge, sink


async def test_ttfb_is_the_head_not_the_end_of_a_slowly_streamed_body() -> None:
    """A body that streams for a while: TTFB is when its head went out, TTLB when it ended."""
    stub = StubUpstream()
    await stub.start()
    edge, sink = await _edge_with_sink(stub)
    stub.publish(SEG, StubObject(b"s" * 50_000, pause_after=1000))
    pause_s = 0.8
    try:
        async with (
            httpx.AsyncClient(timeout=10) as c,
            c.stream("GET", edge.url + SEG) as r,
        ):
            assert r.status_code == 200
            chunks = r.aiter_raw()
            assert await anext(chunks)  # the head and the first bytes are here
            await asyncio.sleep(pause_s)  # the injected slowness of the rest of the body
            stub.release(SEG)
            got = len(b"".join([b async for b in chunks]))
            assert 0 < got < 50_000
    finally:
        await edge.close()
        await stub.stop()
    (rec,) = sink.records
    assert (rec.status, rec.cache, rec.bytes) == (200, "MISS", 50_000)
    assert rec.ttlb_ms is not None
    assert rec.ttfb_ms < pause_s * 1000 / 2
    assert rec.ttlb_ms - rec.ttfb_ms >= pause_s * 1000 * 0.9


async def test_ttfb_includes_the_added_latency_of_a_drill() -> None:
    """A latency drill models a slow CDN: its delay is in TTFB; a throughput cap is not."""
    stub = StubUpstream()
    await stub.start()
    edge, sink = await _edge_with_sink(stub)
    stub.publish(SEG, StubObject(b"s" * 12_000))
    latency_ms = 700
    try:
        async with httpx.AsyncClient(timeout=10) as c:
            assert (await c.get(edge.url + SEG)).status_code == 200  # cached now
            r = await c.post(
                edge.url + "/_edge/fault",
                json={"latency_ms": latency_ms},
                headers={ADMIN_HEADER: SECRET},
            )
            assert r.status_code == 200, r.text
            assert (await c.get(edge.url + SEG)).status_code == 200
            # 80 kbit/s: 12 kB paced out over about a second and a half, after the latency.
            r = await c.post(
                edge.url + "/_edge/fault",
                json={"latency_ms": latency_ms, "throughput_kbps": 80},
                headers={ADMIN_HEADER: SECRET},
            )
            assert r.status_code == 200, r.text
            assert len((await c.get(edge.url + SEG)).content) == 12_000
    finally:
        await edge.close()
        await stub.stop()
    cold, delayed, paced = sink.records
    assert cold.ttfb_ms < latency_ms / 2
    assert delayed.ttfb_ms >= latency_ms * 0.9
    assert paced.ttfb_ms >= latency_ms * 0.9
    assert paced.ttlb_ms is not None
    assert paced.ttlb_ms - paced.ttfb_ms >= 1000


async def test_ttfb_of_a_blocking_reload_includes_the_hold() -> None:
    """An LL-HLS blocking reload's TTFB runs until the playlist it waits for is sent (the hold
    included, as a CDN log or the player's own CMCD ttfb has it: docs/telemetry.md)."""
    stub = StubUpstream()
    await stub.start()
    edge, sink = await _edge_with_sink(stub)
    playlist = "/live/final/v360/index.m3u8"
    stub.set_playlist_msn(playlist, 5)
    hold_s = 0.6
    try:
        async with httpx.AsyncClient(timeout=10) as c:
            held = asyncio.create_task(c.get(edge.url + playlist + "?_HLS_msn=6"))
            await asyncio.sleep(hold_s)  # the next segment takes this long to appear
            stub.set_playlist_msn(playlist, 6)
            assert (await held).status_code == 200
    finally:
        await edge.close()
        await stub.stop()
    (rec,) = sink.records
    assert rec.path == playlist
    assert rec.ttlb_ms is not None
    assert hold_s * 1000 * 0.9 <= rec.ttfb_ms <= rec.ttlb_ms


async def test_header_mode_cmcd_is_recorded_like_query_mode() -> None:
    """CMCD sent as CMCD-* request headers (CTA-5004 header mode) is in the access record, in
    the same percent-encoded form as query CMCD, and the collector reads it as CMCD."""
    stub = StubUpstream()
    await stub.start()
    edge, sink = await _edge_with_sink(stub)
    stub.publish(SEG, StubObject(b"s" * 100))
    headers = {
        "CMCD-Request": "bl=2100,mtp=25400",
        "CMCD-Object": "br=2500,d=2000,ot=v",
        "CMCD-Session": 'cid="final",sid="6e2f%ab"',
        "CMCD-Status": "",
    }
    try:
        async with httpx.AsyncClient(timeout=10) as c:
            assert (await c.get(edge.url + SEG, headers=headers)).status_code == 200
            assert (
                await c.get(edge.url + SEG + "?CMCD=sid%3D%22q%22", headers=headers)
            ).status_code == 200
    finally:
        await edge.close()
        await stub.stop()
    headers_only, both = sink.records
    assert headers_only.cmcd is not None
    assert set(headers_only.cmcd.split(",")) == {
        "bl=2100",
        "mtp=25400",
        "br=2500",
        "d=2000",
        "ot=v",
        'cid="final"',
        'sid="6e2f%25ab"',
    }
    assert both.cmcd is not None
    assert both.cmcd.startswith("sid%3D%22q%22,")
    from urllib.parse import unquote

    from mainevent.control.telemetry.cmcd import decode_dict

    decoded = decode_dict(unquote(headers_only.cmcd))
    assert decoded.data["sid"] == "6e2f%ab"
    assert decoded.data["br"] == 2500


async def test_a_pipelined_request_waits_in_its_ttfb() -> None:
    """A request pipelined behind a slow one on its connection is answered after it: its TTFB
    counts that wait, as its client sees it."""
    stub = StubUpstream()
    await stub.start()
    edge, sink = await _edge_with_sink(stub)
    slow, quick = SEG, "/live/final/v360/101.m4s"
    stub.publish(slow, StubObject(b"s" * 5000, pause_after=100))
    stub.publish(quick, StubObject(b"q" * 100))
    pause_s = 0.6
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    try:
        writer.write(
            f"GET {slow} HTTP/1.1\r\nHost: e\r\n\r\nGET {quick} HTTP/1.1\r\nHost: e\r\n\r\n".encode()
        )
        await writer.drain()
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(pause_s)  # the slow body's stall
        stub.release(slow)
        deadline = time.monotonic() + 10
        while len(sink.records) < 2:
            assert time.monotonic() < deadline, "the pipelined request was never answered"
            await asyncio.sleep(0.02)
    finally:
        writer.close()
        await edge.close()
        await stub.stop()
    first, second = sink.records
    assert (first.path, second.path) == (slow, quick)
    assert second.ttfb_ms >= pause_s * 1000 * 0.9
    assert second.ts <= first.ts + pause_s / 2  # it arrived with the first, not after it


async def test_behind_a_trusted_balancer_the_viewer_is_the_forwarded_address() -> None:
    """An edge of a fleet sits behind nginx: from a peer in `forwarded_from` its access records
    name the viewer (the last `X-Forwarded-For` entry); from any other peer the header is
    ignored, and a malformed entry falls back to the peer."""
    stub = StubUpstream()
    await stub.start()
    stub.publish(SEG, StubObject(b"s" * 100))
    behind = MemoryTelemetrySink()
    edge = EdgeServer(EdgeConfig("cdn-a", stub.url, forwarded_from=("127.0.0.0/8",)), sink=behind)
    direct = MemoryTelemetrySink()
    other = EdgeServer(EdgeConfig("cdn-b", stub.url, forwarded_from=("10.0.0.0/8",)), sink=direct)
    await edge.start()
    await other.start()
    try:
        async with httpx.AsyncClient(timeout=10) as c:
            for forwarded in ("203.0.113.9", "198.51.100.1, 192.0.2.7", "not-an-address"):
                h = {"x-forwarded-for": forwarded}
                assert (await c.get(edge.url + SEG, headers=h)).status_code == 200
                assert (await c.get(other.url + SEG, headers=h)).status_code == 200
            assert (await c.get(edge.url + SEG)).status_code == 200
    finally:
        await edge.close()
        await other.close()
        await stub.stop()
    assert [r.client for r in behind.records] == [
        "203.0.113.9",
        "192.0.2.7",
        "127.0.0.1",
        "127.0.0.1",
    ]
    assert [r.client for r in direct.records] == ["127.0.0.1"] * 3


def test_a_forwarded_from_that_is_not_a_cidr_is_refused_at_start(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["edge", "serve", "--name", "cdn-a", "--upstream", "http://127.0.0.1:1"]
    assert main([*argv, "--forwarded-from", "nginx"]) == 2
    assert "--forwarded-from 'nginx' is not a CIDR" in capsys.readouterr().err
