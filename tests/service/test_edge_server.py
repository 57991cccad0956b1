"""Shield and edge over real loopback sockets, in front of a stub upstream the tests control."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest

from mainevent.common.tokens import TokenSigner
from mainevent.media.edge import ADMIN_HEADER, EdgeConfig, EdgeServer
from mainevent.media.edge.stub import StubObject, StubUpstream
from mainevent.testing.probes import metric

pytestmark = pytest.mark.anyio

SECRET = "drill-secret"
KEY_HEX = "00112233445566778899aabbccddeeff"
SEG = "/live/final/v360/100.m4s"
PLAYLIST = "/live/final/v360/index.m3u8"


@dataclass
class Tier:
    stub: StubUpstream
    shield: EdgeServer
    edge: EdgeServer
    client: httpx.AsyncClient

    async def get(self, path: str, **kw: object) -> httpx.Response:
        return await self.client.get(self.edge.url + path, **kw)  # type: ignore[arg-type]

    async def fault(self, **fault: object) -> None:
        r = await self.client.post(
            self.edge.url + "/_edge/fault", json=fault, headers={ADMIN_HEADER: SECRET}
        )
        assert r.status_code == 200, r.text


async def until(check: Callable[[], bool], limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@pytest.fixture
async def tier() -> AsyncIterator[Tier]:
    stub = StubUpstream(hold_missing_s=30.0)
    await stub.start()
    shield = EdgeServer(EdgeConfig("shield", stub.url, stale_if_error_s=30))
    await shield.start()
    edge = EdgeServer(
        EdgeConfig("cdn-a", shield.url, regions=("eu",), admin_secret=SECRET, stale_if_error_s=30)
    )
    await edge.start()
    limits = httpx.Limits(max_connections=1000)
    async with httpx.AsyncClient(timeout=20, limits=limits) as client:
        yield Tier(stub, shield, edge, client)
    await edge.close()
    await shield.close()
    await stub.stop()


async def test_hit_headers_name_the_edge(tier: Tier) -> None:
    """A hit carries Age, X-Cache, CMSD naming the edge, CORS; bytes are the origin's."""
    tier.stub.publish(SEG, StubObject(b"s" * 300_000))
    first = await tier.get(SEG)
    assert first.headers["x-cache"] == "MISS"
    second = await tier.get(SEG)
    assert second.status_code == 200
    assert second.content == b"s" * 300_000
    assert second.headers["x-cache"] == "HIT"
    assert int(second.headers["age"]) >= 0
    assert second.headers["cmsd-static"] == 'ot=av,n="cdn-a"'
    assert second.headers["cmsd-dynamic"] == '"shield", "cdn-a"'
    assert second.headers["access-control-allow-origin"] == "*"
    assert "X-Cache" in second.headers["access-control-expose-headers"]
    opt = await tier.client.options(tier.edge.url + SEG)
    assert opt.status_code == 204
    assert opt.headers["access-control-allow-origin"] == "*"
    assert tier.stub.fetches[SEG] == 1


async def test_concurrent_misses_collapse_through_both_tiers(tier: Tier) -> None:
    """200 clients ask for a segment before it exists: one fetch per tier, identical bytes."""
    tasks = [
        asyncio.create_task(tier.get(SEG + "?CMCD=sid%3D%22" + str(i) + "%22")) for i in range(200)
    ]
    await until(lambda: tier.edge.waiting == 200)
    tier.stub.publish(SEG, StubObject(bytes(range(256)) * 1000))
    rs = await asyncio.gather(*tasks)
    assert {r.content for r in rs} == {bytes(range(256)) * 1000}
    assert sorted({r.headers["x-cache"] for r in rs}) == ["COLLAPSED", "MISS"]
    assert tier.stub.fetches == {SEG: 1}
    m = (await tier.get("/metrics")).text
    assert metric(m, "edge_upstream_fetches_total", type="segment") == 1
    assert metric(m, "edge_collapsed_waiters_total", type="segment") == 199


