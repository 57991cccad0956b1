"""Request-body cap of the control plane: 413 before a large body is read, chunked or not.

A declared ``Content-Length`` over the cap is answered at once, without reading a byte of the
body; a body without one (``Transfer-Encoding: chunked``) is counted as it arrives and answered
413 the moment it passes the cap, the rest left unread. Either way the connection is closed
after the answer (``Connection: close``), so the server does not go on draining the body.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimitMiddleware", "declared_length", "too_large_body"]


def too_large_body(limit: int) -> bytes:
    """The JSON error body of a 413."""
    return json.dumps(
        {
            "error": {
                "reason": "body_too_large",
                "message": f"the request body is larger than the {limit} bytes this server accepts",
                "retryable": False,
                "details": {"max_body_bytes": limit},
            }
        }
    ).encode()


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length of a request, or None when absent or not a plain number.

    ASGI servers hand header names over lowercased.
    """
    for name, value in headers:
        if name == b"content-length":
            v = value.strip()
            return int(v) if v.isdigit() else None
    return None


class BodyLimitMiddleware:
    """Pure ASGI: refuses request bodies over ``limit`` bytes with 413 ``body_too_large``."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self._body = too_large_body(limit)

    async def _refuse(self, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(self._body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": self._body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope["headers"])
        if declared is not None:
            if declared > self.limit:
                await self._refuse(send)
                return
            # The server enforces a declared length: no need to count.
            await self.app(scope, receive, send)
            return
        received = 0
        refused = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    if not started:
                        await self._refuse(send)
                    # To the app the client is gone: it stops reading and its answer is dropped.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counting_receive, guarded_send)
