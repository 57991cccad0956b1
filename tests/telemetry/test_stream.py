"""Scale-out through Redis Streams (real redis-server): two collectors publish, two aggregators
in one consumer group consume, and the query API shows what one in-process collector shows."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from mainevent.common.telemetry import AccessRecord, encode_access_batch
from mainevent.config import TelemetrySettings, TelemetryStreamSettings
from mainevent.control.telemetry.app import TelemetryService, create_app
from mainevent.control.telemetry.collector import Collector
from mainevent.control.telemetry.events import EventTiming
from mainevent.control.telemetry.sketch import RELATIVE_ACCURACY
from mainevent.control.telemetry.store import TelemetryStore
from mainevent.control.telemetry.stream import (
    StreamAggregator,
    StreamPublisher,
    StreamSink,
    WindowConsumer,
    shard_of,
)
from mainevent.testing.redis import RedisServer
from tests.telemetry.conftest import EVENT, T0, Clock, body, record

pytestmark = pytest.mark.anyio

TIMING = {EVENT: EventTiming(2000, 500)}
HOSTS = {"a.test:80": "cdn-a", "b.test:80": "cdn-b"}


def _settings(url: str = "redis://unused") -> TelemetrySettings:
    return TelemetrySettings(
        db_path=Path(":memory:"),
        cdn_hosts=HOSTS,
        stream=TelemetryStreamSettings(mode="redis", redis_url=url, shards=4, prefix="t"),
    )


def _session_bodies(rng: random.Random, sid: str, t0_ms: int, seconds: int) -> list[bytes]:
    """One body per second: start-up, then playing with response records, a stall here and there."""
    host = rng.choice(list(HOSTS))
    out = [
        body(
            record(e="t", ts=t0_ms, sn=0, sid=sid, sta="s", cid=EVENT),
            record(e="ps", ts=t0_ms + rng.randint(400, 3000), sn=1, sid=sid, sta="p", pb=(2500,)),
        )
    ]
    sn = 2
    for s in range(1, seconds):
        ts = t0_ms + s * 1000 + 500
        msn = (t0_ms + s * 1000) // 2000
        sta = "r" if rng.random() < 0.15 else "p"
        lines = [
            record(
                e="rr",
                ts=ts,
                sn=sn,
                sid=sid,
                sta=sta,
                url=f"http://{host}/live/{EVENT}/v720/{msn}.m4s",
                rc=200,
                ttfb=rng.randint(5, 80),
                ttlb=120,
                bl=(rng.randint(2000, 6000),),
                br=(2500,),
                ot="v",
            ),
            record(e="t", ts=ts + 200, sn=sn + 1, sid=sid, sta=sta, pb=(2500,)),
        ]
        sn += 2
        out.append(body(*lines))
    return out


def _access(rng: random.Random, t: float, n: int) -> bytes:
    return encode_access_batch(
        [
            AccessRecord(
                t,
                rng.choice(["cdn-a", "cdn-b"]),
                f"/live/{EVENT}/v720/{i}.m4s",
                rng.choice([200, 200, 200, 503]),
                1000,
                float(rng.randint(1, 90)),
                rng.choice(["HIT", "MISS"]),
                "127.0.0.5",
                rng.choice(["eu", "us"]),
                None,
                None,
            )
            for i in range(n)
        ]
    )


def test_sink_shards_by_session() -> None:
    """Every input of one session goes to the same shard (one aggregator holds its state)."""
    sink = StreamSink(4)
    assert shard_of("abc", 4) == shard_of("abc", 4)
    assert {shard_of(f"s{i}", 4) for i in range(100)} == {0, 1, 2, 3}
    assert sink.drain() == []


@pytest.fixture
async def rclient(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def _client(service: TelemetryService) -> httpx.AsyncClient:
    app = create_app(service, background=False)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://collector")


async def test_two_collectors_two_aggregators_equal_the_in_process_result(
    redis_server: RedisServer, rclient: aioredis.Redis, tmp_path: Path
) -> None:
    clock = Clock()
    settings = _settings(redis_server.url)
    # Reference: one collector aggregating in process.
    ref = TelemetryService(Collector(settings, TIMING), TelemetryStore(tmp_path / "r.db"), clock)
    # Stream mode: two ingest collectors, two aggregators (shards 0,1 and 2,3), one query node.
    ingest = []
    for _ in range(2):
        pub = StreamPublisher(rclient, settings)
        svc = TelemetryService(
            Collector(settings, TIMING, sink=pub.sink), TelemetryStore(":memory:"), clock
        )
        svc.publisher = pub
        ingest.append(svc)
    aggs = [
        StreamAggregator(rclient, settings, TIMING, shards=sh, consumer=f"agg-{i}", clock=clock)
        for i, sh in enumerate(([0, 1], [2, 3]))
    ]
    for a in aggs:
        await a.setup()
    query = TelemetryService(Collector(settings, TIMING), TelemetryStore(tmp_path / "q.db"), clock)
    windows = WindowConsumer(rclient, settings)
    await windows.setup()

    rng = random.Random(7)
    sessions = {
        f"sess-{i}": _session_bodies(rng, f"sess-{i}", int(T0 * 1000) + i * 37, 8)
        for i in range(40)
    }
    clients = [await _client(s) for s in (ref, *ingest, query)]
    ref_c, in_a, in_b, query_c = clients
    try:
        for second in range(8):
            for i, (_sid, bodies) in enumerate(sessions.items()):
                # A session sticks to one collector (as behind a hashing load balancer).
                via = in_a if i % 2 else in_b
                for c in (ref_c, via):
                    r = await c.post(
                        f"/v1/cmcd/{EVENT}",
                        content=bodies[second],
                        headers={"content-type": "application/cmcd"},
                    )
                    assert r.status_code == 204, r.text
            batch = _access(rng, clock.now, 50)
            for c in (ref_c, in_a if second % 2 else in_b):
                r = await c.post(
                    "/v1/access", content=batch, headers={"content-type": "application/json"}
                )
                assert r.status_code == 204, r.text
            clock.advance(1)
            ref.tick()
            for a in aggs:
                while await a.step(None):
                    pass
            query.ingest_windows(await windows.read(None))
        clock.advance(15)  # sessions expire: their exits and last windows close everywhere
        ref.tick()
        for a in aggs:
            await a.step(None)
        query.ingest_windows(await windows.read(None))
        assert all(a.applied > 0 for a in aggs)
        assert sum(p.published for p in (s.publisher for s in ingest) if p) > 0
        # Every entry was acknowledged: nothing pending in the group.
        for n in range(4):
            pending = await rclient.xpending(f"t:reports:{n}", "aggregators")
            assert pending["pending"] == 0

        params: dict[str, Any] = {
            "event": EVENT,
            "by": "cdn,region",
            "from": T0 - 2,
            "to": clock.now,
            "step": 1,
        }
        want = (await ref_c.get("/v1/telemetry/qoe", params=params)).json()["series"]
        got = (await query_c.get("/v1/telemetry/qoe", params=params)).json()["series"]
        assert [s["labels"] for s in got] == [s["labels"] for s in want]
        assert len(want) >= 2
        for ws, gs in zip(want, got, strict=True):
            assert [p["start"] for p in gs["points"]] == [p["start"] for p in ws["points"]]
            for wp, gp in zip(ws["points"], gs["points"], strict=True):
                for k, v in wp.items():
                    if k.endswith(("_p50_ms", "_p95_ms")) and v is not None:
                        # Merged sketches: within the sketch's relative-accuracy bound.
                        assert gp[k] == pytest.approx(v, rel=2 * RELATIVE_ACCURACY), k
                    elif isinstance(v, float):
                        assert gp[k] == pytest.approx(v, rel=1e-9, abs=1e-9), k
                    else:
                        assert gp[k] == v, k
        totals = [sum(p["play_attempts"] for s in x for p in s["points"]) for x in (want, got)]
        assert totals == [40, 40]
        # The comparison covered player figures, not only edge counters.
        points = [p for s in got for p in s["points"]]
        assert any(p["rebuffer_ratio"] for p in points)
        assert any(p["live_latency_p50_ms"] is not None for p in points)
        assert any(p["video_start_time_p95_ms"] is not None for p in points)
    finally:
        for c in clients:
            await c.aclose()
        for s in (ref, *ingest, query):
            s.store.close()


async def test_a_dead_stream_answers_503_with_retry_after(tmp_path: Path) -> None:
    """Reports admitted but not appended to the stream are not acknowledged with a 204."""
    settings = _settings("redis://127.0.0.1:9/0")  # nothing listens on the discard port
    client = aioredis.from_url(settings.stream.redis_url, socket_connect_timeout=1)
    pub = StreamPublisher(client, settings)
    svc = TelemetryService(
        Collector(settings, TIMING, sink=pub.sink), TelemetryStore(":memory:"), Clock()
    )
    svc.publisher = pub
    c = await _client(svc)
    try:
        r = await c.post(
            f"/v1/cmcd/{EVENT}",
            content=body(record(e="t", ts=int(T0 * 1000), sn=0, sid="x", sta="s")),
            headers={"content-type": "application/cmcd"},
        )
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"] == "stream_unavailable"
    finally:
        await c.aclose()
        await client.aclose()
        svc.store.close()


async def test_an_aggregator_takes_over_what_a_crashed_one_read_but_never_acked(
    rclient: aioredis.Redis,
) -> None:
    settings = _settings()
    clock = Clock()
    pub = StreamPublisher(rclient, settings)
    collector = Collector(settings, TIMING, sink=pub.sink)
    bodies = _session_bodies(random.Random(1), "orphan", int(T0 * 1000), 2)
    for b in bodies:
        out = collector.cmcd_report(
            EVENT,
            b,
            "application/cmcd",
            client="127.0.0.1",
            user_agent=None,
            region_header=None,
            now=clock.now,
        )
        assert out.status == 204
        await pub.flush()
    shard = shard_of("orphan", 4)
    stream = f"t:reports:{shard}"
    dead = StreamAggregator(rclient, settings, TIMING, shards=[shard], consumer="dead", clock=clock)
    await dead.setup()
    # The dead consumer reads (so the entries are pending on it) and never acknowledges.
    got = await rclient.xreadgroup("aggregators", "dead", {stream: ">"}, count=100)
    assert sum(len(e) for _, e in got) == 2
    assert (await rclient.xpending(stream, "aggregators"))["pending"] == 2
    heir = StreamAggregator(rclient, settings, TIMING, shards=[shard], consumer="heir", clock=clock)
    assert await heir.recover(min_idle_ms=0) == 2
    assert (await rclient.xpending(stream, "aggregators"))["pending"] == 0
    view = heir.aggregator.session("orphan")
    assert view is not None
    assert view.video_start_time_ms is not None
