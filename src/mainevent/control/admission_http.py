"""Admission control at the HTTP edge: classify viewer requests, shed them before routing.

The decisions are the sans-IO :class:`~mainevent.common.admission.AdmissionController`'s; this
module is the ASGI adapter (and the canned response the uvicorn protocol adapter writes).
"""

from __future__ import annotations

import asyncio
import json
import math
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mainevent.common.admission import AdmissionController, Admitted, Priority, Shed
from mainevent.common.histogram import LatencyHistogram
from mainevent.control.entitlement import Denial

__all__ = [
    "ADMITTED",
    "ARRIVAL",
    "AdmissionMiddleware",
    "classify",
    "shed_response",
    "watch_loop_delay",
]


def classify(method: str, path: str) -> Priority | None:
    """Admission priority of a request from its method and path (None: never shed)."""
    if path.startswith("/v1/sessions/"):
        return Priority.REFRESH
    if path.startswith("/v1/events/"):
        if method == "POST" and path.endswith("/playback"):
            return Priority.NEW_START
        if method == "GET" and path.endswith("/status"):
            return Priority.POLL
    if path == "/v1/purchases":
        return Priority.PURCHASE
    return None  # operator and health routes are never shed


def shed_response(priority: Priority, retry_after: float, *, keep_alive: bool = True) -> bytes:
    """A complete HTTP/1.1 503 response for a shed request (written directly by the server adapter)."""
    key = (priority, max(1, math.ceil(retry_after)), keep_alive)
    raw = _SHED_RESPONSES.get(key)
    if raw is None:
        body = _SHED_BODY[priority]
        connection = b"" if keep_alive else b"connection: close\r\n"
        raw = _SHED_RESPONSES[key] = (
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            + b"content-length: %d\r\nretry-after: %d\r\n" % (len(body), key[1])
            + connection
            + b"\r\n"
            + body
        )
    return raw


_SHED_BODY = {
    p: json.dumps(
        {
            "error": {
                "reason": Denial.OVERLOADED.value,
                "message": "overloaded; retry later",
                "retryable": True,
                "details": {"priority": p.name.lower()},
            }
        }
    ).encode()
    for p in Priority
}
# Rendered once per (priority, Retry-After seconds, keep-alive): a few dozen at most.
_SHED_RESPONSES: dict[tuple[Priority, int, bool], bytes] = {}

ADMITTED = "mainevent.admitted"
"""Scope extension set by the server adapter when it already admitted the request (``{"ticket": Admitted}``)."""

ARRIVAL = "mainevent.arrival"
"""Scope extension set by the server adapter: ``{"monotonic": t}``, ``t`` the ``time.monotonic()`` at
which the event-loop iteration that read the request's first bytes started reading."""


class AdmissionMiddleware:
    """Pure ASGI: sheds viewer traffic by priority before any routing or parsing cost is paid.

    Requests the server adapter already admitted (``scope["extensions"]["mainevent.admitted"]``)
    are checked again here, when they start to run: one that waited beyond its priority's
    ``max_wait`` since its arrival stamp is shed after all (CoDel's dequeue-time drop). Others
    are admitted here. The load signal itself (event-loop lag) is fed by :func:`watch_loop_delay`.
    """

    def __init__(
        self,
        app: ASGIApp,
        controller: AdmissionController,
        latency: dict[Priority, LatencyHistogram] | None = None,
    ) -> None:
        self.app = app
        self.controller = controller
        #: Time from arrival to the end of the response of admitted requests, per priority.
        self.latency = latency if latency is not None else {p: LatencyHistogram() for p in Priority}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        priority = classify(scope["method"], scope["path"])
        if priority is None:
            await self.app(scope, receive, send)
            return
        extensions = scope.get("extensions") or {}
        stamp = extensions.get(ARRIVAL)
        arrival = stamp.get("monotonic") if isinstance(stamp, dict) else None
        waited = 0.0
        if isinstance(arrival, float):
            waited = max(0.0, time.monotonic() - arrival)
        else:
            arrival = time.monotonic()
        pre = extensions.get(ADMITTED)
        ticket = pre.get("ticket") if isinstance(pre, dict) else None
        # The server adapter may already have admitted the request while parsing it: then only
        # its time in the queue since then can still shed it.
        decision = (
            self.controller.start(ticket, waited)
            if isinstance(ticket, Admitted)
            else self.controller.admit(priority, waited)
        )
        if isinstance(decision, Shed):
            body = _SHED_BODY[priority]
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"retry-after", str(max(1, math.ceil(decision.retry_after))).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        histogram = self.latency[priority]
        start = arrival

        async def timed_send(message: Message) -> None:
            # Measured when the last bytes are handed to the server, before any wait for a slow
            # client to drain them: the latency this process is responsible for.
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                histogram.observe(time.monotonic() - start)
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            self.controller.release(decision)


async def watch_loop_delay(controller: AdmissionController, interval: float = 0.01) -> None:
    """Feed event-loop lag (the server's queueing delay) to the admission controller."""
    while True:
        t0 = time.monotonic()
        await asyncio.sleep(interval)
        controller.observe_delay(max(0.0, time.monotonic() - t0 - interval))
