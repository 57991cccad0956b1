"""A lean HTTP/1.1 transport for httpx: llhttp (`httptools`) parsing on asyncio protocols.

The load generator and the e2e swarms run hundreds to thousands of headless players per process,
each with its own `httpx.AsyncClient` (a viewer is a device with its own connections). With
httpx's default transport a request costs about 0.5 ms of CPU in the client (httpcore's pool
and h11's pure-Python parsing), which on this 2-core machine limits a run to a few hundred
players before the players, not the platform, are what is measured. `LeanTransport` keeps the
player's httpx interface (requests, responses, streaming, timeouts, the `httpx.HTTPError`
family) and does the rest with the C parser uvicorn already uses on the server side.

What it does, per transport (one per viewer):

- HTTP/1.1 only, `http` and `https` (an `ssl.SSLContext` given at construction), no proxies;
- keep-alive: idle connections per origin, reused newest first; a request sent on a reused
  connection that the server had closed before answering anything is retried once on a fresh
  connection (as httpcore does), any other failure is raised;
- bodies framed by Content-Length, chunked transfer coding or connection close, all by llhttp;
- timeouts from the request's `timeout` extension (connect, write, read; `pool` is moot: a
  request never waits for a connection, it opens one);
- errors as httpx raises them: `ConnectError`, `ConnectTimeout`, `ReadTimeout`, `WriteTimeout`,
  `ReadError`, `RemoteProtocolError`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any, cast

import httptools
import httpx

__all__ = ["LeanTransport"]

_MAX_IDLE = 8
"""Idle connections kept per origin (a player has a few requests in flight at most)."""


class _Exchange:
    """One response being read: the head resolves `head`, the body `done`."""

    __slots__ = ("body", "done", "got_bytes", "head", "head_only", "headers", "status")

    def __init__(self, loop: asyncio.AbstractEventLoop, head_only: bool) -> None:
        self.head_only = head_only
        """A HEAD request's response: it ends with its head (and the connection with it)."""
        self.head: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.status = 0
        self.got_bytes = False


