"""The HTTP front: shedding before the framework, in priority order, without breaking HTTP/1.1."""

from __future__ import annotations

import gc
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
import httpx
import pytest
import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.types import ASGIApp, Receive, Scope, Send

from mainevent.common.admission import AdmissionController, AdmissionPolicy, Priority
from mainevent.control.app import create_app
from mainevent.control.db import open_database
from mainevent.control.front import FrontProtocol, frame_request, front_protocol
from mainevent.control.server import build_services, serve
from tests.control.conftest import ADMIN, make_settings

# -- the framer -----------------------------------------------------------------------------------


def _post(path: str, body: bytes, *headers: str) -> bytes:
    extra = "".join(h + "\r\n" for h in headers)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def test_framer_reads_method_path_and_end_of_plain_requests() -> None:
    """Complete requests are framed by their Content-Length; the query string is not part of the path."""
    get = b"GET /v1/events/final/status?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    post = _post("/v1/events/final/playback", b'{"device": {"id": "d"}}')
    assert frame_request(get) == ("GET", "/v1/events/final/status", len(get))
    assert frame_request(post) == ("POST", "/v1/events/final/playback", len(post))
    both = post + get  # pipelined: the second starts where the first ends
    assert frame_request(both) == ("POST", "/v1/events/final/playback", len(post))
    assert frame_request(both, len(post)) == ("GET", "/v1/events/final/status", len(both))


@pytest.mark.parametrize(
    "raw",
    [
        _post("/v1/purchases", b'{"event_id": "final"}')[:-1],  # body not all there yet
        b"GET /v1/events/final/status HTTP/1.1\r\nHost: x\r\n",  # head not all there yet
        b"GET /v1/events/final/status HTTP/1.0\r\nHost: x\r\n\r\n",
        b"GET http://x/v1/events/final/status HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/events/fin%61l/status HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET  /v1/events/final/status HTTP/1.1\r\nHost: x\r\n\r\n",
        b"get /v1/events/final/status HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /v1/purchases HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        _post("/v1/purchases", b"{}", "Expect: 100-continue"),
        _post("/v1/purchases", b"{}", "Connection: close"),
        _post("/v1/purchases", b"{}", "Upgrade: websocket"),
        _post("/v1/purchases", b"{}", "Content-Length: 2"),  # repeated
        b"POST /v1/purchases HTTP/1.1\r\nHost: x\r\nContent-Length : 2\r\n\r\n{}",
        b"POST /v1/purchases HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\n{}",
        b"POST /v1/purchases HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n{}",
        b"POST /v1/purchases HTTP/1.1\r\nHost: x\nContent-Length: 2\r\n\r\n{}",  # bare LF
        b"POST /v1/purchases HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n b\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /v1/purchases HTTP/1.1\r\nBad Name: 1\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /v1/purchases HTTP/1.1\r\nX-Nul: a\x00b\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /v1/purch\xe4ses HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
        b"FROB /v1/purchases HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
        b"HEAD /v1/events/final/status HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=[
        "partial-body",
        "partial-head",
        "http-1.0",
        "absolute-target",
        "percent-encoded",
        "double-space",
        "lowercase-method",
        "chunked",
        "expect",
        "connection",
        "upgrade",
        "two-content-lengths",
        "space-before-colon",
        "signed-length",
        "huge-body",
        "bare-lf",
        "folded-header",
        "space-in-header-name",
        "control-character",
        "non-ascii-target",
        "unknown-method",
        "head",
    ],
)
def test_framer_leaves_anything_unusual_to_the_full_parser(raw: bytes) -> None:
    """Requests whose framing is incomplete or unusual are not framed here (uvicorn's parser decides)."""
    assert frame_request(raw) is None


