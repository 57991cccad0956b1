"""The front's own answer to playback starts whose decision is cached: no framework, no store.

In a join storm most `POST /v1/events/{id}/playback` requests come from viewers whose
entitlement is already decided (pre-authorised in the waiting room, or retrying): answering them
through FastAPI costs ~60 us of routing, dependency solving and request objects per grant, more
than the decision itself. The front (``control/front.py``) hands each admitted, plainly framed
playback start here first. :meth:`PlaybackFront.answer` reads the request's few relevant headers
and body itself and asks :meth:`PlaybackService.cached_start` whether it can be decided from the
cores alone (viewer JWT verified before, event snapshot fresh, window and region open, a cached
positive decision). Only then does it commit -- rate limit, session, token -- and write the same
response the FastAPI route would, built by the same functions (``_grant_response``,
``error_response``) and framed with uvicorn's own default headers.

Everything else -- an unusual header or body, a request that fails validation or
authentication, an event or decision not cached, a cached denial -- returns None *before any
side effect*, and the request goes on to uvicorn and the FastAPI route unchanged, which then
answers it exactly as before (tests run the same cases through both paths). The route stays the
one documented in OpenAPI.

With the embedded stores (one worker), whose operations never suspend, the answer is completed
inline (:func:`~mainevent.common.shared.complete_now`, :meth:`PlaybackFront.answer`). With the
shared stores on Redis (N workers) it has to await them: :meth:`PlaybackFront.answer_async` is
the same steps awaited -- the decision read, the buckets and the session start are the stores'
atomic Lua scripts, as on the route -- and the front pauses reading the connection meanwhile.
Either way the decision code is one coroutine (`_answer`), so both paths answer alike.
"""

from __future__ import annotations

import json
import time

from pydantic import ValidationError
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from mainevent.common.admission import AdmissionController, Admitted, Priority, Shed
from mainevent.common.shared import complete_now
from mainevent.control.admission_http import shed_response
from mainevent.control.app import ControlServices, error_response
from mainevent.control.errors import ControlError
from mainevent.control.framing import render_response
from mainevent.control.schemas import PlaybackGrant, PlaybackRequest

__all__ = ["PlaybackFront", "playback_event_id", "render_grant", "render_response"]

_PREFIX = "/v1/events/"
_SUFFIX = "/playback"
_JSON_TYPES = frozenset({b"application/json", b"application/json; charset=utf-8"})


def playback_event_id(method: str, path: str) -> str | None:
    """The event id of a playback start (``POST /v1/events/{id}/playback``), else None."""
    if method != "POST" or not path.startswith(_PREFIX) or not path.endswith(_SUFFIX):
        return None
    event_id = path[len(_PREFIX) : -len(_SUFFIX)]
    if not event_id or "/" in event_id:
        return None
    return event_id


