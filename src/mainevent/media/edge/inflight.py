"""An upstream response in progress, shared by its one fetch and every request collapsed onto it.

The fetch feeds the head and then each body chunk in as it arrives; a request that joins gets the
head and every byte so far at once, then each new chunk. The fetch pushes chunks straight into the
joined connections' transports, so 5,000 waiters cost one loop per chunk rather than 5,000 task
wake-ups. Framing keeps a cut-off body detectable: the upstream's `Content-Length` when it gave
one, chunked otherwise; if the upstream fails mid-body each streamed connection is closed short.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from mainevent.media.edge.cache import Finished
from mainevent.media.edge.metrics import EdgeMetrics

__all__ = ["Conn", "Transfer", "Waiter"]

_SMALL = 16 * 1024
_LAST_CHUNK = b"0\r\n\r\n"


class Conn(Protocol):
    """The client connection a waiter is answered on (the server's protocol object)."""

    transport: asyncio.Transport | None
    closed: bool


@dataclass(slots=True, eq=False)
class Waiter:
    """One request answered from a transfer; `streamed` once it was given the head."""

    conn: Conn
    get: bool
    http11: bool
    keep_alive: bool
    result: str
    """`MISS` (the request that started the fetch) or `COLLAPSED`."""
    started: float
    streamed: bool = False
    head_at: float = 0.0
    """When the head (and the body bytes so far) was written, once `streamed`."""


class Transfer:
    """The fetch of `key` in flight: head, body so far, and who is receiving it.

    Waiters that cannot take a stream — a HEAD, an HTTP/1.0 client when the length is unknown,
    any request while the upstream answered 5xx (stale-if-error may still replace it) — stay in
    `pending` and are answered from the `Finished` outcome in `done`.
    """

    __slots__ = (
        "_heads",
        "_heads_age",
        "begun",
        "born",
        "chunked",
        "chunks",
        "done",
        "head",
        "kind",
        "metrics",
        "pending",
        "stale",
        "streams",
    )

    def __init__(self, kind: str, metrics: EdgeMetrics, done: asyncio.Future[Finished]) -> None:
        self.kind = kind
        self.metrics = metrics
        self.done = done
        self.pending: list[Waiter] = []
        self.streams: list[Waiter] = []
        self.begun = False
        self.head = b""
        self.chunked = False
        self.born = 0.0
        self.stale = False
        self.chunks: list[bytes] = []
        self._heads: dict[tuple[str, bool], bytes] = {}
        self._heads_age = -1

    def join(self, waiter: Waiter, now: float) -> None:
        """Add a request: streamed from here on if the head is already out, else held."""
        if self.begun and self._can_stream(waiter):
            self._start(waiter, now)
        else:
            self.pending.append(waiter)

    def begin(self, head: bytes, length: int | None, born: float, stale: bool, now: float) -> None:
        """The head may go out: `head` is serialised up to Age/X-Cache (framing included)."""
        self.begun = True
        self.head = head
        self.chunked = length is None
        self.born = born
        self.stale = stale
        waiting, self.pending = self.pending, []
        for w in waiting:
            if self._can_stream(w):
                self._start(w, now)
            else:
                self.pending.append(w)

    def feed(self, chunk: bytes) -> None:
        """More body bytes arrived: keep them and pass them on to every streamed request."""
        if not chunk:
            return  # an empty chunk would read as the end of a chunked body
        self.chunks.append(chunk)
        if not self.streams:
            return
        data = b"%x\r\n%b\r\n" % (len(chunk), chunk) if self.chunked else chunk
        sent = 0
        for w in self.streams:
            conn = w.conn
            t = conn.transport
            if t is not None and not conn.closed and not t.is_closing():
                t.write(data)
                sent += 1
        self.metrics.bytes_sent[self.kind] += len(chunk) * sent

    def body(self) -> bytes:
        """Every body byte received so far, as one object (joined once, then shared)."""
        chunks = self.chunks
        if len(chunks) > 1:
            self.chunks = chunks = [b"".join(chunks)]
        return chunks[0] if chunks else b""

    def complete(self) -> None:
        """The whole body went out: end each stream (last chunk; close if not keep-alive)."""
        for w in self.streams:
            conn = w.conn
            t = conn.transport
            if t is None or conn.closed or t.is_closing():
                continue
            if self.chunked:
                t.write(_LAST_CHUNK)
            if not w.keep_alive:
                conn.closed = True
                t.close()
        self.streams = []

    def abort(self) -> None:
        """The upstream failed mid-body: close each streamed connection short of its end, so
        the client sees a cut-off response (fewer bytes than Content-Length, no last chunk)."""
        for w in self.streams:
            conn = w.conn
            t = conn.transport
            if t is not None and not conn.closed and not t.is_closing():
                conn.closed = True
                t.close()
        self.streams = []

    def _can_stream(self, w: Waiter) -> bool:
        return w.get and (w.http11 or not self.chunked)

    def _start(self, w: Waiter, now: float) -> None:
        result = "STALE" if self.stale else w.result
        m = self.metrics
        m.requests[(self.kind, result)] += 1
        m.latency[self.kind].observe(now - w.started)
        w.streamed = True
        w.head_at = now
        conn = w.conn
        t = conn.transport
        if t is None or conn.closed or t.is_closing():
            return
        head = self._head(result, w.keep_alive, now)
        body = self.body()
        if not body:
            t.write(head)
        elif self.chunked:
            t.writelines((head, b"%x\r\n" % len(body), body, b"\r\n"))
        elif len(body) <= _SMALL:
            t.write(head + body)
        else:
            t.writelines((head, body))
        m.bytes_sent[self.kind] += len(body)
        self.streams.append(w)

    def _head(self, result: str, keep_alive: bool, now: float) -> bytes:
        age = int(now - self.born)
        if age != self._heads_age:
            self._heads_age = age
            self._heads.clear()
        head = self._heads.get((result, keep_alive))
        if head is None:
            head = self.head + b"Age: %d\r\nX-Cache: %s\r\n%s\r\n" % (
                age,
                result.encode(),
                b"" if keep_alive else b"Connection: close\r\n",
            )
            self._heads[(result, keep_alive)] = head
        return head