class _Messages:
    """httptools callbacks: the URL and method of each complete message."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.done: list[tuple[str, bytes]] = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        self.done.append((self.parser.get_method().decode(), self.url))
        self.url = b""


_HEADER_LINES = st.sampled_from(
    [
        b"Host: x",
        b"content-length: 3",
        b"Content-Length: 0",
        b"CONTENT-LENGTH:7",
        b"Content-Length: 3, 3",
        b"Transfer-Encoding: chunked",
        b"Connection: keep-alive",
        b"Expect: 100-continue",
        b"X-Forwarded-For: 10.0.0.1",
        b"Authorization: Bearer abc.def.ghi",
        b" folded",
        b"Bad Header: 1",
        b"X-Nul: a\x00b",
        b"X-Latin: caf\xe9",
        b"X-Tab:\tv",
        b"Host: x\r",
        b"Content-Length: 03",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from([b"GET", b"POST", b"DELETE", b"PATCH", b"HEAD", b"FROB"]),
    path=st.sampled_from([b"/v1/purchases", b"/v1/events/f/status?a=b", b"/healthz", b"/v1/s"]),
    headers=st.lists(_HEADER_LINES, max_size=5),
    body=st.binary(max_size=12),
    tail=st.binary(max_size=20),
    cut=st.integers(0, 200),
)
def test_framer_never_disagrees_with_httptools_about_where_a_request_ends(
    method: bytes, path: bytes, headers: list[bytes], body: bytes, tail: bytes, cut: int
) -> None:
    """Whenever the front frames a request, the full parser sees the same request ending at the same byte (no desync)."""
    raw = method + b" " + path + b" HTTP/1.1\r\n" + b"".join(h + b"\r\n" for h in headers)
    raw = (raw + b"\r\n" + body + tail)[: len(raw) + 2 + cut]
    framed = frame_request(raw)
    if framed is None:
        return
    got_method, got_path, end = framed
    assert got_method != "HEAD"  # its canned 503 would carry a body it must not have
    before = _Messages()
    before.parser.feed_data(raw[: end - 1])
    assert before.done == []  # not complete one byte early
    exact = _Messages()
    exact.parser.feed_data(raw[:end])
    assert len(exact.done) == 1
    assert exact.done[0][0] == got_method
    assert exact.done[0][1].partition(b"?")[0].decode() == got_path


# -- the front in a real server -------------------------------------------------------------------


@dataclass
class _Counting:
    """The ASGI app, counting the requests that reach it."""

    app: ASGIApp
    paths: list[str] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


@dataclass
class _Front:
    url: str
    port: int
    admission: AdmissionController
    app: _Counting
    server: uvicorn.Server

    def overload(self, delay: float) -> None:
        """Make the controller see ``delay`` seconds of event-loop lag."""
        self.admission.delay = delay


# Step functions: polls shed above 5 ms of lag, purchases above 10 ms, new starts above 50 ms.
_STEPS = AdmissionPolicy(
    delay_target=(float("inf"), 0.05, 0.01, 0.005), delay_full=(float("inf"), 0.05, 0.01, 0.005)
)


@pytest.fixture
def front(tmp_path: Path) -> Iterator[_Front]:
    """The control plane under uvicorn with the front protocol (1 s keep-alive), on SQLite."""
    db = open_database(f"sqlite:///{tmp_path}/c.db")
    services = build_services(make_settings(), db=db)
    services.admission = AdmissionController(_STEPS)
    app = _Counting(create_app(services))
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http=front_protocol(services.admission),
        loop="asyncio",
        lifespan="off",
        log_level="critical",
        access_log=False,
        timeout_keep_alive=1,
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
        yield _Front(f"http://127.0.0.1:{port}", port, services.admission, app, server)
    finally:
        server.should_exit = True
        thread.join(10)
        db.dispose()


class _Conn:
    """A raw keep-alive HTTP/1.1 connection: exact bytes out, responses parsed by Content-Length."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""

    def send(self, raw: bytes) -> None:
        self.sock.sendall(raw)

    def response(self, *, head_request: bool = False) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
        length = 0 if head_request else int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self._more()
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(lines[0].split()[1]), headers, body

    def closed_by_server(self) -> bool:
        """True once the server has closed the connection (polls up to 5 s)."""
        self.sock.settimeout(5)
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


def _settled(admission: AdmissionController) -> tuple[int, int]:
    """(in flight, queued) once nothing is in flight or queued any more, or after 5 s."""
    deadline = time.monotonic() + 5
    while True:
        stats = admission.statistics()
        if (stats.in_flight, stats.queued) == (0, 0) or time.monotonic() > deadline:
            return stats.in_flight, stats.queued
        time.sleep(0.01)


def _setup(front: _Front) -> dict[str, Any]:
    """A live event, a premium viewer and their playing session (granted while not overloaded)."""
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=front.url, timeout=5) as c:
        now = time.time()
        body = {
            "id": "final",
            "title": "Final",
            "starts_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60)),
            "ends_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 7200)),
            "policy": {"subscription_tiers": ["premium"]},
        }
        assert c.post("/v1/events", json=body, headers=admin | {"Idempotency-Key": "e"}).is_success
        for step in ("scheduled", "rehearsal", "live"):
            r = c.post(
                "/v1/events/final/transitions",
                json={"to": step},
                headers=admin | {"Idempotency-Key": step},
            )
            assert r.status_code == 200, r.text
        r = c.put(
            "/v1/accounts/v1", json={"plan": "premium"}, headers=admin | {"Idempotency-Key": "a"}
        )
        assert r.is_success, r.text
        jwt = c.post("/dev/idp/token", json={"sub": "v1"}).json()["access_token"]
        grant = c.post(
            "/v1/events/final/playback",
            json={"device": {"id": "d1"}},
            headers={"Authorization": f"Bearer {jwt}"},
        )
        assert grant.status_code == 200, grant.text
        return {"jwt": jwt, "grant": grant.json()}


