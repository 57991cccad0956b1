"""Sessions, rate limits and decisions on a real Redis: shared by two workers, defined when Redis fails.

Two control-plane workers here are two full service stacks (each its own Redis client, decision
and event snapshots) on one database and one Redis, each behind its own HTTP client; the
multi-process version behind nginx is ``tests/e2e/test_control_workers.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from mainevent.control.app import create_app
from mainevent.control.db import Database
from mainevent.control.payments import FakePaymentProvider
from mainevent.control.server import build_services
from mainevent.testing.redis import RedisServer
from tests.control.conftest import FakeClock, Harness, make_settings
from tests.control.test_playback_api import (
    test_concurrent_stream_limit_with_heartbeats_and_expiry,
    test_plan_change_invalidates_cached_decision,
    test_refresh_renews_the_token_and_checks_ownership,
    test_waiting_room_preauthorisation_token_valid_from_start,
)
from tests.control.test_purchases_api import test_purchase_then_play_and_replay_later

# The playback API tests above run again here, on Redis (through the `harness` fixture below).
__all__ = [
    "test_concurrent_stream_limit_with_heartbeats_and_expiry",
    "test_plan_change_invalidates_cached_decision",
    "test_purchase_then_play_and_replay_later",
    "test_refresh_renews_the_token_and_checks_ownership",
    "test_waiting_room_preauthorisation_token_valid_from_start",
]


pytestmark = pytest.mark.anyio


@pytest.fixture
def settings_overrides(redis_server: RedisServer) -> dict[str, Any]:
    """Every harness of this module keeps its playback state on the test's Redis."""
    return {"redis_url": redis_server.url}


@pytest.fixture
async def harness(harness: Harness) -> AsyncIterator[Harness]:
    """The package harness, its Redis connections closed afterwards."""
    yield harness
    await harness.services.playback.aclose()


Workers = tuple[Harness, Harness]
MakeWorkers = Callable[..., Awaitable[Workers]]


@pytest.fixture
async def make_workers(database: Database, redis_server: RedisServer) -> AsyncIterator[MakeWorkers]:
    """``await make_workers(**settings)``: workers A and B on the database and Redis, one clock."""
    async with AsyncExitStack() as stack:

        async def make(**overrides: Any) -> Workers:
            clock = FakeClock()
            pair = []
            for _ in range(2):
                payments = FakePaymentProvider(latency_s=0.0)
                services = build_services(
                    make_settings(redis_url=redis_server.url, **overrides),
                    db=database,
                    payments=payments,
                    clock=clock,
                )
                stack.push_async_callback(services.playback.aclose)
                client = await stack.enter_async_context(
                    httpx.AsyncClient(
                        transport=httpx.ASGITransport(app=create_app(services)),
                        base_url="http://control",
                    )
                )
                pair.append(Harness(services, client, clock, payments, None))  # type: ignore[arg-type]
            return pair[0], pair[1]

        yield make


def _reason(r: httpx.Response) -> str:
    return str(r.json()["error"]["reason"])


async def test_stream_limit_holds_across_two_workers(make_workers: MakeWorkers) -> None:
    """An account at its 2-stream limit is refused a third stream on either worker until one stops."""
    workers = a, b = await make_workers()
    await a.event("final", "live", policy={"max_streams": 2})
    await a.account("v1")
    tv = await a.play("v1", device="tv")
    phone = await b.play("v1", device="phone")
    assert (tv.status_code, phone.status_code) == (200, 200)
    for w in workers:
        r = await w.play("v1", device="laptop")
        assert (r.status_code, _reason(r)) == (403, "concurrent_stream_limit")
    # The session opened on A is ended through B, and the slot is free on both.
    stop = await b.client.delete(f"/v1/sessions/{tv.json()['session_id']}", headers=b.viewer("v1"))
    assert stop.status_code == 204
    assert (await a.play("v1", device="laptop")).status_code == 200
    # A heartbeat on A keeps B's session alive past its TTL; the other one expires.
    a.clock.advance(60)
    hb = await a.client.post(
        f"/v1/sessions/{phone.json()['session_id']}/heartbeat", headers=a.viewer("v1")
    )
    assert hb.status_code == 200
    a.clock.advance(60)
    assert (await b.play("v1", device="console")).status_code == 200
    r = await a.play("v1", device="tablet")
    assert _reason(r) == "concurrent_stream_limit"


