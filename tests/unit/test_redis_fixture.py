"""The private redis-server fixture answers, restarts on the same URL, and comes back empty."""

from __future__ import annotations

import socket

from mainevent.testing.redis import RedisServer


def _cmd(port: int, *args: str) -> bytes:
    wire = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(wire.encode())
        return s.recv(256)


def test_restart_keeps_url_and_forgets_data(redis_server: RedisServer) -> None:
    """A restarted non-persistent Redis answers on the same URL with an empty keyspace."""
    url = redis_server.url
    assert _cmd(redis_server.port, "SET", "k", "v") == b"+OK\r\n"
    assert _cmd(redis_server.port, "GET", "k") == b"$1\r\nv\r\n"
    redis_server.restart(kill=True)
    assert redis_server.url == url
    assert _cmd(redis_server.port, "GET", "k") == b"$-1\r\n"