def _requests(viewer: dict[str, Any]) -> dict[Priority, bytes]:
    jwt, grant = viewer["jwt"], viewer["grant"]
    auth = f"Authorization: Bearer {jwt}"
    token = grant["token"]
    return {
        Priority.REFRESH: _post(
            f"/v1/sessions/{grant['session_id']}/refresh", b'{"token": "%s"}' % token.encode(), auth
        ),
        Priority.NEW_START: _post("/v1/events/final/playback", b'{"device": {"id": "d2"}}', auth),
        Priority.PURCHASE: _post(
            "/v1/purchases", b'{"event_id": "final"}', auth, "Idempotency-Key: p"
        ),
        Priority.POLL: b"GET /v1/events/final/status HTTP/1.1\r\nHost: x\r\n\r\n",
    }


def test_rising_load_sheds_polls_then_purchases_then_new_starts_and_never_refreshes(
    front: _Front,
) -> None:
    """As lag rises each priority is refused in turn with 503 + Retry-After, before the app sees it; refreshes are always served."""
    reqs = _requests(_setup(front))
    conn = _Conn(front.port)
    expected = {
        0.0: {Priority.REFRESH: 200, Priority.NEW_START: 200, Priority.POLL: 200},
        0.007: {Priority.REFRESH: 200, Priority.NEW_START: 200, Priority.POLL: 503},
        0.02: {Priority.REFRESH: 200, Priority.NEW_START: 200, Priority.PURCHASE: 503},
        0.5: {Priority.REFRESH: 200, Priority.NEW_START: 503, Priority.PURCHASE: 503},
    }
    for delay, outcome in expected.items():
        front.overload(delay)
        for priority, status in outcome.items():
            reached = len(front.app.paths)
            conn.send(reqs[priority])
            got, headers, body = conn.response()
            assert (delay, priority, got) == (delay, priority, status), body
            if status == 503:
                assert 1 <= int(headers["retry-after"]) <= 10
                assert b'"reason": "overloaded"' in body
                assert len(front.app.paths) == reached  # refused before the framework
    conn.close()
    assert _settled(front.admission) == (0, 0)
    stats = front.admission.statistics()
    assert stats.shed[Priority.REFRESH] == 0


def test_retry_after_is_jittered_so_shed_clients_do_not_return_as_one_wave(front: _Front) -> None:
    """Shed polls are told to come back after different delays (5-7 s)."""
    front.overload(1.0)
    conn = _Conn(front.port)
    conn.send(b"GET /v1/events/final/status HTTP/1.1\r\nHost: x\r\n\r\n" * 60)  # pipelined
    waits = {int(conn.response()[1]["retry-after"]) for _ in range(60)}
    conn.close()
    assert waits <= {5, 6, 7}
    assert len(waits) >= 2
    assert front.app.paths == []


