"""A controllable upstream for edge tests and drills: publish objects later, hold LL-HLS blocking
reloads until their segment exists, send a body in two halves or die mid-body, count every
request, go down and come back on the same port, or hang (take requests, answer none).

It speaks just enough HTTP/1.1 (httptools) to be an origin; it is not the real origin (which
lives in `media/origin`) but lets tests decide exactly when an object appears.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import parse_qsl

import httptools

__all__ = ["StubObject", "StubUpstream"]


@dataclass(frozen=True, slots=True)
class StubObject:
    body: bytes
    cache_control: str = "public, max-age=31536000, immutable"
    content_type: str = "video/iso.segment"
    status: int = 200
    pause_after: int | None = None
    """Send the head and this many body bytes, then the rest only after `release(path)`."""
    fail_after: int | None = None
    """Send the head and this many body bytes, then drop the connection."""
    chunked: bool = False
    """Send the body with chunked transfer coding instead of a Content-Length."""


@dataclass(slots=True, eq=False)
class _Conn(asyncio.Protocol):
    stub: StubUpstream
    transport: asyncio.Transport | None = None
    parser: object = None
    url: bytes = b""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.parser = httptools.HttpRequestParser(self)
        self.stub.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stub.conns.discard(self)
        for t in self.tasks:
            t.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)  # type: ignore[attr-defined]
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        task = asyncio.get_running_loop().create_task(self.stub.respond(self, self.url.decode()))
        self.tasks.append(task)
        task.add_done_callback(self.tasks.remove)


class StubUpstream:
    """An in-process origin stand-in on 127.0.0.1 (`url` once started)."""

    def __init__(self, *, hold_missing_s: float = 0.0, hold_timeout_s: float = 10.0) -> None:
        self.objects: dict[str, StubObject] = {}
        self.playlists: dict[str, tuple[int, str]] = {}
        """Playlist path → (last msn, cache-control of blocking responses)."""
        self.fetches: Counter[str] = Counter()
        self.completed: Counter[str] = Counter()
        """Request target → responses sent to the last byte."""
        self.released: set[str] = set()
        self.hold_missing_s = hold_missing_s
        self.hold_timeout_s = hold_timeout_s
        self.conns: set[_Conn] = set()
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.port = 0
        self.down = False
        self.hanging = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Conn(self), "127.0.0.1", self.port, backlog=4096, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self.down = False

    async def stop(self) -> None:
        """Go down: stop listening and drop every connection (connection refused from now)."""
        self.down = True
        if self._server is not None:
            self._server.close()
            self._server = None
        for c in list(self.conns):
            if c.transport is not None:
                c.transport.abort()
        await asyncio.sleep(0)

    def hang(self) -> None:
        """Keep accepting connections and reading requests, answer none of them (a wedged
        origin, or one behind a network that drops its replies) until `resume()`."""
        self.hanging = True

    def resume(self) -> None:
        """Answer again, the requests held while hanging included."""
        self.hanging = False
        self._wake()

    def publish(self, path: str, obj: StubObject) -> None:
        self.objects[path] = obj
        self._wake()

    def release(self, path: str) -> None:
        """Let paused responses for `path` (`StubObject.pause_after`) send the rest of the body."""
        self.released.add(path)
        self._wake()

    def set_playlist_msn(self, path: str, msn: int, cache_control: str = "max-age=12") -> None:
        """The media playlist at `path` now ends at `msn` (releases held blocking reloads)."""
        self.playlists[path] = (msn, cache_control)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _playlist(self, path: str, msn: int) -> bytes:
        lines = ["#EXTM3U", "#EXT-X-TARGETDURATION:2", f"#EXT-X-MEDIA-SEQUENCE:{max(0, msn - 2)}"]
        for n in range(max(0, msn - 2), msn + 1):
            lines += ["#EXTINF:2.0,", f"{n}.m4s"]
        return ("\n".join(lines) + "\n").encode()

    async def _until(self, ready: object, limit_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while not ready():  # type: ignore[operator]
            left = deadline - loop.time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return True

    async def respond(self, conn: _Conn, target: str) -> None:
        self.fetches[target] += 1
        if self.hanging:
            await self._until(lambda: not self.hanging, 3600.0)
        path, _, query = target.partition("?")
        params = dict(parse_qsl(query))
        status, cc, ctype, body = 404, "max-age=1", "text/plain", b"not found\n"
        obj: StubObject | None = None
        if path in self.playlists:
            want = int(params.get("_HLS_msn", "-1"))
            if want >= 0:
                ok = await self._until(lambda: self.playlists[path][0] >= want, self.hold_timeout_s)
                if not ok:
                    status, cc, body = 503, "no-store", b"held too long\n"
            if status == 404:
                msn, blocking_cc = self.playlists[path]
                status, ctype = 200, "application/vnd.apple.mpegurl"
                cc = blocking_cc if want >= 0 else "max-age=1"
                body = self._playlist(path, msn)
        else:
            if path not in self.objects and self.hold_missing_s > 0:
                await self._until(lambda: path in self.objects, self.hold_missing_s)
            obj = self.objects.get(path)
            if obj is not None:
                status, cc, ctype, body = obj.status, obj.cache_control, obj.content_type, obj.body
        chunked = obj is not None and obj.chunked
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
        head = (
            f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nCache-Control: {cc}\r\n"
            f"{framing}\r\n\r\n"
        ).encode()

        def frame(data: bytes, last: bool) -> bytes:
            if not chunked:
                return data
            return (b"%x\r\n%b\r\n" % (len(data), data) if data else b"") + (
                b"0\r\n\r\n" if last else b""
            )

        def send(data: bytes) -> bool:
            t = conn.transport
            if t is None or t.is_closing():
                return False
            t.write(data)
            return True

        cut = None
        if obj is not None:
            cut = obj.fail_after if obj.fail_after is not None else obj.pause_after
        if obj is None or cut is None:
            if send(head + frame(body, True)):
                self.completed[target] += 1
            return
        if not send(head + frame(body[:cut], False)):
            return
        if obj.fail_after is not None:
            if conn.transport is not None:
                conn.transport.close()
            return
        await self._until(lambda: path in self.released, self.hold_timeout_s)
        if send(frame(body[cut:], True)):
            self.completed[target] += 1
