"""The collector's lean ingest front: report POSTs answered without FastAPI, byte for byte as the
route answers them, with the same counts (two real collectors on loopback, front on and off)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mainevent.config import TelemetrySettings
from mainevent.control.telemetry.app import TelemetryService
from mainevent.control.telemetry.batch import encode_report_batch
from mainevent.control.telemetry.front import IngestProtocol
from mainevent.control.telemetry.server import TelemetryServer, build_service
from tests.telemetry.conftest import EVENT, body, record

TS = int(time.time() * 1000)


@dataclass
class _Running:
    server: TelemetryServer
    port: int

    @property
    def service(self) -> TelemetryService:
        return self.server.service

    def front_answered(self) -> int:
        """Requests the lean front answered (0 with the front off)."""
        assert self.server._server is not None
        protocol = self.server._server.config.http
        assert isinstance(protocol, type)
        assert issubclass(protocol, IngestProtocol)
        return 0 if protocol.ingest is None else protocol.ingest.answered


def _start(tmp: Path, lean: bool) -> tuple[_Running, threading.Thread]:
    settings = TelemetrySettings(
        db_path=tmp / f"t-{lean}.db",
        events={EVENT: 2000},
        max_body_bytes=4096,
        max_records=10,
        session_rate=1.0,
        session_burst=6.0,
        lean_ingest=lean,
    )
    server = TelemetryServer(build_service(settings))
    server.bind()
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while server._server is None or not server._server.started:
        assert time.monotonic() < deadline, "collector did not start"
        time.sleep(0.01)
    return _Running(server, int(server.url.rsplit(":", 1)[1])), thread


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[_Running, _Running]]:
    """The collector with the lean front (the default) and with every request on the route."""
    lean, t1 = _start(tmp_path, True)
    route, t2 = _start(tmp_path, False)
    try:
        yield lean, route
    finally:
        for r, t in ((lean, t1), (route, t2)):
            r.server.stop()
            t.join(10)


def _exchange(port: int, sends: list[bytes], responses: int) -> list[bytes]:
    """Send the byte strings in order on one connection (a pause between them, so they arrive
    as separate reads); read `responses` answers (heads and Content-Length bodies)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for i, raw in enumerate(sends):
            if i:
                time.sleep(0.05)
            sock.sendall(raw)
        buf, out = b"", []
        while len(out) < responses:
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                assert chunk, "connection closed"
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            while len(buf) < length:
                buf += sock.recv(65536)
            out.append(_undated(head) + b"\r\n\r\n" + buf[:length])
            buf = buf[length:]
    return out


def _undated(head: bytes) -> bytes:
    return b"\r\n".join(h for h in head.split(b"\r\n") if not h.lower().startswith(b"date:"))


