"""The collector's lean HTTP front: player report POSTs answered without the framework.

At ~100 batches of 1,000 records a second, the FastAPI route around :meth:`Collector.cmcd_batch`
costs as much as the ingest itself: the request object, the body read as ASGI messages through
uvicorn's flow control, the middleware stack and a task per request. :class:`IngestProtocol` is
uvicorn's httptools protocol on the control plane's one framing core (``control/framing.py``):
it frames each plainly written ``POST /v1/cmcd/{event}/batch`` and ``POST /v1/cmcd/{event}``
itself, keeps a body that arrives over several reads until it is whole (never more than
``max_body_bytes``), calls the same :class:`Collector` method the route calls and writes the
route's own response (:func:`~.app.outcome_response`, framed as uvicorn frames it).

Everything else goes through uvicorn and the app unchanged, which answer it as before: other
routes, anything the framer is not sure of, a request with an ``Origin`` (the CORS middleware's
headers), a query other than one plain ``cdn=``, a repeated header the route reads, a body over
the limit (the route's 413), and every request in stream mode (its answer waits for Redis).
Setting ``lean_ingest = false`` sends every request through the route.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import ClassVar

from mainevent.control.framing import Head, LeanAnswers, frame_head, render_response
from mainevent.control.telemetry.app import TelemetryService, outcome_response
from mainevent.control.telemetry.collector import Outcome

__all__ = ["IngestFront", "IngestProtocol", "ingest_protocol"]

_PREFIX = b"/v1/cmcd/"
_BATCH = b"/batch"
_CDN_QUERY = re.compile(rb"cdn=([A-Za-z0-9._-]{1,64})")  # the route's `cdn` pattern
_VARY = (b"vary", b"Origin")
"""What the CORS middleware adds to its answer to a request without an Origin."""
_WANTED = frozenset({b"content-type", b"user-agent", b"x-client-region", b"origin"})

_Ingest = Callable[..., Outcome]


class IngestFront:
    """Answers player report POSTs for :class:`IngestProtocol`; see the module docstring."""

    __slots__ = ("_batch", "_report", "answered", "limit", "passed", "service")

    def __init__(self, service: TelemetryService) -> None:
        self.service = service
        c = service.collector
        self._batch: _Ingest = c.cmcd_batch
        self._report: _Ingest = c.cmcd_report
        self.limit = c.settings.max_body_bytes
        #: Requests answered here, and framed report POSTs passed on to the route.
        self.answered = 0
        self.passed = 0

    def route(self, head: Head) -> tuple[_Ingest, str, str | None] | None:
        """The ingest call, event and ``cdn`` of a report POST this front answers, else None."""
        if head.method != "POST" or not head.target.startswith(_PREFIX):
            return None
        path, _, query = head.target.partition(b"?")
        rest = path[len(_PREFIX) :]
        ingest = self._report
        if rest.endswith(_BATCH):
            rest, ingest = rest[: -len(_BATCH)], self._batch
        if not rest or b"/" in rest:
            return None
        cdn = None
        if query:
            m = _CDN_QUERY.fullmatch(query)
            if m is None:
                return None
            cdn = m.group(1).decode("ascii")
        return ingest, rest.decode("ascii"), cdn

    def answer(
        self,
        data: bytes,
        head: Head,
        call: tuple[_Ingest, str, str | None],
        peer: str | None,
        default_headers: list[tuple[bytes, bytes]],
    ) -> bytes | None:
        """The full response to the report POST framed as ``head`` in ``data``, or None (the
        route answers it; nothing was done)."""
        headers = _headers(data[head.line_end : head.body_start - 2])
        if headers is None or b"origin" in headers or head.length > self.limit:
            self.passed += 1
            return None
        ingest, event, cdn = call
        service = self.service
        out = ingest(
            event,
            data[head.body_start : head.end],
            headers.get(b"content-type"),
            client=peer,
            user_agent=headers.get(b"user-agent"),
            region_header=headers.get(b"x-client-region"),
            now=service.clock(),
            cdn=cdn,
        )
        if out.accepted:
            service.poke()
        self.answered += 1
        response = outcome_response(out)
        response.raw_headers.append(_VARY)
        return render_response(response, default_headers)


def _headers(lines: bytes) -> dict[bytes, str] | None:
    """The headers the route reads, or None when one of them repeats."""
    found: dict[bytes, str] = {}
    for line in lines.split(b"\r\n"):
        name, _, value = line.partition(b":")
        name = name.lower()
        if name not in _WANTED:
            continue
        if name in found:
            return None
        found[name] = value.decode("latin-1").strip(" \t")
    return found


class IngestProtocol(LeanAnswers):
    """uvicorn's httptools protocol with report POSTs answered by an :class:`IngestFront`.

    Bind it with :func:`ingest_protocol` and pass the result as uvicorn's ``http``.
    """

    ingest: ClassVar[IngestFront | None] = None

    _in_message = False  # uvicorn's parser is inside a request (its head or body is coming)
    _pending: bytearray | None = None  # a framed report POST whose body is still arriving
    _need = 0  # bytes of it (head and body) in all

    def data_received(self, data: bytes) -> None:
        front = self.ingest
        if front is not None and self._pending is not None:
            self._pending += data
            self._lean_at = self.loop.time()  # a body arriving: not an idle connection
            if len(self._pending) < self._need:
                return
            data, self._pending = bytes(self._pending), None
        elif front is None or self._parser_owns_connection():
            super().data_received(data)
            return
        start, size = 0, len(data)
        transport, flow = self.transport, self.flow
        peer = self.client[0] if self.client else None
        while start < size and not (flow.write_paused or transport.is_closing()):
            head = frame_head(data, start, keep_alive_header=True)
            call = None if head is None else front.route(head)
            if head is None or call is None:
                break
            if head.end > size:
                if head.length > front.limit:
                    break  # the route answers 413 without reading it
                self._pending = bytearray(memoryview(data)[start:])
                self._need = head.end - start
                self._lean_at = self.loop.time()
                return
            raw = front.answer(data, head, call, peer, self.server_state.default_headers)
            if raw is None:
                break
            transport.write(raw)
            self._answered_here()
            start = head.end
        if start < size:
            super().data_received(data[start:] if start else data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_message = True

    def on_message_complete(self) -> None:
        self._in_message = False
        super().on_message_complete()


def ingest_protocol(front: IngestFront | None) -> type[IngestProtocol]:
    """The protocol class bound to ``front`` (None: every request to uvicorn), for uvicorn's
    ``http``."""

    class _Bound(IngestProtocol):
        pass

    _Bound.ingest = front
    return _Bound
