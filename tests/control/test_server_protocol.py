"""The real server adapter: admission decided while parsing, canned 503s, keep-alive framing intact."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from mainevent.common.admission import AdmissionController, AdmissionPolicy
from mainevent.control.app import create_app
from mainevent.control.db import open_database
from mainevent.control.front import front_protocol
from mainevent.control.server import build_services
from tests.control.conftest import make_settings


@pytest.fixture
def shedding_server(tmp_path: Path) -> Iterator[tuple[str, AdmissionController]]:
    """uvicorn with the front protocol whose admission sheds every purchase and every status poll."""
    db = open_database(f"sqlite:///{tmp_path}/c.db")
    services = build_services(make_settings(), db=db)
    services.admission = AdmissionController(AdmissionPolicy(in_flight_share=(1.0, 1.0, 0.0, 0.0)))
    app = create_app(services)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http=front_protocol(services.admission),
        loop="asyncio",
        lifespan="off",
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", services.admission
    finally:
        server.should_exit = True
        thread.join(10)
        db.dispose()


def test_shed_requests_get_canned_503_and_the_connection_keeps_working(
    shedding_server: tuple[str, AdmissionController],
) -> None:
    """Shed polls and purchases (with bodies) get 503 + Retry-After; later requests on the same connection are answered normally."""
    url, admission = shedding_server
    with httpx.Client(base_url=url, timeout=5) as client:
        for _ in range(2):
            r = client.get("/v1/events/final/status")
            assert r.status_code == 503
            assert r.json()["error"]["reason"] == "overloaded"
            assert int(r.headers["retry-after"]) >= 5
            r = client.post(
                "/v1/purchases",
                json={"event_id": "final", "pad": "x" * 5000},
                headers={"Idempotency-Key": "k"},
            )
            assert r.status_code == 503
            assert r.json()["error"]["details"] == {"priority": "purchase"}
        ok = client.get("/healthz")
        assert ok.status_code == 200
        assert ok.json() == {"status": "ok"}
        start = client.post("/v1/events/final/playback", json={"device": {"id": "d"}})
        assert start.status_code == 401  # admitted, then refused for lack of a viewer token
        assert client.get("/healthz").status_code == 200
    stats = admission.statistics()
    assert stats.in_flight == 0  # every admitted request released its slot
    assert stats.shed[2:] == (2, 2)
    assert stats.admitted[1] == 1


@pytest.fixture
def plain_server(tmp_path: Path) -> Iterator[str]:
    """uvicorn with the front protocol and the default admission policy, as `control serve` runs it."""
    db = open_database(f"sqlite:///{tmp_path}/c.db")
    services = build_services(make_settings(), db=db)
    config = uvicorn.Config(
        create_app(services),
        host="127.0.0.1",
        port=0,
        http=front_protocol(services.admission),
        loop="asyncio",
        lifespan="off",
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        db.dispose()


def test_a_20_mb_playback_body_is_413_over_real_http_declared_or_chunked(plain_server: str) -> None:
    """Through the real front and uvicorn a 20 MB playback body is 413 body_too_large (it was 503 overloaded)."""
    payload = b'{"device": {"id": "' + b"x" * (20 * 1024 * 1024) + b'"}}'

    def chunked() -> Iterator[bytes]:
        for i in range(0, len(payload), 256 * 1024):
            yield payload[i : i + 256 * 1024]

    with httpx.Client(base_url=plain_server, timeout=30) as client:
        for content in (payload, chunked()):
            r = client.post(
                "/v1/events/final/playback",
                content=content,
                headers={"Content-Type": "application/json"},
            )
            assert r.status_code == 413, r.text[:300]
            assert r.json()["error"]["reason"] == "body_too_large"
            assert len(r.content) < 1000
        assert client.get("/healthz").status_code == 200  # a new connection serves as usual