async def test_blocking_reloads_collapse_by_msn_and_ignore_cmcd(tier: Tier) -> None:
    """Identical held _HLS_msn requests become one upstream hold; a different msn is another."""
    tier.stub.set_playlist_msn(PLAYLIST, 10)
    same = [
        asyncio.create_task(tier.get(PLAYLIST + f"?_HLS_msn=11&_HLS_throughput={i}&CMCD=x"))
        for i in range(50)
    ]
    other = asyncio.create_task(tier.get(PLAYLIST + "?_HLS_msn=12"))
    await until(lambda: tier.edge.waiting == 51)
    tier.stub.set_playlist_msn(PLAYLIST, 11)
    rs = await asyncio.gather(*same)
    assert len({r.content for r in rs}) == 1
    assert b"11.m4s" in rs[0].content
    assert tier.stub.fetches[PLAYLIST + "?_HLS_msn=11"] == 1
    tier.stub.set_playlist_msn(PLAYLIST, 12)
    assert b"12.m4s" in (await other).content
    assert tier.stub.fetches[PLAYLIST + "?_HLS_msn=12"] == 1


async def test_playlist_never_staler_than_cache_control(tier: Tier) -> None:
    """A max-age=1 playlist: every response's Age is within max-age, and it does refresh."""
    tier.stub.set_playlist_msn(PLAYLIST, 1)
    seen = set()
    deadline = time.monotonic() + 3.5
    msn = 1
    while time.monotonic() < deadline:
        r = await tier.get(PLAYLIST)
        assert r.status_code == 200
        assert int(r.headers["age"]) <= 1
        found = re.findall(rb"(\d+)\.m4s", r.content)
        seen.add(int(found[-1]))
        if time.monotonic() > deadline - 2.4 and msn == 1:
            msn = 2
            tier.stub.set_playlist_msn(PLAYLIST, 2)
        await asyncio.sleep(0.05)
    assert seen == {1, 2}


async def test_pipelined_requests_answered_in_order(tier: Tier) -> None:
    """Three pipelined requests (hit, miss, hit) on one connection come back in order."""
    tier.stub.publish("/a.m4s", StubObject(b"A" * 10))
    tier.stub.publish("/c.m4s", StubObject(b"C" * 10))
    await tier.get("/a.m4s")
    await tier.get("/c.m4s")
    reader, writer = await asyncio.open_connection("127.0.0.1", tier.edge.port)
    req = "GET {} HTTP/1.1\r\nHost: x\r\n\r\n"
    writer.write((req.format("/a.m4s") + req.format("/b.m4s") + req.format("/c.m4s")).encode())
    await writer.drain()
    await until(lambda: tier.edge.waiting == 1)
    tier.stub.publish("/b.m4s", StubObject(b"B" * 10))
    data = b""
    async with asyncio.timeout(10):
        while data.count(b"HTTP/1.1 200") < 3 or not data.endswith(b"C" * 10):
            data += await reader.read(65536)
    writer.close()
    await writer.wait_closed()
    bodies = re.findall(rb"\r\n\r\n([ABC]{10})", data)
    assert bodies == [b"A" * 10, b"B" * 10, b"C" * 10]