def render_grant(grant: PlaybackGrant, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """What :func:`render_response` makes of the route's ``_grant_response(grant)``, directly.

    The Starlette response object alone costs a few microseconds per grant; the tests compare
    the two byte for byte.
    """
    body = grant.model_dump_json().encode()
    out = [STATUS_LINE[200]]
    for name, value in default_headers:
        out += (name.lower(), b": ", value, b"\r\n")
    out += (_GRANT_HEAD % len(body), body)
    return b"".join(out)


_GRANT_HEAD = (
    b"cache-control: no-store\r\ncontent-length: %d\r\ncontent-type: application/json\r\n\r\n"
)


class PlaybackFront:
    """Answers cached playback starts for the front protocol; see the module docstring."""

    __slots__ = (
        "_admission",
        "_edge_header",
        "_latency",
        "_services",
        "_wanted",
        "answered",
        "inline",
        "passed",
    )

    def __init__(self, services: ControlServices) -> None:
        #: Requests answered here, and admitted playback starts passed on to the route.
        self.answered = 0
        self.passed = 0
        #: The stores never suspend (embedded): :meth:`answer`; else :meth:`answer_async`.
        self.inline = services.playback.stores.embedded
        self._services = services
        self._admission: AdmissionController = services.admission
        self._latency = services.latency[Priority.NEW_START]
        self._edge_header = services.settings.edge_region_header.lower().encode("latin-1")
        self._wanted = frozenset(
            {b"authorization", b"content-type", b"x-forwarded-for", self._edge_header}
        )

    def _headers(self, head: bytes) -> dict[bytes, str] | None:
        """The headers the route reads, or None when one repeats or is not plainly written."""
        found: dict[bytes, str] = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.lower()
            if name not in self._wanted:
                continue
            if name in found or not value.isascii():
                return None
            text = value.decode("ascii").strip(" \t")
            found[name] = text
        return found

    def answer(
        self,
        data: bytes,
        start: int,
        end: int,
        event_id: str,
        peer: str | None,
        arrival: float,
        ticket: Admitted,
        default_headers: list[tuple[bytes, bytes]],
    ) -> bytes | None:
        """The full response to the admitted request ``data[start:end]``, or None: not decided here.

        None leaves everything as it was (the ticket still queued): the caller hands the request
        to uvicorn. Bytes mean the request was run here and ``ticket`` released.
        """
        raw = complete_now(
            self._answer(data, start, end, event_id, peer, arrival, ticket, default_headers)
        )
        self._count(raw)
        return raw

    async def answer_async(
        self,
        data: bytes,
        start: int,
        end: int,
        event_id: str,
        peer: str | None,
        arrival: float,
        ticket: Admitted,
        default_headers: list[tuple[bytes, bytes]],
    ) -> bytes | None:
        """:meth:`answer` with stores that suspend (Redis): the same steps, awaited.

        Cancelled before it committed, it withdraws ``ticket`` (nobody else will).
        """
        raw = await self._answer(data, start, end, event_id, peer, arrival, ticket, default_headers)
        self._count(raw)
        return raw

    def _count(self, raw: bytes | None) -> None:
        stats = self._services.playback.stats
        if raw is None:
            self.passed += 1
            stats.front_passed += 1
        else:
            self.answered += 1
            stats.front_answered += 1

    async def _answer(
        self,
        data: bytes,
        start: int,
        end: int,
        event_id: str,
        peer: str | None,
        arrival: float,
        ticket: Admitted,
        default_headers: list[tuple[bytes, bytes]],
    ) -> bytes | None:
        head_end = data.find(b"\r\n\r\n", start, end)
        headers = self._headers(data[start:head_end])
        if headers is None:
            return None
        content_type = headers.get(b"content-type")
        if content_type is None or content_type.lower().encode() not in _JSON_TYPES:
            return None
        try:
            body = PlaybackRequest.model_validate(json.loads(data[head_end + 4 : end]))
        except (ValueError, ValidationError):  # JSONDecodeError is a ValueError
            return None
        svc = self._services
        playback = svc.playback
        now = playback.clock()
        try:
            account = svc.viewers.account(headers.get(b"authorization"), now)
        except ControlError:
            return None
        address, region = playback.region_of(
            peer, headers.get(b"x-forwarded-for"), headers.get(self._edge_header)
        )
        try:
            plan = await playback.cached_start(account, event_id, region, now)
        except BaseException:  # cancelled while Redis answered: the ticket is nobody's now
            self._admission.withdraw(ticket)
            raise
        if plan is None:
            return None
        # Committed from here on: what the route would do, in its order.
        decision = self._admission.start(ticket, time.monotonic() - arrival)
        if isinstance(decision, Shed):
            return shed_response(Priority.NEW_START, decision.retry_after)
        try:
            await playback.rate_limit(account, address, now)
            grant = await playback.open_session(account, plan, body.device, playback.clock())
        except ControlError as exc:
            raw = render_response(error_response(exc), default_headers)
        else:
            raw = render_grant(grant, default_headers)
        finally:
            self._admission.release(decision)
        self._latency.observe(time.monotonic() - arrival)
        return raw
