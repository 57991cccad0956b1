"""The control plane's nginx balancer, run for real, in front of a worker that dies mid-request.

The "dead" worker reads each request whole and then resets the connection without answering:
what nginx sees when it sends a request on a keep-alive connection to a worker that was just
SIGKILLed. Refresh and heartbeat are safe to send twice, so nginx must hand them to the other
worker; a new start opens a stream, so it must never be replayed (the viewer gets a 502 and
retries, rather than two streams being counted).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from mainevent.common.nginx import make_dirs
from mainevent.control.fleet import FleetPlan, find_nginx, lb_config

pytestmark = pytest.mark.skipif(find_nginx() is None, reason="Debian nginx is not installed")


@dataclass
class Worker:
    """A loopback HTTP/1.1 server that answers 200 (alive) or resets after reading (dead)."""

    name: str
    dead: bool
    port: int = 0
    seen: list[str] = field(default_factory=list)
    conns: set[asyncio.StreamWriter] = field(default_factory=set)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conns.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                length = next(
                    (
                        int(ln.split(":", 1)[1])
                        for ln in lines
                        if ln.lower().startswith("content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                self.seen.append(lines[0])
                if self.dead:
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                body = self.name.encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.conns.discard(writer)
            writer.close()


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[tuple[str, Worker, Worker]]:
    dead, alive = Worker("dead", dead=True), Worker("alive", dead=False)
    loop = asyncio.new_event_loop()
    started = threading.Event()

    stop = asyncio.Event()

    async def main() -> None:
        servers = []
        for w in (dead, alive):
            server = await asyncio.start_server(w._serve, "127.0.0.1", 0)
            w.port = server.sockets[0].getsockname()[1]
            servers.append(server)
        started.set()
        await stop.wait()
        for server in servers:
            server.close()
        for w in (dead, alive):
            for conn in list(w.conns):
                conn.close()
        for server in servers:
            await server.wait_closed()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    plan = FleetPlan(
        listen_host="127.0.0.1",
        listen_port=port,
        workers=(f"127.0.0.1:{dead.port}", f"127.0.0.1:{alive.port}"),
        workdir=tmp_path,
    )
    make_dirs(tmp_path)
    (tmp_path / "nginx.conf").write_text(lb_config(plan))
    nginx = find_nginx()
    assert nginx is not None
    proc = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", "nginx.conf", "-e", "error.log"])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            assert proc.poll() is None, "nginx exited"
            assert time.monotonic() < deadline, "nginx did not start listening"
            time.sleep(0.05)
    try:
        yield url, dead, alive
    finally:
        proc.terminate()
        proc.wait(10)
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def test_refresh_and_heartbeat_sent_to_a_dying_worker_are_answered_by_the_other(
    balancer: tuple[str, Worker, Worker],
) -> None:
    url, dead, alive = balancer
    paths = ["/v1/sessions/s1/refresh", "/v1/sessions/s1/heartbeat"]
    for path in paths:
        r = httpx.post(url + path, json={"token": "t"}, timeout=10)
        assert (r.status_code, r.text) == (200, "alive"), path
    # The balancer alternates: at least one of the two went to the dead worker first, was
    # reset there, and was sent on to the live one.
    assert len(dead.seen) >= 1
    assert sorted(alive.seen) == sorted(f"POST {p} HTTP/1.1" for p in paths)


def test_a_new_start_sent_to_a_dying_worker_is_not_replayed(
    balancer: tuple[str, Worker, Worker],
) -> None:
    url, dead, alive = balancer
    answers = []
    while not dead.seen:
        assert len(answers) < 4, (answers, alive.seen)
        r = httpx.post(url + "/v1/events/e1/playback", json={"device_id": "d"}, timeout=10)
        answers.append(r.status_code)
    # The start the dead worker read got a 502, and no other worker saw it a second time.
    assert answers[-1] == 502
    assert answers[:-1] == [200] * (len(answers) - 1)
    assert len(alive.seen) == len(answers) - 1
