"""The control plane's HTTP/1.1 front: uvicorn's httptools protocol with admission at the door.

Under a join storm most requests must be refused, and refusing has to cost next to nothing or
the flood eats the core the admitted requests need (5x overload is ~13,000 requests/s for one
worker). So before uvicorn parses anything, the front frames each complete request at the start
of what was read (`frame_request`: request line, end of head, Content-Length), classifies it by
method and path (`classify`: refresh > new start > purchase > polling), asks the sans-IO
`AdmissionController`, and answers a shed request with a canned 503 + jittered Retry-After in
the same callback: no ASGI scope, no header list, no task, no keep-alive timer per request
(4.5 us of Python per refusal, against 10 us through uvicorn's parser callbacks and 12 us as an
ASGI task, measured in-process; the socket calls cost as much again). Admitted requests go on to
uvicorn and the app carrying their ticket. They wait in a bounded queue (``max_queued``: a burst
read in one go cannot admit more work than the worker does in ~10 ms), and
`AdmissionMiddleware` checks their sojourn again when they start to run.

The framing (``frame_request``) and the keep-alive bookkeeping of answers written here are the
shared core in ``control/framing.py``. Whatever the framer is not sure of -- a head or body split across reads, `Transfer-Encoding`,
`Expect`, `Connection`, `Upgrade`, HTTP/1.0, HEAD, %-encoded or absolute targets, repeated or odd
Content-Length, anything llhttp would refuse (bare CR/LF, folded headers, control characters),
operator and health routes, a request pipelined behind a pending response, a client that does not
read its answers -- goes through uvicorn's parser unchanged, and is admitted or shed when its
headers are complete (`on_headers_complete`; HEAD is then left to the app, whose 503 has no body).

Arrival: every request is stamped with the start of the read batch -- the event-loop iteration --
that delivered it (``scope["extensions"]["mainevent.arrival"]``), so its sojourn includes the
requests read and admitted ahead of it in the same iteration.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import ClassVar

from mainevent.common.admission import AdmissionController, Admitted, Priority, Shed
from mainevent.control.admission_http import ADMITTED, ARRIVAL, classify, shed_response
from mainevent.control.framing import LeanAnswers, frame_request
from mainevent.control.playback_front import PlaybackFront, playback_event_id

__all__ = ["FrontProtocol", "frame_request", "front_protocol"]

log = logging.getLogger(__name__)


class _ReadBatch:
    """The start of the current event-loop iteration's reads: the arrival time of what they read.

    Opened by the first read of an iteration; a callback scheduled then closes it when the loop
    moves on to run callbacks and tasks, so the next iteration's reads open a new one.
    """

    __slots__ = ("is_open", "loop", "start")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.start = 0.0
        self.is_open = False

    def arrival(self) -> float:
        if not self.is_open:
            self.start = time.monotonic()
            self.is_open = True
            self.loop.call_soon(self._close)
        return self.start

    def _close(self) -> None:
        self.is_open = False


class FrontProtocol(LeanAnswers):
    """uvicorn's httptools protocol with admission control before parsing.

    Bind it to a controller with :func:`front_protocol` and pass the result as uvicorn's ``http``.
    Without a controller it only stamps arrivals (admission is then the middleware's).
    """

    admission: ClassVar[AdmissionController | None] = None
    #: Answers playback starts with a cached decision without uvicorn (``control/playback_front.py``).
    playback: ClassVar[PlaybackFront | None] = None
    _batch: ClassVar[_ReadBatch | None] = None

    _arrival = 0.0
    _in_message = False  # the parser is inside a request (its head or body is still coming)
    _shedding = False  # the parser is skipping the body of a request shed at headers-complete
    _ticket: Admitted | None = None  # admitted by the framer, picked up by on_headers_complete
    _lean_task: asyncio.Task[None] | None = None  # a lean answer awaiting shared stores

    def _read_batch(self) -> _ReadBatch:
        batch = type(self)._batch
        if batch is None or batch.loop is not self.loop:
            batch = type(self)._batch = _ReadBatch(self.loop)
        return batch

    def data_received(self, data: bytes) -> None:
        self._arrival = arrival = self._read_batch().arrival()
        controller = self.admission
        if controller is None or self._parser_owns_connection():
            super().data_received(data)
            return
        self._feed(controller, data, 0, arrival)

    def _feed(
        self, controller: AdmissionController, data: bytes, start: int, arrival: float
    ) -> None:
        """Frame, admit and answer what can be answered here from ``data[start:]``; the rest goes
        to uvicorn. A playback start that must await shared stores pauses reading and goes on in
        `_answer_later`, which calls back here for what follows it."""
        waited = time.monotonic() - arrival
        size = len(data)
        transport, flow = self.transport, self.flow
        while start < size and not (flow.write_paused or transport.is_closing()):
            framed = frame_request(data, start)
            if framed is None:
                break
            method, path, end = framed
            priority = classify(method, path)
            if priority is None:
                break
            decision = controller.enqueue(priority, waited)
            if isinstance(decision, Admitted):
                lean = self.playback
                if (
                    lean is not None
                    and not lean.inline
                    and self._lean_start(method, path, decision)
                ):
                    transport.pause_reading()
                    self._lean_task = self.loop.create_task(
                        self._answer_later(
                            controller, data, start, end, method, path, arrival, decision
                        )
                    )
                    return
                raw = self._answer_playback(data, start, end, method, path, arrival, decision)
                if raw is None:
                    self._ticket = decision
                    break
                transport.write(raw)
                self._answered_here()
                start = end
                continue
            transport.write(shed_response(priority, decision.retry_after))
            self._answered_here()
            start = end
        if start < size:
            super().data_received(data[start:] if start else data)
            if self._ticket is not None:  # the parser refused it before its headers completed
                controller.withdraw(self._ticket)
                self._ticket = None

    @staticmethod
    def _lean_start(method: str, path: str, ticket: Admitted) -> bool:
        return ticket.priority is Priority.NEW_START and playback_event_id(method, path) is not None

    async def _answer_later(
        self,
        controller: AdmissionController,
        data: bytes,
        start: int,
        end: int,
        method: str,
        path: str,
        arrival: float,
        ticket: Admitted,
    ) -> None:
        """The lean answer awaited (shared stores), then the rest of ``data``, then reading again.

        Owned by the connection: `connection_lost` cancels it (the answer then withdraws its
        ticket). Reading stays paused meanwhile, so responses keep the requests' order.
        """
        lean = self.playback
        assert lean is not None
        event_id = playback_event_id(method, path)
        assert event_id is not None
        peer = self.client[0] if self.client else None
        try:
            raw = await lean.answer_async(
                data, start, end, event_id, peer, arrival, ticket, self.server_state.default_headers
            )
        except Exception:  # a bug, not a store outage (those are answers): drop the connection
            log.exception("lean playback answer failed")
            self._lean_task = None
            self.transport.close()
            return
        self._lean_task = None
        if self.transport.is_closing():
            if raw is None:
                controller.withdraw(ticket)
            return
        if raw is None:  # not decided here: uvicorn and the route answer it, ticket attached
            self._ticket = ticket
            super().data_received(data[start:] if start else data)
            if self._ticket is not None:
                controller.withdraw(self._ticket)
                self._ticket = None
        else:
            self.transport.write(raw)
            self._answered_here()
            if end < len(data):
                self._feed(controller, data, end, arrival)
        if self._lean_task is None and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        task, self._lean_task = self._lean_task, None
        if task is not None:
            task.cancel()
        super().connection_lost(exc)

    def _answer_playback(
        self,
        data: bytes,
        start: int,
        end: int,
        method: str,
        path: str,
        arrival: float,
        ticket: Admitted,
    ) -> bytes | None:
        """The lean answer to an admitted playback start, or None (uvicorn and the app answer)."""
        lean = self.playback
        if lean is None or not lean.inline or ticket.priority is not Priority.NEW_START:
            return None
        event_id = playback_event_id(method, path)
        if event_id is None:
            return None
        peer = self.client[0] if self.client else None
        return lean.answer(
            data, start, end, event_id, peer, arrival, ticket, self.server_state.default_headers
        )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_message = True
        self.scope["extensions"] = {ARRIVAL: {"monotonic": self._arrival}}

    def on_headers_complete(self) -> None:
        ticket, self._ticket = self._ticket, None
        if ticket is not None:
            self.scope["extensions"][ADMITTED] = {"ticket": ticket}
            super().on_headers_complete()
            return
        controller = self.admission
        # Only when no other response is pending on this connection (keeps responses in order),
        # the client reads its answers (else uvicorn's pipeline pauses reading) and is not waiting
        # for 100-continue (it may then never send the body we skip).
        idle = self.cycle is None or self.cycle.response_complete
        method = self.parser.get_method()
        if (
            controller is not None
            and idle
            and not self.flow.write_paused
            and not self.expect_100_continue
            and method != b"HEAD"
        ):
            priority = classify(
                method.decode("ascii"), self.url.split(b"?", 1)[0].decode("latin-1")
            )
            if priority is not None:
                decision = controller.enqueue(priority, time.monotonic() - self._arrival)
                if isinstance(decision, Shed):
                    keep_alive = self.parser.should_keep_alive()
                    self._shedding = True
                    self.transport.write(
                        shed_response(priority, decision.retry_after, keep_alive=keep_alive)
                    )
                    if not keep_alive:
                        self.transport.close()
                    return
                self.scope["extensions"][ADMITTED] = {"ticket": decision}
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._shedding:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        if self._shedding:
            self._shedding = False
            self.on_response_complete()
            return
        super().on_message_complete()


def front_protocol(
    admission: AdmissionController | None, playback: PlaybackFront | None = None
) -> type[FrontProtocol]:
    """The front's protocol class bound to ``admission`` (and the lean playback path), for uvicorn's ``http``."""

    class _Bound(FrontProtocol):
        pass

    _Bound.admission = admission
    _Bound.playback = playback
    return _Bound
