"""Two real control-plane worker processes behind nginx, one Redis: the limits are the fleet's.

`mainevent control serve --workers 2` runs here as operators run it; requests go through nginx
or straight to one worker, so a limit that held only per worker would show.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mainevent.control.auth import DevIdentityProvider
from mainevent.control.fleet import find_nginx
from mainevent.control.settings import DEV_IDP_SECRET
from mainevent.testing.fleet import ControlFleet
from mainevent.testing.redis import RedisServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.e2e,
    pytest.mark.skipif(find_nginx() is None, reason="Debian nginx is not installed"),
]

IDP = DevIdentityProvider(secret=DEV_IDP_SECRET, issuer="mainevent-dev-idp", audience="mainevent")


@pytest.fixture
def fleet(redis_server: RedisServer, tmp_path: Path) -> Iterator[ControlFleet]:
    """Two workers behind nginx; accounts get a burst of 20 requests, then one per 20 s."""
    f = ControlFleet(
        workers=2,
        redis_url=redis_server.url,
        data_dir=tmp_path / "data",
        settings={"account_rate": 0.05, "account_burst": 20},
    )
    try:
        f.wait_ready()
        yield f
    finally:
        f.close()
    # SIGTERM stops the workers and nginx and the launcher exits 0 (not SIGKILLed after 30 s)
    assert f.proc.returncode == 0, f.log_tail()


def _viewer(account: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {IDP.mint(account, ttl_s=3600)}"}


def _setup(fleet: ControlFleet) -> None:
    fleet.live_event("final", {"max_streams": 2})
    op = {"Authorization": f"Bearer {fleet.admin_key}"}
    for account in ("v1", "v2"):
        r = httpx.put(
            f"{fleet.url}/v1/accounts/{account}",
            json={},
            headers=op | {"Idempotency-Key": account},
            timeout=10,
        )
        assert r.status_code in (200, 201), r.text


def _refresh(url: str, grant: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/sessions/{grant['session_id']}/refresh",
        json={"token": grant["token"]},
        headers=_viewer("v1"),
        timeout=10,
    )


def _play(url: str, account: str, device: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/events/final/playback",
        json={"device": {"id": device}},
        headers=_viewer(account),
        timeout=10,
    )


def _reason(r: httpx.Response) -> str:
    return str(r.json()["error"]["reason"])


def _console_login(url: str, key: str) -> str:
    r = httpx.post(f"{url}/console/api/login", json={"key": key}, timeout=10)
    assert r.status_code == 200, r.text
    return r.cookies["mainevent_console"]


def _console_session(url: str, cookie: str) -> httpx.Response:
    return httpx.get(
        f"{url}/console/api/session", headers={"Cookie": f"mainevent_console={cookie}"}, timeout=10
    )


def test_two_workers_share_stream_and_rate_limits_and_survive_a_kill_and_a_redis_restart(
    fleet: ControlFleet, redis_server: RedisServer
) -> None:
    """One account, two workers: one stream limit, one rate bucket, one console login; a killed
    worker or Redis is no 500."""
    _setup(fleet)
    w0, w1 = fleet.worker_urls
    # A console login on one worker is known to the other (sessions on Redis).
    cookie = _console_login(w0, fleet.admin_key)
    assert _console_session(w1, cookie).status_code == 200
    # Stream limit 2: a stream opened on each worker, then a third is refused by both.
    tv, phone = _play(w0, "v1", "tv"), _play(w1, "v1", "phone")
    assert (tv.status_code, phone.status_code) == (200, 200)
    for url in (w0, w1, fleet.url):
        r = _play(url, "v1", "laptop")
        assert (r.status_code, _reason(r)) == (403, "concurrent_stream_limit")

    # Rate limit: v2's burst of 20 is spent across both workers together.
    codes = [_play(url, "v2", "d").status_code for _ in range(10) for url in (w0, w1)]
    assert codes == [200] * 20
    for url in (w0, w1):
        r = _play(url, "v2", "d")
        assert (r.status_code, _reason(r)) == (429, "rate_limited")

    # A worker killed: nginx sends everything to the other one; the launcher restarts it.
    fleet.kill_worker(0)
    grant = tv.json()
    for _ in range(6):
        r = _refresh(fleet.url, grant)
        assert r.status_code == 200, r.text
    deadline = time.monotonic() + 60
    while fleet.state()["workers"][0]["restarts"] < 1:
        assert time.monotonic() < deadline, fleet.log_tail()
        time.sleep(0.2)
    fleet.wait_ready()
    # The restarted worker knows the console login made before it was killed.
    for url in fleet.worker_urls:
        assert _console_session(url, cookie).status_code == 200

    # Redis down: new starts are a retryable 503 through nginx, refreshes go on; then back.
    redis_server.stop(kill=True)
    r = _play(fleet.url, "v1", "laptop")
    assert (r.status_code, _reason(r)) == (503, "session_store_unavailable")
    r = _refresh(fleet.url, grant)
    assert (r.status_code, r.json()["degraded"]) == (200, True)
    r = _console_session(fleet.url, cookie)
    assert (r.status_code, _reason(r)) == (503, "console_sessions_unavailable")
    redis_server.start()
    for g in (grant, phone.json()):  # the playing devices re-register by refreshing
        r = _refresh(fleet.url, g)
        assert (r.status_code, r.json()["degraded"]) == (200, False)
    for url in (w0, w1):
        r = _play(url, "v1", "laptop")
        assert (r.status_code, _reason(r)) == (403, "concurrent_stream_limit")
