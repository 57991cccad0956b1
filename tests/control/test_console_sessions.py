"""Console sessions in shared state: the memory, database (SQLite, PostgreSQL) and Redis stores
answer alike; a login survives a control-plane restart over the same database (or Redis) and
is known to a second worker; logout and expiry end it everywhere."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mainevent.control.app import create_app
from mainevent.control.console.session_stores import (
    DatabaseConsoleSessionStore,
    RedisConsoleSessionStore,
)
from mainevent.control.console.sessions import (
    COOKIE,
    ConsoleSession,
    ConsoleSessionStore,
    MemoryConsoleSessionStore,
    session_digest,
)
from mainevent.control.db import Database, open_database
from mainevent.control.redis_state import connect
from mainevent.control.server import build_services
from mainevent.control.settings import ControlSettings
from mainevent.control.store import Actor
from mainevent.testing.redis import RedisServer, redis_server_binary
from tests.control.conftest import API_KEYS, OPERATOR, READER, FakeClock, make_settings

T0 = 1_800_000_000.0
TTL = 100.0
needs_redis = pytest.mark.skipif(redis_server_binary() is None, reason="redis-server missing")


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


# -- the stores agree ------------------------------------------------------------------------------

store_ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 3), st.sampled_from(["oscar", "rita"])),
        st.tuples(st.just("get"), st.integers(0, 3)),
        st.tuples(st.just("delete"), st.integers(0, 3)),
        st.tuples(st.just("advance"), st.sampled_from([1.0, 50.0, 99.0, 101.0])),
    ),
    max_size=25,
)
EXAMPLES = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


async def _agree(store: ConsoleSessionStore, ops: list[Any]) -> None:
    """Run `ops` on `store` and on the memory store; every answer must be the same."""
    ref = MemoryConsoleSessionStore()
    now = T0
    for n, op in enumerate(ops):
        if op[0] == "advance":
            now += op[1]
            continue
        digest = f"{op[1]:064x}"
        if op[0] == "put":
            role = "operator" if op[2] == "oscar" else "read-only"
            s = ConsoleSession(Actor(op[2], role), f"csrf-{n}", now, now + TTL)
            await ref.put(digest, s)
            await store.put(digest, s)
        elif op[0] == "get":
            assert await store.get(digest, now) == await ref.get(digest, now), (n, op)
        else:
            await ref.delete(digest)
            await store.delete(digest)
    for i in range(4):  # and the end state is the same
        digest = f"{i:064x}"
        assert await store.get(digest, now) == await ref.get(digest, now)


@EXAMPLES
@given(ops=store_ops)
def test_the_database_store_answers_as_the_memory_store(database: Database, ops: list[Any]) -> None:
    """Put, get, delete and expiry give the same sessions in SQLite/PostgreSQL as in memory."""
    from sqlalchemy import delete

    from mainevent.control.db import ConsoleSessionRow

    with database.write.begin() as tx:
        tx.execute(delete(ConsoleSessionRow))
    asyncio.run(_agree(DatabaseConsoleSessionStore(database), ops))


@needs_redis
@EXAMPLES
@given(ops=store_ops)
def test_the_redis_store_answers_as_the_memory_store(redis_url: str, ops: list[Any]) -> None:
    """Put, get, delete and expiry give the same sessions on Redis as in memory."""

    async def run() -> None:
        client = connect(redis_url, timeout_s=5)
        await client.flushall()
        store = RedisConsoleSessionStore(client, "t:")
        try:
            await _agree(store, ops)
        finally:
            await store.aclose()

    asyncio.run(run())


# -- through the app: restarts, workers, logout ---------------------------------------------------


@asynccontextmanager
async def control_app(
    settings: ControlSettings, db_url: str, clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    """One control-plane process (services, app, lifespan) over the database at `db_url`."""
    db = open_database(db_url)
    services = build_services(settings, db=db, clock=clock)
    app = create_app(services)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://control"
        ) as client:
            yield client
    finally:
        # What the app's lifespan does at shutdown.
        await services.playback.aclose()
        assert services.console is not None
        await services.console.sessions.store.aclose()
        db.dispose()


async def _login(client: httpx.AsyncClient, key: str) -> tuple[str, str]:
    r = await client.post("/console/api/login", json={"key": key})
    assert r.status_code == 200, r.text
    return r.cookies[COOKIE], r.json()["csrf"]


async def _whoami(client: httpx.AsyncClient, cookie: str) -> httpx.Response:
    return await client.get("/console/api/session", headers=_cookie(cookie))


def _cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={value}"}


def _settings(redis: str | None = None, **console: Any) -> ControlSettings:
    return make_settings(redis_url=redis, console={"session_ttl_s": 600, **console})


async def _restart_keeps_the_session(settings: ControlSettings, db_url: str) -> None:
    clock = FakeClock(T0)
    async with control_app(settings, db_url, clock) as first:
        cookie, csrf = await _login(first, OPERATOR)
        assert (await _whoami(first, cookie)).json()["name"] == "oscar"
    # The control plane restarts: a new process, the same database (and Redis).
    async with control_app(settings, db_url, clock) as second:
        me = await _whoami(second, cookie)
        assert me.status_code == 200, me.text
        assert me.json()["name"] == "oscar"
        assert me.json()["csrf"] == csrf
        # A change with the cookie and its CSRF token is accepted by the restarted process.
        created = await second.post(
            "/v1/events",
            json={"id": "final", "title": "Final"},
            headers=_cookie(cookie) | {"X-CSRF-Token": csrf, "Idempotency-Key": "k1"},
        )
        assert created.status_code == 201, created.text
        out = await second.post("/console/api/logout", headers=_cookie(cookie))
        assert out.status_code == 204
    async with control_app(settings, db_url, clock) as third:
        gone = await _whoami(third, cookie)
        assert gone.status_code == 401
        assert gone.json()["error"]["reason"] == "not_signed_in"


@pytest.mark.anyio
async def test_a_login_survives_a_restart_over_the_same_database_and_logout_ends_it(
    tmp_path: Path,
) -> None:
    """Signed in, the control plane restarts (SQLite file kept): still signed in, changes
    accepted; after logout another restart does not bring the session back."""
    await _restart_keeps_the_session(_settings(), f"sqlite:///{tmp_path / 'control.db'}")


@needs_redis
@pytest.mark.anyio
async def test_a_login_survives_a_restart_with_sessions_on_redis(
    tmp_path: Path, redis_url: str
) -> None:
    """With `redis_url` the sessions live on Redis: a restart keeps them, logout ends them."""
    settings = _settings(redis_url)
    await _restart_keeps_the_session(settings, f"sqlite:///{tmp_path / 'control.db'}")
    client = connect(redis_url, timeout_s=5)
    try:
        keys = [k async for k in client.scan_iter(match=f"{settings.redis_prefix}cs:*")]
    finally:
        await client.aclose()
    assert keys == []  # logout deleted it; the database holds no copy either way


@pytest.mark.anyio
async def test_two_workers_over_one_database_share_logins_and_logouts(tmp_path: Path) -> None:
    """Signed in on one worker, known to the other; signed out on the other, gone on both."""
    url = f"sqlite:///{tmp_path / 'control.db'}"
    clock = FakeClock(T0)
    async with control_app(_settings(), url, clock) as a, control_app(_settings(), url, clock) as b:
        cookie, _ = await _login(a, READER)
        assert (await _whoami(b, cookie)).json()["role"] == "read-only"
        assert (await b.post("/console/api/logout", headers=_cookie(cookie))).status_code == 204
        assert (await _whoami(a, cookie)).status_code == 401


@pytest.mark.anyio
async def test_stored_sessions_expire_and_are_kept_only_by_their_digest(tmp_path: Path) -> None:
    """After `session_ttl_s` the stored session no longer signs in, and the database never held
    the cookie value itself."""
    url = f"sqlite:///{tmp_path / 'control.db'}"
    clock = FakeClock(T0)
    async with control_app(_settings(), url, clock) as client:
        cookie, _ = await _login(client, OPERATOR)
    raw = (tmp_path / "control.db").read_bytes() + _wal(tmp_path)
    assert session_digest(cookie).encode() in raw
    assert cookie.encode() not in raw
    clock.advance(601)
    async with control_app(_settings(), url, clock) as client:
        assert (await _whoami(client, cookie)).status_code == 401


def _wal(tmp_path: Path) -> bytes:
    wal = tmp_path / "control.db-wal"
    return wal.read_bytes() if wal.exists() else b""


@pytest.mark.anyio
async def test_a_session_of_a_key_no_longer_configured_is_refused_after_a_restart(
    tmp_path: Path,
) -> None:
    """Removing an operator's key from the settings ends their stored console sessions."""
    url = f"sqlite:///{tmp_path / 'control.db'}"
    clock = FakeClock(T0)
    async with control_app(_settings(), url, clock) as client:
        cookie, _ = await _login(client, OPERATOR)
    without_oscar = tuple(k for k in API_KEYS if k.name != "oscar")
    settings = make_settings(api_keys=without_oscar, console={"session_ttl_s": 600})
    async with control_app(settings, url, clock) as client:
        assert (await _whoami(client, cookie)).status_code == 401


@needs_redis
@pytest.mark.anyio
async def test_redis_down_is_a_precise_503_not_a_crash(tmp_path: Path) -> None:
    """With the session store unreachable a login answers 503 `console_sessions_unavailable`
    with Retry-After (API keys keep working)."""
    with RedisServer() as server:
        settings = _settings(server.url)
        server.stop()
        async with control_app(settings, f"sqlite:///{tmp_path / 'c.db'}", FakeClock(T0)) as c:
            r = await c.post("/console/api/login", json={"key": OPERATOR})
            assert r.status_code == 503, r.text
            assert r.json()["error"]["reason"] == "console_sessions_unavailable"
            assert r.headers["retry-after"] == "1"
            keyed = await c.get("/v1/events", headers={"Authorization": f"Bearer {OPERATOR}"})
            assert keyed.status_code == 200