def test_requests_the_front_cannot_frame_are_still_shed_or_served_correctly(front: _Front) -> None:
    """Split, chunked and pipelined requests fall back to uvicorn's parser: same answers, in order, connection intact."""
    front.overload(0.02)  # polls and purchases shed, the rest admitted
    conn = _Conn(front.port)
    purchase = _post("/v1/purchases", b'{"event_id": "final"}')
    conn.send(purchase[:30])  # head split across reads
    time.sleep(0.05)
    conn.send(purchase[30:])
    assert conn.response()[0] == 503
    conn.send(
        b"POST /v1/purchases HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\n{}   \r\n0\r\n\r\n"
    )
    status, headers, _ = conn.response()
    assert (status, "retry-after" in headers) == (503, True)
    poll = b"GET /v1/events/final/status HTTP/1.1\r\nHost: x\r\n\r\n"
    conn.send(poll + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + poll + poll)
    assert [conn.response()[0] for _ in range(4)] == [503, 200, 503, 503]
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.response()[0] == 200
    conn.send(b"GET /v1/events/final/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, headers, _ = conn.response()
    assert (status, headers.get("connection")) == (503, "close")
    assert conn.closed_by_server()
    conn.close()
    assert _settled(front.admission) == (0, 0)


def test_a_shed_head_request_gets_no_body_and_the_connection_stays_in_step(front: _Front) -> None:
    """A HEAD that is shed is answered without a body (by the app, not the canned answer), so the next answer on the connection is read correctly."""
    front.overload(1.0)
    conn = _Conn(front.port)
    conn.send(
        b"HEAD /v1/purchases HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    status, headers, _ = conn.response(head_request=True)
    assert (status, "retry-after" in headers) == (503, True)
    status, _, body = conn.response()
    assert (status, body) == (200, b'{"status":"ok"}')
    conn.close()


def test_a_client_that_does_not_read_its_answers_is_paused_not_buffered_without_bound(
    front: _Front,
) -> None:
    """Pipelined requests from a client that reads nothing stop being read: the server does not buffer a canned answer for each."""
    front.overload(1.0)
    conn = _Conn(front.port)
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.sock.setblocking(False)
    burst = b"GET /v1/events/final/status HTTP/1.1\r\nHost: x\r\n\r\n" * 1000
    sent, stuck_since = 0, None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            sent += conn.sock.send(burst)
            stuck_since = None
        except BlockingIOError:
            stuck_since = stuck_since or time.monotonic()
            if time.monotonic() - stuck_since > 1.0:
                break  # back-pressure reached the client
            time.sleep(0.01)
    buffered = [p.transport.get_write_buffer_size() for p in front.server.server_state.connections]
    conn.close()
    assert stuck_since is not None, f"the server kept reading ({sent} bytes)"
    assert max(buffered) < 1_000_000  # vs ~200 bytes of answer per 47-byte request sent
    assert sent > 1_000_000  # it did read (and answer) a lot before pausing
    health = _Conn(front.port)  # and everyone else is still answered
    health.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert health.response()[0] == 200
    health.close()


def test_a_request_the_parser_rejects_is_answered_400_and_takes_no_slot(front: _Front) -> None:
    """A malformed request (control character in a header) gets uvicorn's 400, is never admitted and leaves nothing in flight."""
    conn = _Conn(front.port)
    conn.send(_post("/v1/events/final/playback", b"{}", "X-Bad: a\x00b"))
    assert conn.response()[0] == 400
    conn.close()
    assert _settled(front.admission) == (0, 0)
    assert front.admission.statistics().admitted[Priority.NEW_START] == 0


def test_a_request_admitted_at_the_door_but_refused_by_the_parser_gives_its_slot_back(
    front: _Front, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the framer ever accept what llhttp refuses, the admitted request's slot is withdrawn, not leaked."""
    lenient = ("POST", "/v1/events/final/playback", 10**9)
    monkeypatch.setattr("mainevent.control.front.frame_request", lambda data, start=0: lenient)
    conn = _Conn(front.port)
    conn.send(_post("/v1/events/final/playback", b"{}", "X-Bad: a\x00b"))
    assert conn.response()[0] == 400
    conn.close()
    assert _settled(front.admission) == (0, 0)
    assert front.admission.statistics().admitted[Priority.NEW_START] == 1


def test_idle_connections_still_time_out_after_answers_given_at_the_door(front: _Front) -> None:
    """Answers written by the front keep a connection alive only for the keep-alive timeout after the last one."""
    front.overload(1.0)
    conn = _Conn(front.port)
    poll = b"GET /v1/events/final/status HTTP/1.1\r\nHost: x\r\n\r\n"
    for _ in range(6):  # 1.5 s of activity with a 1 s keep-alive timeout
        conn.send(poll)
        assert conn.response()[0] == 503
        time.sleep(0.25)
    conn.send(poll)
    assert conn.response()[0] == 503  # still open
    t0 = time.monotonic()
    assert conn.closed_by_server()
    assert 0.5 < time.monotonic() - t0 < 3.0
    conn.close()


def test_serve_puts_the_front_in_front_of_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mainevent control serve` answers through the front bound to its services' admission controller (it once ran plain uvicorn)."""
    seen: dict[str, Any] = {}

    def run(app: Any, **kwargs: Any) -> None:
        seen.update(kwargs, app=app)

    monkeypatch.setattr(uvicorn, "run", run)
    settings = make_settings(database_url=f"sqlite:///{tmp_path}/c.db", data_dir=tmp_path)
    try:
        assert serve(settings) == 0
    finally:
        gc.unfreeze()
    protocol = seen["http"]
    assert isinstance(protocol, type)
    assert issubclass(protocol, FrontProtocol)
    assert protocol.admission is seen["app"].controller