def _post(path: str, content: bytes, ctype: str = "application/json", *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: collector", f"Content-Type: {ctype}", *extra]
    lines.append(f"Content-Length: {len(content)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + content


def _batch(sid: str, n: int = 2, **extra: object) -> bytes:
    recs = [
        {"sid": sid, "sn": i, "e": "t", "ts": TS + i * 1000, "sta": "s" if i == 0 else "p"}
        for i in range(n)
    ]
    if extra:
        recs[-1].update(extra)
    return encode_report_batch(recs)


def _split_body(raw: bytes) -> list[bytes]:
    """The head, then the body in two reads (as httpx sends a POST)."""
    cut = raw.index(b"\r\n\r\n") + 4
    return [raw[:cut], raw[cut : cut + 20], raw[cut + 20 :]]


BATCH = f"/v1/cmcd/{EVENT}/batch"
CMCD = f"/v1/cmcd/{EVENT}"
HLSJS = "User-Agent: Mozilla/5.0 (X11; Linux) HeadlessChrome/156"

CASES: dict[str, tuple[list[bytes], int]] = {
    "accepted": ([_post(BATCH, _batch("a"), "application/json", HLSJS)], 1),
    "retransmitted": ([_post(BATCH, _batch("b")) * 2], 2),
    "unknown-keys": ([_post(BATCH, _batch("c", xyz=1, v=2))], 1),
    "not-json": ([_post(BATCH, b'{"records": [')], 1),
    "bad-record": ([_post(BATCH, encode_report_batch([{"sid": "d", "sn": -1, "e": "t"}]))], 1),
    "content-type": ([_post(BATCH, _batch("e"), "text/plain")], 1),
    "no-content-type": (
        [b"POST " + BATCH.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"],
        1,
    ),
    "unknown-event": ([_post("/v1/cmcd/nosuch/batch", _batch("f"))], 1),
    "too-many-records": ([_post(BATCH, _batch("g", n=11))], 1),
    "oversize-body": ([_post(BATCH, b" " * 5000)], 1),
    "session-rate": ([_post(BATCH, _batch("h", n=8))], 1),
    "cdn-query": ([_post(BATCH + "?cdn=cdn-b", _batch("i"))], 1),
    "bad-cdn-query": ([_post(BATCH + "?cdn=no/such", _batch("j"))], 1),
    "origin": ([_post(BATCH, _batch("k"), "application/json", "Origin: http://page")], 1),
    "keep-alive-said": (
        [_post(BATCH, _batch("l"), "application/json", "Connection: keep-alive")],
        1,
    ),
    "cmcd-text": (
        [
            _post(
                CMCD,
                body(record(e="t", ts=TS, sn=0, sid="m", sta="s", cid=EVENT)),
                "application/cmcd",
                "X-Client-Region: eu",
            )
        ],
        1,
    ),
    "cmcd-malformed": ([_post(CMCD, b'sid="a,ts=1', "application/cmcd")], 1),
    "head-split-over-reads": (
        (lambda raw: [raw[:40], raw[40:200], raw[200:]])(_post(BATCH, _batch("n", n=3))),
        1,
    ),
    "body-over-reads": (_split_body(_post(BATCH, _batch("n2", n=3))), 1),
    "body-over-reads-then-more": (
        _split_body(_post(BATCH, _batch("n3", n=3)) + _post(BATCH, _batch("n4"))),
        2,
    ),
    "pipelined": ([_post(BATCH, _batch("o")) + _post(BATCH, _batch("p")) + _post(CMCD, b"")], 3),
    "then-a-query": (
        [_post(BATCH, _batch("q")) + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"],
        2,
    ),
}


ROUTE_ONLY = {"oversize-body", "bad-cdn-query", "origin", "head-split-over-reads"}
"""Cases the front leaves to the route (the rest it answers itself)."""


@pytest.mark.parametrize("case", list(CASES))
def test_the_front_answers_report_posts_exactly_as_the_route(
    pair: tuple[_Running, _Running], case: str
) -> None:
    """Players and relays get the same answers (status, headers, body) and the same counting,
    whether the front or the FastAPI route answers their report POSTs."""
    lean, route = pair
    sends, responses = CASES[case]
    got = _exchange(lean.port, sends, responses)
    want = _exchange(route.port, sends, responses)
    assert got == want
    a, b = lean.service.collector, route.service.collector
    assert a.rejected == b.rejected
    assert a.unknown_keys == b.unknown_keys
    assert a.intake.stats() == b.intake.stats()
    assert (lean.front_answered() > 0) == (case not in ROUTE_ONLY)


def test_plain_report_posts_are_answered_by_the_front(pair: tuple[_Running, _Running]) -> None:
    """The fast path is taken for the plain batch POSTs of a relay or load generator."""
    lean, route = pair
    raw = _post(BATCH, _batch("r"), "application/json", "Connection: keep-alive")
    cut = raw.index(b"\r\n\r\n") + 10  # the head, then the body in two reads (as httpx sends)
    split = [raw[:cut], raw[cut:]]
    for run in (lean, route):
        assert _exchange(run.port, split, 1)[0].startswith(b"HTTP/1.1 204")
    assert lean.front_answered() == 1
    assert route.front_answered() == 0
