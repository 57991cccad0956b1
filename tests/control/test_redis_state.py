"""The Redis stores follow the sans-IO cores' rules exactly: same answers for any sequence of operations.

Hypothesis drives one memory core and its Redis store (a real redis-server) with the same
operations and times and compares every answer.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mainevent.common.ratelimit import KeyedRateLimiter, MemoryRateLimitStore
from mainevent.control.decisions import DecisionCache
from mainevent.control.entitlement import Denial
from mainevent.control.redis_state import (
    RedisDecisionStore,
    RedisRateLimitStore,
    RedisSessionStore,
    connect,
)
from mainevent.control.sessions import SessionRegistry
from mainevent.testing.redis import RedisServer, redis_server_binary

pytestmark = pytest.mark.skipif(redis_server_binary() is None, reason="redis-server missing")
T0 = 1_800_000_000.0
EXAMPLES = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """One redis-server for the module; each example starts from an empty keyspace."""
    with RedisServer() as server:
        yield server.url


def _flush(url: str) -> None:
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"FLUSHALL\r\n")
        assert s.recv(16).startswith(b"+OK")


session_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("start"),
            st.sampled_from(["a", "b"]),
            st.sampled_from(["tv", "phone", "laptop"]),
            st.integers(1, 2),
        ),
        st.tuples(st.just("heartbeat"), st.integers(0, 9)),
        st.tuples(st.just("end"), st.integers(0, 9)),
        st.tuples(st.just("get"), st.integers(0, 9)),
        st.tuples(st.just("advance"), st.sampled_from([1.0, 30.0, 61.0, 95.0])),
    ),
    max_size=30,
)


@EXAMPLES
@given(ops=session_ops)
def test_sessions_on_redis_answer_as_the_registry(redis_url: str, ops: list[Any]) -> None:
    """Starts, heartbeats, ends and expiry give the same sessions on Redis as in memory."""
    _flush(redis_url)

    async def run() -> None:
        client = connect(redis_url, timeout_s=5)
        core, store = SessionRegistry(90.0), RedisSessionStore(client, 90.0)
        now, ids = T0, []
        try:
            for op in ops:
                if op[0] == "start":
                    sid = f"s{len(ids)}"
                    kw = dict(session_id=sid, account_id=op[1], event_id="e", device_id=op[2])
                    want = core.start(now=now, limit=op[3], **kw)
                    got = await store.start(now=now, limit=op[3], **kw)
                    assert got == want, op
                    ids.append(sid)
                elif op[0] == "advance":
                    now += op[1]
                elif ids:
                    sid = ids[op[1] % len(ids)]
                    if op[0] == "end":
                        core.end(sid)
                        await store.end(sid)
                    else:
                        want = getattr(core, op[0])(sid, now)
                        assert await getattr(store, op[0])(sid, now) == want, op
        finally:
            await client.aclose()

    asyncio.run(run())


@EXAMPLES
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["k1", "k2"]),
            st.sampled_from([0.0, 0.1, 0.5, 2.0, 10.0]),
            st.sampled_from([1.0, 2.0]),
        ),
        max_size=40,
    )
)
def test_token_buckets_on_redis_answer_as_the_limiter(redis_url: str, ops: list[Any]) -> None:
    """Any sequence of takes waits exactly as long on Redis as in memory."""
    _flush(redis_url)

    async def run() -> None:
        client = connect(redis_url, timeout_s=5)
        core = KeyedRateLimiter(2.0, 5.0)
        store = RedisRateLimitStore(client, "t", 2.0, 5.0)
        now = T0
        try:
            for key, dt, cost in ops:
                now += dt
                assert await store.take(key, now, cost) == pytest.approx(
                    core.take(key, now, cost), abs=1e-9
                )
        finally:
            await client.aclose()

    asyncio.run(run())


@EXAMPLES
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["10.0.0.1", "10.0.0.2"]),
            st.sampled_from(["acc1", "acc2"]),
            st.sampled_from([0.0, 0.1, 0.5, 2.0]),
        ),
        max_size=40,
    )
)
def test_two_buckets_in_one_script_answer_as_two_takes_in_memory(
    redis_url: str, ops: list[Any]
) -> None:
    """Address then account bucket in one round trip: the same refusals, waits and spending as
    two takes in memory (the account is not charged when the address is refused)."""
    _flush(redis_url)

    async def run() -> None:
        client = connect(redis_url, timeout_s=5)
        mem_addr, mem_acc = MemoryRateLimitStore(3.0, 4.0), MemoryRateLimitStore(1.0, 2.0)
        addr = RedisRateLimitStore(client, "address", 3.0, 4.0)
        acc = RedisRateLimitStore(client, "account", 1.0, 2.0)
        now = T0
        try:
            for address, account, dt in ops:
                now += dt
                want = await mem_addr.take_in_turn(address, mem_acc, account, now)
                refused, wait = await addr.take_in_turn(address, acc, account, now)
                names = {id(mem_addr): "address", id(mem_acc): "account"}
                got = {id(addr): "address", id(acc): "account"}
                assert (got.get(id(refused)), wait) == (
                    names.get(id(want[0])),
                    pytest.approx(want[1], abs=1e-9),
                )
        finally:
            await client.aclose()

    asyncio.run(run())


decision_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("put"),
            st.sampled_from(["a", "b"]),
            st.sampled_from([None, Denial.PURCHASE_REQUIRED]),
        ),
        st.tuples(st.just("get"), st.sampled_from(["a", "b"])),
        st.tuples(st.just("known_good"), st.sampled_from(["a", "b"])),
        st.tuples(st.just("mark_known_good"), st.sampled_from(["a", "b"])),
        st.tuples(st.just("invalidate_account"), st.sampled_from(["a", "b"])),
        st.tuples(st.just("advance"), st.sampled_from([1.0, 59.0, 61.0, 7200.0])),
    ),
    max_size=30,
)


@EXAMPLES
@given(ops=decision_ops)
def test_decisions_on_redis_answer_as_the_cache(redis_url: str, ops: list[Any]) -> None:
    """Cached answers, generations and known-good memory behave the same on Redis as in memory."""
    _flush(redis_url)

    async def run() -> None:
        client = connect(redis_url, timeout_s=5)
        core = DecisionCache(60.0, 3600.0)
        store = RedisDecisionStore(client, 60.0, 3600.0)
        now = T0
        try:
            for op in ops:
                if op[0] == "advance":
                    now += op[1]
                elif op[0] == "put":
                    core.put(op[1], "e", op[2], now)
                    await store.put(op[1], "e", op[2], now)
                elif op[0] == "invalidate_account":
                    core.invalidate_account(op[1])
                    await store.invalidate_account(op[1])
                elif op[0] == "mark_known_good":
                    core.mark_known_good(op[1], "e", now)
                    await store.mark_known_good(op[1], "e", now)
                elif op[0] == "known_good":
                    assert await store.known_good(op[1], "e", now) == core.known_good(
                        op[1], "e", now
                    )
                else:
                    want, got = core.get(op[1], "e", now), await store.get(op[1], "e", now)
                    assert (got and got.denial, got and got.at) == (
                        want and want.denial,
                        want and want.at,
                    ), op
        finally:
            await client.aclose()

    asyncio.run(run())
