"""The front's lean playback path answers exactly as the FastAPI route does (SQLite + PostgreSQL).

Every case sends the same request bytes, in the same order, to two real servers over loopback:
one with the lean path (`lean_playback`, the default) and one where every request goes through
the FastAPI route. Both share the database and one fake clock; their responses must be equal
(status, headers but `date`, body) once the random session id is put aside.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httptools
import pytest
import uvicorn

from mainevent.common.admission import AdmissionController, AdmissionPolicy, Admitted, Priority
from mainevent.control.app import ControlServices, create_app
from mainevent.control.db import Database
from mainevent.control.front import front_protocol
from mainevent.control.playback_front import PlaybackFront
from mainevent.control.server import build_services
from tests.control.conftest import ADMIN, FakeClock, make_settings

# Never sheds: the comparison must not depend on how busy the machine is.
_NO_SHEDDING = AdmissionPolicy(
    delay_target=(math.inf,) * 4,
    delay_full=(math.inf,) * 4,
    max_wait=(math.inf,) * 4,
    max_queued=(math.inf,) * 4,
    in_flight_share=(1.0,) * 4,
)


@dataclass
class Answer:
    """One response, comparable across the two servers."""

    status: int
    headers: list[tuple[str, str]]
    body: Any


class _Parser:
    def __init__(self) -> None:
        self.done: list[tuple[int, list[tuple[str, str]], bytes]] = []
        self._headers: list[tuple[str, str]] = []
        self._body = b""
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode().lower(), value.decode()))

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.done.append((self.parser.get_status_code(), self._headers, self._body))
        self._headers, self._body = [], b""


class _Server:
    """uvicorn with the front protocol in a thread, on an ephemeral port."""

    def __init__(self, services: ControlServices, lean: bool) -> None:
        self.services = services
        self.front = PlaybackFront(services) if lean else None
        config = uvicorn.Config(
            create_app(services),
            host="127.0.0.1",
            port=0,
            http=front_protocol(services.admission, self.front),
            loop="asyncio",
            lifespan="off",
            log_level="warning",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def exchange(
        self, raw: bytes, responses: int = 1
    ) -> list[tuple[int, list[tuple[str, str]], bytes]]:
        """Send ``raw`` on the kept-alive connection and read ``responses`` answers."""
        self.sock.sendall(raw)
        p = _Parser()
        while len(p.done) < responses:
            data = self.sock.recv(65536)
            assert data, "connection closed"
            p.parser.feed_data(data)
        return p.done

    def stop(self) -> None:
        self.sock.close()
        # What the lifespan (off here) would close: the Redis clients, on the server's loop.
        loop = self.server.servers[0].get_loop()
        asyncio.run_coroutine_threadsafe(self._aclose(), loop).result(10)
        self.server.should_exit = True
        self.thread.join(10)

    async def _aclose(self) -> None:
        await self.services.playback.aclose()
        if self.services.console is not None:
            await self.services.console.sessions.store.aclose()


class Pair:
    """The lean server and the route server, driven in lockstep."""

    def __init__(self, database: Database, redis_url: str | None = None, **overrides: Any) -> None:
        self.clock = FakeClock()

        def services(prefix: str) -> ControlServices:
            # On Redis each server keeps its state under its own prefix: they must not share it.
            shared = {"redis_url": redis_url, "redis_prefix": prefix} if redis_url else {}
            settings = make_settings(**(overrides | shared))
            s = build_services(settings, db=database, clock=self.clock)
            s.admission = AdmissionController(_NO_SHEDDING)
            return s

        self.lean = _Server(services("lean:"), lean=True)
        self.route = _Server(services("route:"), lean=False)
        assert self.lean.front is not None
        self.front = self.lean.front
        idp = self.lean.services.dev_idp
        assert idp is not None
        self.idp = idp

    def jwt(self, account: str, ttl_s: int = 86_400) -> str:
        return self.idp.mint(account, ttl_s=ttl_s, now=self.clock.now)

    def both(self, raw: bytes, responses: int = 1) -> list[Answer]:
        """Send ``raw`` to both servers; their answers must match. Returns the lean server's."""
        lean = [_normalise(*r) for r in self.lean.exchange(raw, responses)]
        route = [_normalise(*r) for r in self.route.exchange(raw, responses)]
        assert lean == route
        return lean

    def operator(self, method: str, path: str, body: dict[str, Any]) -> None:
        """An operator change, sent to both (the second replays it and drops its own caches)."""
        data = json.dumps(body).encode()
        raw = (
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n"
            f"Idempotency-Key: {os.urandom(8).hex()}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode() + data
        for server in (self.route, self.lean):
            [(status, _, text)] = server.exchange(raw)
            assert status in (200, 201), text

    def event(self, event_id: str = "final", **spec: Any) -> None:
        start = datetime.fromtimestamp(self.clock.now - 60, UTC).isoformat()
        end = datetime.fromtimestamp(self.clock.now + 3 * 3600, UTC).isoformat()
        self.operator(
            "POST",
            "/v1/events",
            {"id": event_id, "title": "T", "starts_at": start, "ends_at": end, **spec},
        )
        for step in ("scheduled", "rehearsal", "live"):
            self.operator("POST", f"/v1/events/{event_id}/transitions", {"to": step})

    def stop(self) -> None:
        self.lean.stop()
        self.route.stop()


def _normalise(status: int, headers: list[tuple[str, str]], body: bytes) -> Answer:
    text = body.decode()
    try:
        parsed = json.loads(text)
    except ValueError:
        return Answer(status, [h for h in headers if h[0] != "date"], text)
    if isinstance(parsed, dict) and "session_id" in parsed:
        # The session id is random (and so is the token that carries it and its HMAC).
        text = text.replace(parsed["session_id"], "<session>")
        text = re.sub(r"hmac=[0-9a-f]{64}", "hmac=<mac>", text)
        parsed = json.loads(text)
    return Answer(status, [h for h in headers if h[0] != "date"], parsed)


@pytest.fixture(params=["embedded", "redis"])
def make_pair(request: pytest.FixtureRequest, database: Database) -> Iterator[Callable[..., Pair]]:
    """Builds a lean/route server pair on the test database, with settings overrides; its
    sessions, buckets and decisions embedded, or on Redis (the lean path then awaits them)."""
    pairs: list[Pair] = []
    redis_url = None
    if request.param == "redis":
        redis_url = request.getfixturevalue("redis_server").url

    def make(**overrides: Any) -> Pair:
        pairs.append(Pair(database, redis_url, **overrides))
        return pairs[-1]

    try:
        yield make
    finally:
        for p in pairs:
            p.stop()


def start(
    jwt: str | None,
    *,
    event_id: str = "final",
    device: str = "d1",
    body: bytes | None = None,
    content_type: str | None = "application/json",
    target: str | None = None,
    extra: tuple[str, ...] = (),
) -> bytes:
    """The bytes of a playback start."""
    data = json.dumps({"device": {"id": device}}).encode() if body is None else body
    lines = [f"POST {target or f'/v1/events/{event_id}/playback'} HTTP/1.1", "Host: x"]
    if jwt is not None:
        lines.append(f"Authorization: Bearer {jwt}")
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines += [*extra, f"Content-Length: {len(data)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def _ready(pair: Pair, **event: Any) -> str:
    """A live event and an entitled viewer whose decision both servers have cached; their JWT."""
    pair.event(**({"policy": {"max_streams": 50}} | event))
    pair.operator("PUT", "/v1/accounts/v1", {"plan": "premium"})
    jwt = pair.jwt("v1")
    [a] = pair.both(start(jwt, device="warm"))
    assert a.status == 200, a.body
    return jwt


def _reason(a: Answer) -> str:
    return str(a.body["error"]["reason"])


# -- the cases --------------------------------------------------------------------------------------


def test_cached_grants_are_answered_by_the_front_identically(
    make_pair: Callable[..., Pair],
) -> None:
    """A viewer with a cached decision gets the same grant, headers and all, without the route."""
    pair = make_pair(cdns={"origin": "", "cdn-b": "https://b.example"})
    jwt = _ready(pair, cdns=["origin", "cdn-b"], policy={"subscription_tiers": ["premium"]})
    answered = pair.front.answered
    [a] = pair.both(start(jwt, device="d2"))
    assert a.status == 200
    assert a.body["fallbacks"][0]["manifest_url"].startswith("https://b.example/t/st=")
    assert ("cache-control", "no-store") in a.headers
    assert [n for n, _ in a.headers] == [
        "server",
        "cache-control",
        "content-length",
        "content-type",
    ]
    # A query string and a JSON content type with a charset change nothing.
    pair.both(start(jwt, target="/v1/events/final/playback?x=1"))
    pair.both(start(jwt, content_type="application/json; charset=utf-8"))
    assert pair.front.answered == answered + 3


def test_pipelined_starts_are_answered_in_order(make_pair: Callable[..., Pair]) -> None:
    """Several starts written at once are answered one after the other on the connection."""
    pair = make_pair()
    jwt = _ready(pair)
    answered = pair.front.answered
    raw = b"".join(start(jwt, device="warm") for _ in range(3))  # the device's session replaced
    raw += b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    answers = pair.both(raw, responses=4)
    assert [a.status for a in answers] == [200, 200, 200, 200]
    assert answers[3].body == {"status": "ok"}
    assert pair.front.answered == answered + 3


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{", "application/json"),
        (b"", "application/json"),
        (b"{}", "application/json"),
        (b"[]", "application/json"),
        (b'{"device": {}}', "application/json"),
        (b'{"device": {"id": "bad id!"}}', "application/json"),
        (b'{"device": {"id": "d", "type": "fridge"}}', "application/json"),
        (b'{"device": {"id": "d"}, "extra": 1}', "application/json"),
        (b'{"device": {"id": "' + b"x" * 200 + b'"}}', "application/json"),
        (b'{"device": {"id": "d"}}', "text/plain"),
        (b'{"device": {"id": "d"}}', None),
        (b'{"device": {"id": "d"}}', "application/vnd.api+json"),
        (b'{"device": {"id": 5}}', "application/json"),
        (b'{"device": {"id": "d", "model": null}}', "application/json"),
    ],
    ids=lambda v: v.decode()[:24] if isinstance(v, bytes) else str(v),
)
def test_bodies_are_validated_identically(
    make_pair: Callable[..., Pair], body: bytes, content_type: str | None
) -> None:
    """Bad or unusual bodies and content types get the route's answer (422 or a grant) from both."""
    pair = make_pair()
    jwt = _ready(pair)
    [a] = pair.both(start(jwt, body=body, content_type=content_type))
    assert a.status in (200, 422), a.body


def test_credentials_are_checked_identically(make_pair: Callable[..., Pair]) -> None:
    """Missing, malformed, forged, repeated and expired viewer tokens get the same 401s."""
    pair = make_pair()
    jwt = _ready(pair)
    forged = jwt[:-4] + ("AAAA" if not jwt.endswith("AAAA") else "BBBB")
    for raw in (
        start(None),
        start("not.a.jwt"),
        start(forged),
        start(jwt, extra=("Authorization: Bearer nope",)),  # repeated: the first one counts
        start(None, extra=("Authorization: Basic dXNlcjpwdw==",)),
    ):
        [a] = pair.both(raw)
        assert a.status in (200, 401), a.body
    short = pair.jwt("v1", ttl_s=60)
    [a] = pair.both(start(short, device="s"))
    assert a.status == 200
    pair.clock.advance(120)  # the short token has expired, the event snapshots are stale
    pair.both(start(jwt, device="refresh-event"))  # re-reads the event (route on both)
    [a] = pair.both(start(short, device="s"))
    assert (a.status, _reason(a)) == (401, "credentials_expired")


def test_denials_are_identical(make_pair: Callable[..., Pair]) -> None:
    """Cached denials, unknown events, stream limits and ended events answer the same on both."""
    pair = make_pair()
    jwt = _ready(pair, policy={"subscription_tiers": ["premium"], "max_streams": 1})
    pair.operator("PUT", "/v1/accounts/v2", {"plan": "basic"})
    basic = pair.jwt("v2")
    for _ in range(2):  # the second answer comes from the cached denial
        [a] = pair.both(start(basic))
        assert (a.status, _reason(a)) == (403, "subscription_required")
    [a] = pair.both(start(jwt, device="other"))  # "warm" holds the only stream
    assert (a.status, _reason(a)) == (403, "concurrent_stream_limit")
    assert ("retry-after", "90") in a.headers
    [a] = pair.both(start(jwt, device="warm"))  # the same device replaces its session
    assert a.status == 200
    [a] = pair.both(start(jwt, event_id="nope"))
    assert (a.status, _reason(a)) == (404, "event_not_found")
    [a] = pair.both(start(jwt, target="/v1/events/a/b/playback"))
    assert a.status == 404
    [a] = pair.both(b"GET /v1/events/final/playback HTTP/1.1\r\nHost: x\r\n\r\n")
    assert a.status == 405
    pair.operator("POST", "/v1/events/final/transitions", {"to": "ended"})
    [a] = pair.both(start(jwt, device="warm"))
    assert (a.status, _reason(a)) == (403, "event_ended")


def test_rate_limits_are_identical(make_pair: Callable[..., Pair]) -> None:
    """A viewer over their bucket gets the same 429 and Retry-After from the lean path."""
    pair = make_pair(account_rate=0.5, account_burst=3)
    jwt = _ready(pair)  # one of the three
    answered = pair.front.answered
    statuses = [pair.both(start(jwt, device=f"r{i}"))[0] for i in range(3)]
    assert [a.status for a in statuses] == [200, 200, 429]
    assert _reason(statuses[2]) == "rate_limited"
    assert ("retry-after", "2") in statuses[2].headers
    assert pair.front.answered == answered + 3


def test_regions_are_decided_identically(make_pair: Callable[..., Pair]) -> None:
    """Region rules, and a trusted edge's forwarded address and region header, are read the same."""
    pair = make_pair(trusted_edges=("127.0.0.0/8",))
    jwt = _ready(pair, allowed_regions=["GB", "local"])
    for extra in (
        ("x-edge-region: GB",),
        ("X-Edge-Region: FR",),
        ("X-Forwarded-For: 203.0.113.9, 127.0.0.1",),
        ("X-Forwarded-For: 127.0.0.2", "x-edge-region: GB"),
        ("x-edge-region: GB", "x-edge-region: FR"),
    ):
        pair.both(start(jwt, extra=extra))


# -- the path on its own ----------------------------------------------------------------------------


def test_a_start_admitted_but_late_is_shed_without_running(database: Database) -> None:
    """A start that waited beyond its priority's max wait gets the canned 503 and opens no session."""
    clock = FakeClock()
    services = build_services(make_settings(), db=database, clock=clock)
    front = PlaybackFront(services)
    playback = services.playback
    # An event snapshot and a cached positive decision, as after the waiting room.
    from mainevent.control.entitlement import EventFacts
    from mainevent.control.lifecycle import EventStatus

    playback._events["final"] = (
        EventFacts("final", EventStatus.LIVE, clock.now - 60, None),
        clock.now,
    )
    playback.decisions.core.put("v1", "final", None, clock.now)
    assert services.dev_idp is not None
    raw = start(services.dev_idp.mint("v1", now=clock.now))
    admission = services.admission
    ticket = admission.enqueue(Priority.NEW_START)
    assert isinstance(ticket, Admitted)
    late = time.monotonic() - 10.0
    answer = front.answer(raw, 0, len(raw), "final", "127.0.0.1", late, ticket, [])
    assert answer is not None
    assert answer.startswith(b"HTTP/1.1 503 ")
    assert len(playback.sessions.core) == 0
    assert (admission.in_flight, admission.queued) == (0, 0)
    ticket = admission.enqueue(Priority.NEW_START)
    assert isinstance(ticket, Admitted)
    answer = front.answer(raw, 0, len(raw), "final", "127.0.0.1", time.monotonic(), ticket, [])
    assert answer is not None
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert len(playback.sessions.core) == 1
    assert (admission.in_flight, admission.queued) == (0, 0)


def test_the_grant_is_rendered_byte_for_byte_as_the_route_renders_it() -> None:
    """The lean path's grant bytes equal uvicorn's framing of the route's grant response."""
    from mainevent.control.app import _grant_response
    from mainevent.control.playback_front import render_grant, render_response
    from mainevent.control.schemas import CdnChoice, PlaybackGrant, PlayerConfig

    cdn = CdnChoice(name="cdn-é", manifest_url="https://a.example/t/x/live/final/master.m3u8")
    grant = PlaybackGrant(
        session_id="s-1",
        token="st=1~exp=2",
        valid_from=1,
        expires_at=2,
        manifest_url=cdn.manifest_url,
        cdn=cdn,
        fallbacks=[cdn],
        waiting_room=True,
        degraded=False,
        player=PlayerConfig(
            low_latency=False,
            segment_duration_ms=2000,
            dvr_window_s=0,
            heartbeat_interval_s=30.0,
            refresh_at=1,
        ),
    )
    default = [(b"date", b"Sun, 06 Dec 2026 20:00:00 GMT"), (b"server", b"uvicorn")]
    assert render_grant(grant, default) == render_response(_grant_response(grant), default)
