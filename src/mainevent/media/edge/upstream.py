"""The edge's upstream client: one streamed GET per collapsed miss, the body read as it arrives.

A body that ends before its `Content-Length` (or its last chunk) raises `UpstreamError`, so the
caller never mistakes a cut-off response for a whole one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

__all__ = ["Upstream", "UpstreamError", "UpstreamStream"]

# Headers that describe one hop, or that the edge sets itself.
_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "date",
        "server",
        "age",
        "x-cache",
        "access-control-allow-origin",
        "access-control-expose-headers",
        "cmsd-static",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    }
)


class UpstreamError(Exception):
    """The upstream did not deliver a complete response (refused, reset, timeout, short body)."""


@dataclass(slots=True, eq=False)
class UpstreamStream:
    """An upstream response whose head is in; `chunks()` yields its body bytes as they arrive.

    `length` is the upstream's `Content-Length` (None when it sent the body chunked).
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    age: float
    length: int | None
    _response: httpx.Response

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None

    async def chunks(self) -> AsyncIterator[bytes]:
        received = 0
        try:
            # Raw bytes: what the upstream sent is what every client gets and what is stored.
            async for chunk in self._response.aiter_raw():
                received += len(chunk)
                yield chunk
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{type(exc).__name__} after {received} bytes: {exc}") from exc
        if self.length is not None and received != self.length:
            raise UpstreamError(f"short body: {received} of {self.length} bytes")


class Upstream:
    """GETs `target` (path + normalised query) from `base_url` over a keep-alive pool."""

    def __init__(self, base_url: str, *, timeout_s: float = 15.0, max_connections: int = 2048):
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            # Identity: the bytes are passed on raw, so they must be what any client can read.
            headers={"accept-encoding": "identity"},
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 3.0)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=64),
            follow_redirects=False,
            trust_env=False,
        )

    @asynccontextmanager
    async def open(self, target: str) -> AsyncIterator[UpstreamStream]:
        """The response to GET `target` once its head is in; the body is read from `chunks()`."""
        try:
            r = await self._client.send(self._client.build_request("GET", target), stream=True)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{type(exc).__name__}: {exc}") from exc
        try:
            try:
                age = max(0.0, float(r.headers.get("age", "0")))
            except ValueError:
                age = 0.0
            declared = r.headers.get("content-length")
            length = int(declared) if declared is not None and declared.isdigit() else None
            kept = tuple((k, v) for k, v in r.headers.items() if k.lower() not in _HOP)
            yield UpstreamStream(r.status_code, kept, age, length, r)
        finally:
            # Unread rest (an error mid-body): the connection is dropped, not reused.
            await r.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()