def _close_delimited(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a response with these headers ends where its connection does (RFC 9112 §6.3)."""
    names = {name.lower() for name, _ in headers}
    return b"content-length" not in names and b"transfer-encoding" not in names


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one exchange at a time (no pipelining)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._exchange: _Exchange | None = None
        self._timeout: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._active_at = 0.0
        self.closed = False
        self.reusable = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        ex = self._exchange
        if ex is None:  # bytes nobody asked for: the connection is not reusable
            self.close()
            return
        ex.got_bytes = True
        self._active_at = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        self._disarm()
        ex = self._exchange
        if ex is not None and ex.head.done() and exc is None and _close_delimited(ex.headers):
            # A body framed by the connection's end (no Content-Length, not chunked): complete.
            self._exchange = None
            ex.done.set_result(None)
            return
        if ex is not None and not ex.done.done():
            why = f": {exc}" if exc else ""
            self._fail(httpx.ReadError(f"connection closed before the response ended{why}"))

    # -- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._exchange is not None
        self._exchange.headers.append((name, value))

    def on_headers_complete(self) -> None:
        ex = self._exchange
        assert ex is not None
        ex.status = self._parser.get_status_code()
        if not ex.head.done():
            ex.head.set_result(None)
        if ex.head_only and ex.status >= 200:  # llhttp would wait for the body it announces
            self._exchange = None
            self._disarm()
            ex.done.set_result(None)
            self.close()

    def on_body(self, body: bytes) -> None:
        assert self._exchange is not None
        self._exchange.body.append(body)

    def on_message_complete(self) -> None:
        ex = self._exchange
        assert ex is not None
        if 100 <= ex.status < 200:  # an interim response: the real one follows
            ex.headers.clear()
            return
        self.reusable = self._parser.should_keep_alive()
        self._exchange = None
        self._disarm()
        if not ex.done.done():
            ex.done.set_result(None)
        if not self.reusable:
            self.close()

    # -- use -------------------------------------------------------------------------------

    def send(self, data: bytes, read_timeout: float | None, *, head_only: bool) -> _Exchange:
        """Write a request; its response is read into the returned exchange. With
        `read_timeout`, the exchange fails with `httpx.ReadTimeout` once that long has passed
        without a byte of it (httpx's read timeout: between reads, not in all)."""
        assert self._transport is not None
        assert self._exchange is None
        self._exchange = ex = _Exchange(self._loop, head_only)
        self.reusable = False
        self._transport.write(data)
        if read_timeout is not None:
            self._timeout = read_timeout
            self._active_at = self._loop.time()
            self._timer = self._loop.call_at(self._active_at + read_timeout, self._check_timeout)
        return ex

    def _check_timeout(self) -> None:
        self._timer = None
        if self._exchange is None or self._timeout is None:
            return
        due = self._active_at + self._timeout
        if self._loop.time() >= due:
            self._fail(httpx.ReadTimeout(f"no response byte for {self._timeout:g} s"))
        else:
            self._timer = self._loop.call_at(due, self._check_timeout)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, exc: Exception) -> None:
        ex = self._exchange
        self._exchange = None
        self._disarm()
        if ex is not None:
            for fut in (ex.head, ex.done):
                if not fut.done():
                    fut.set_exception(exc)
                    fut.exception()  # retrieved: whichever the caller awaits raises it
        self.close()

    def close(self) -> None:
        self.reusable = False
        self._disarm()
        if self._transport is not None and not self.closed:
            self.closed = True
            self._transport.close()


class _Body(httpx.AsyncByteStream):
    """The response body: yielded once the message is complete (llhttp already has it all)."""

    def __init__(self, conn: _Connection, ex: _Exchange, pool: LeanTransport, key: Any) -> None:
        self._conn, self._ex, self._pool, self._key = conn, ex, pool, key
        self._finished = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            await self._ex.done
        except BaseException:  # failed, timed out or cancelled mid-body: the connection is dirty
            self._finished = True
            self._conn.close()
            raise
        self._finished = True
        self._pool._release(self._key, self._conn)
        for chunk in self._ex.body:
            yield chunk

    async def aclose(self) -> None:
        if not self._finished:  # closed before the body was read: the connection is dirty
            self._finished = True
            self._conn.close()


class LeanTransport(httpx.AsyncBaseTransport):
    """httpx transport on `httptools`: see the module docstring."""

    def __init__(self, *, verify: ssl.SSLContext | None = None) -> None:
        self._ssl = verify
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._closed = False

    def _release(self, key: tuple[str, str, int], conn: _Connection) -> None:
        if conn.reusable and not conn.closed and not self._closed:
            idle = self._idle.setdefault(key, [])
            if len(idle) < _MAX_IDLE:
                idle.append(conn)
                return
        conn.close()

    async def _open(self, key: tuple[str, str, int], connect_s: float | None) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        if scheme == "https":
            tls = self._ssl or ssl.create_default_context()
        # `asyncio.timeout`, not `wait_for`: on Python 3.11 `wait_for` swallows a cancellation
        # that arrives as the connection completes, and a player's track task cancelled at its
        # end then lived on (a stalled zombie spinning on its full buffer, its session never
        # returning: seen in a 2,000-player run).
        try:
            async with asyncio.timeout(connect_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:
            raise httpx.ConnectError(f"{host}:{port}: {exc}") from exc
        return conn

    @staticmethod
    def _head(request: httpx.Request) -> bytes:
        url = request.url
        target = url.raw_path or b"/"
        lines = [request.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
        has_host = False
        for name, value in request.headers.raw:
            if name.lower() == b"host":
                has_host = True
            lines += [name, b": ", value, b"\r\n"]
        if not has_host:
            lines += [b"host: ", url.netloc, b"\r\n"]
        lines.append(b"\r\n")
        return b"".join(lines)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        key = (scheme, url.host, url.port or (443 if scheme == "https" else 80))
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = await request.aread()
        data = self._head(request) + body
        idle = self._idle.get(key)
        while True:
            conn = None
            while idle:
                candidate = idle.pop()
                if not candidate.closed:
                    conn = candidate
                    break
            reused = conn is not None
            if conn is None:
                conn = await self._open(key, timeouts.get("connect"))
            ex = conn.send(data, timeouts.get("read"), head_only=request.method == "HEAD")
            try:
                await ex.head
            except httpx.ReadError:
                if reused and not ex.got_bytes:  # the server had closed it while idle
                    idle = self._idle.get(key)
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            break
        return httpx.Response(
            ex.status,
            headers=ex.headers,
            stream=_Body(conn, ex, self, key),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