async def test_truncated_upstream_body_is_never_served(tier: Tier) -> None:
    """An upstream that dies mid-body: the client's response is visibly cut (never a short segment that looks whole), and nothing is cached."""

    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 1000\r\n\r\n"
            + b"x" * 500
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(half, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    edge = EdgeServer(EdgeConfig("cdn-x", f"http://127.0.0.1:{port}"))
    await edge.start()
    try:
        with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
            await tier.client.get(edge.url + "/live/final/v360/5.m4s")
        assert "/live/final/v360/5.m4s" not in edge.cache
        # A HEAD is answered from the outcome, not the stream: an error, not a short length.
        r = await tier.client.head(edge.url + "/live/final/v360/5.m4s")
        assert r.status_code == 504
    finally:
        await edge.close()
        server.close()
        await server.wait_closed()


async def test_negative_404_cached_briefly(tier: Tier) -> None:
    """A 404 is cached (one upstream fetch for a burst) but the object appears within ~1 s."""
    tier.stub.hold_missing_s = 0
    assert (await tier.get("/live/final/v360/7.m4s")).status_code == 404
    assert (await tier.get("/live/final/v360/7.m4s")).status_code == 404
    assert tier.stub.fetches["/live/final/v360/7.m4s"] == 1
    tier.stub.publish("/live/final/v360/7.m4s", StubObject(b"now"))
    deadline = time.monotonic() + 5
    while (r := await tier.get("/live/final/v360/7.m4s")).status_code == 404:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert r.content == b"now"


async def test_tokens_checked_and_stripped_from_key() -> None:
    """With keys configured, /t/<token>/live/... is verified (403 + reason otherwise) and shares the plain key."""
    stub = StubUpstream()
    await stub.start()
    edge = EdgeServer(EdgeConfig("cdn-a", stub.url, token_keys={"k1": KEY_HEX}))
    await edge.start()
    signer = TokenSigner({"k1": KEY_HEX})
    now = int(time.time())
    good = signer.sign(acl="/live/final/*", start=now - 10, expires=now + 600, session_id="s1")
    good2 = signer.sign(acl="/live/final/*", start=now - 10, expires=now + 600, session_id="s2")
    expired = signer.sign(acl="/live/final/*", start=now - 100, expires=now - 50)
    other = signer.sign(acl="/live/other/*", start=now - 10, expires=now + 600)
    stub.publish(SEG, StubObject(b"seg"))
    try:
        async with httpx.AsyncClient(timeout=10) as c:
            r1 = await c.get(f"{edge.url}/t/{good}{SEG}")
            r2 = await c.get(f"{edge.url}/t/{good2}{SEG}")
            assert (r1.status_code, r2.status_code) == (200, 200)
            assert r2.headers["x-cache"] == "HIT"
            assert stub.fetches == {SEG: 1}
            for token, reason in ((expired, "expired"), (other, "acl_mismatch")):
                r = await c.get(f"{edge.url}/t/{token}{SEG}")
                assert r.status_code == 403
                assert r.json()["reason"] == reason
                assert r.headers["x-token-denied"] == reason
            r = await c.get(f"{edge.url}{SEG}")
            assert r.status_code == 403
            assert r.json()["reason"] == "missing"
            r = await c.get(f"{edge.url}/t/garbage{SEG}")
            assert r.json()["reason"] == "malformed"
    finally:
        await edge.close()
        await stub.stop()


async def test_fault_errors_region_and_metrics(tier: Tier) -> None:
    """A 100 % error drill for one region breaks only that region and shows in /metrics."""
    tier.stub.publish(SEG, StubObject(b"ok"))
    await tier.fault(error_rate=1.0, region="eu")
    assert (await tier.get(SEG, headers={"X-Client-Region": "eu"})).status_code == 503
    assert (await tier.get(SEG, headers={"X-Client-Region": "us"})).status_code == 200
    m = (await tier.get("/metrics")).text
    assert metric(m, "edge_fault_active", edge="cdn-a", region="eu") == 1
    assert metric(m, "edge_fault", setting="error_rate") == 1.0
    assert metric(m, "edge_requests_total", cache="FAULT") == 1
    r = await tier.client.delete(tier.edge.url + "/_edge/fault", headers={ADMIN_HEADER: SECRET})
    assert r.json()["fault"] is None
    assert (await tier.get(SEG, headers={"X-Client-Region": "eu"})).status_code == 200
    m = (await tier.get("/metrics")).text
    assert metric(m, "edge_fault_active", edge="cdn-a") == 0


async def test_admin_requires_secret(tier: Tier) -> None:
    """Without the shared secret the fault endpoint refuses to change anything."""
    r = await tier.client.post(tier.edge.url + "/_edge/fault", json={"error_rate": 1})
    assert r.status_code == 401
    r = await tier.client.post(
        tier.edge.url + "/_edge/fault", json={"error_rate": 1}, headers={ADMIN_HEADER: "nope"}
    )
    assert r.status_code == 401
    r = await tier.client.post(
        tier.edge.url + "/_edge/fault", json={"error_rate": 7}, headers={ADMIN_HEADER: SECRET}
    )
    assert r.status_code == 400
    assert tier.edge.fault is None


async def test_latency_throughput_stale_and_blackhole_drills(tier: Tier) -> None:
    """Latency delays, a throughput cap paces, serve-stale never goes upstream, blackhole never answers."""
    body = b"z" * 40_000
    tier.stub.publish(SEG, StubObject(body))
    await tier.get(SEG)
    await tier.fault(latency_ms=300)
    t0 = time.monotonic()
    assert (await tier.get(SEG)).content == body
    assert time.monotonic() - t0 >= 0.3
    await tier.fault(throughput_kbps=640)  # 80 kB/s → 40 kB takes ≥ 0.4 s
    t0 = time.monotonic()
    assert (await tier.get(SEG)).content == body
    assert time.monotonic() - t0 >= 0.4
    await tier.fault(serve_stale=True)
    r = await tier.get(SEG)
    assert (r.status_code, r.headers["x-cache"]) == (200, "STALE")
    assert (await tier.get("/live/final/v360/101.m4s")).status_code == 504
    assert "/live/final/v360/101.m4s" not in tier.stub.fetches
    await tier.fault(blackhole=True)
    with pytest.raises(httpx.ReadTimeout):
        await tier.client.get(tier.edge.url + SEG, timeout=0.5)


async def test_requests_held_by_a_latency_drill_follow_the_next_drill(tier: Tier) -> None:
    """A CDN that starts failing fails the requests it was holding at once; one that recovers
    answers them at once (a drill change is not delayed by the latency set before it)."""
    tier.stub.publish(SEG, StubObject(b"ok"))
    await tier.get(SEG)
    await tier.fault(latency_ms=30_000)
    applied = tier.edge.metrics.faults_applied
    held = asyncio.create_task(tier.get(SEG))
    await until(lambda: tier.edge.metrics.faults_applied > applied)  # held by the drill now
    await tier.fault(error_rate=1.0, error_status=503)
    r = await asyncio.wait_for(held, 10)  # the 30 s latency is not waited out
    assert (r.status_code, r.headers["x-edge-fault"]) == (503, "error")
    await tier.fault(latency_ms=30_000)
    applied = tier.edge.metrics.faults_applied
    held = asyncio.create_task(tier.get(SEG))
    await until(lambda: tier.edge.metrics.faults_applied > applied)  # held by the drill now
    r = await tier.client.delete(tier.edge.url + "/_edge/fault", headers={ADMIN_HEADER: SECRET})
    assert r.status_code == 200
    r = await asyncio.wait_for(held, 10)  # the 30 s latency is not waited out
    assert (r.status_code, r.content) == (200, b"ok")


@pytest.mark.slow
async def test_origin_down_stale_if_error_then_no_herd(tier: Tier) -> None:
    """Origin down 10 s: cached playlist and segment still served (STALE); on return, no herd."""
    tier.stub.set_playlist_msn(PLAYLIST, 5)
    tier.stub.publish(SEG, StubObject(b"seg", cache_control="max-age=1"))
    await tier.get(PLAYLIST)
    await tier.get(SEG)
    port = tier.stub.port
    await tier.stub.stop()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rs = await asyncio.gather(*(tier.get(p) for p in (PLAYLIST, SEG) * 20))
        assert all(r.status_code == 200 for r in rs)
        await asyncio.sleep(0.1)
    assert (await tier.get(PLAYLIST)).headers["x-cache"] == "STALE"
    tier.stub.fetches.clear()
    tier.stub.port = port
    await tier.stub.start()
    tier.stub.set_playlist_msn(PLAYLIST, 6)
    deadline = time.monotonic() + 5
    while b"6.m4s" not in (await tier.get(PLAYLIST)).content:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    rs = await asyncio.gather(*(tier.get(PLAYLIST) for _ in range(300)))
    assert all(r.status_code == 200 for r in rs)
    # A burst of 300 after recovery costs at most a couple of fetches per key, not 300.
    assert tier.stub.fetches[PLAYLIST] <= 3


async def test_fault_cli_sets_shows_and_clears(
    tier: Tier, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mainevent edge fault` drives the admin endpoint; a wrong secret is refused."""
    from mainevent.cli import main

    base = ["edge", "fault", "--edge", tier.edge.url, "--secret", SECRET]
    assert await asyncio.to_thread(main, [*base, "--errors", "0.5", "--region", "eu"]) == 0
    assert tier.edge.fault is not None
    assert (tier.edge.fault.error_rate, tier.edge.fault.region) == (0.5, "eu")
    assert await asyncio.to_thread(main, [*base, "--show"]) == 0
    assert '"error_rate": 0.5' in capsys.readouterr().out
    assert await asyncio.to_thread(main, [*base, "--clear"]) == 0
    assert tier.edge.fault is None
    wrong = ["edge", "fault", "--edge", tier.edge.url, "--secret", "x", "--blackhole"]
    assert await asyncio.to_thread(main, wrong) == 1
    assert tier.edge.fault is None