async def test_simultaneous_starts_on_two_workers_take_only_the_free_slots(
    make_workers: MakeWorkers,
) -> None:
    """Ten devices pressing play at once on both workers: exactly the limit (3) get a stream."""
    workers = a, b = await make_workers()
    await a.event("final", "live", policy={"max_streams": 3})
    await a.account("v1")
    await a.play("v1", device="warm")  # event snapshots and decisions cached on both workers
    warm = (await b.play("v1", device="warm")).json()  # same device: replaces A's session
    await b.client.delete(f"/v1/sessions/{warm['session_id']}", headers=b.viewer("v1"))
    results = await asyncio.gather(
        *(w.play("v1", device=f"d{i}-{k}") for i in range(5) for k, w in enumerate(workers))
    )
    codes = sorted(r.status_code for r in results)
    assert codes == [200] * 3 + [403] * 7


async def test_rate_limit_is_one_bucket_across_workers(make_workers: MakeWorkers) -> None:
    """An account's burst of 4 is spent across both workers together, not 4 on each."""
    workers = a, b = await make_workers(account_rate=0.5, account_burst=4.0)
    await a.event("final", "live")
    await a.account("v1")
    codes = [(await w.play("v1", device="d")).status_code for _ in range(2) for w in workers]
    assert codes == [200, 200, 200, 200]
    for w in workers:
        r = await w.play("v1", device="d")
        assert (r.status_code, _reason(r)) == (429, "rate_limited")
        assert int(r.headers["retry-after"]) >= 1
    a.clock.advance(2.0)  # one token back, for whichever worker asks first
    assert (await b.play("v1", device="d")).status_code == 200
    assert _reason(await a.play("v1", device="d")) == "rate_limited"


async def test_plan_change_on_one_worker_is_seen_by_the_other(make_workers: MakeWorkers) -> None:
    """A denial cached on B is dropped as soon as an operator upgrades the account through A."""
    a, b = await make_workers()
    await a.event("final", "live", policy={"subscription_tiers": ["premium"]})
    await a.account("v1", plan="basic")
    assert _reason(await b.play("v1")) == "subscription_required"
    await a.account("v1", plan="premium")
    assert (await b.play("v1")).status_code == 200


async def test_redis_down_new_starts_503_refreshes_go_on_then_restart_keeps_limits(
    make_workers: MakeWorkers, redis_server: RedisServer
) -> None:
    """Redis killed: new starts, heartbeats get a retryable 503, playing viewers refresh; never a 500.

    After a restart (an empty Redis) the playing viewers' refreshes re-register their sessions,
    and the stream limit holds again across both workers.
    """
    workers = a, b = await make_workers()
    await a.event("final", "live", policy={"max_streams": 2})
    await a.account("v1")
    grants = [
        (await w.play("v1", device=d)).json() for w, d in zip(workers, ("tv", "phone"), strict=True)
    ]

    redis_server.stop(kill=True)
    for w in workers:
        r = await w.play("v1", device="laptop")
        assert (r.status_code, _reason(r)) == (503, "session_store_unavailable")
        assert r.json()["error"]["retryable"] is True
        assert int(r.headers["retry-after"]) >= 1
        hb = await w.client.post(
            f"/v1/sessions/{grants[0]['session_id']}/heartbeat", headers=w.viewer("v1")
        )
        assert (hb.status_code, _reason(hb)) == (503, "session_store_unavailable")
        assert (await w.client.get("/metrics")).status_code == 200
    for g, w in zip(grants, (b, a), strict=True):  # each refreshed on the other worker
        r = await w.client.post(
            f"/v1/sessions/{g['session_id']}/refresh",
            json={"token": g["token"]},
            headers=w.viewer("v1"),
        )
        assert r.status_code == 200, r.text
        assert r.json()["degraded"] is True

    redis_server.start()  # empty: sessions, buckets and decisions are gone
    for g, w in zip(grants, workers, strict=True):
        r = await w.client.post(
            f"/v1/sessions/{g['session_id']}/refresh",
            json={"token": g["token"]},
            headers=w.viewer("v1"),
        )
        assert (r.status_code, r.json()["degraded"]) == (200, False)
    for w in workers:
        r = await w.play("v1", device="laptop")
        assert (r.status_code, _reason(r)) == (403, "concurrent_stream_limit")


async def test_persistent_redis_restart_keeps_sessions(
    make_workers: MakeWorkers, redis_server: RedisServer
) -> None:
    """With persistence (AOF) a Redis restart loses nothing: the limit holds at once."""
    a, b = await make_workers()
    redis_server.stop()
    redis_server.persist = True
    redis_server.start()
    await a.event("final", "live", policy={"max_streams": 1})
    await a.account("v1")
    assert (await a.play("v1", device="tv")).status_code == 200
    redis_server.restart()
    r = await b.play("v1", device="phone")
    assert (r.status_code, _reason(r)) == (403, "concurrent_stream_limit")
