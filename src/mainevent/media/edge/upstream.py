"""The edge's upstream client: one streamed GET per collapsed miss, the body read as it arrives.

A body that ends before its `Content-Length` (or its last chunk) raises `UpstreamError`, so the
caller never mistakes a cut-off response for a whole one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from mainevent.media.edge.failover import FAILOVER_STATUSES, OriginChoice, UpstreamStatistics

__all__ = ["FailoverUpstream", "Upstream", "UpstreamError", "UpstreamStream"]

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


class FailoverUpstream:
    """`Upstream` over several origins in preference order (`failover.OriginChoice`): a fetch
    that fails on one is tried on the next within the same request."""

    def __init__(
        self,
        base_urls: tuple[str, ...],
        *,
        timeout_s: float = 15.0,
        max_connections: int = 2048,
        open_s: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.choice = OriginChoice(base_urls, open_s)
        self._ups = [
            Upstream(u, timeout_s=timeout_s, max_connections=max_connections) for u in base_urls
        ]
        self.base_url = self._ups[0].base_url
        self.monotonic = monotonic

    @asynccontextmanager
    async def open(self, target: str) -> AsyncIterator[UpstreamStream]:
        """The first whole answer from the origins, in order (`UpstreamError`: none gave one)."""
        tried: set[int] = set()
        errors: list[str] = []
        while True:
            i = self.choice.next(self.monotonic(), frozenset(tried))
            if i is None:
                raise UpstreamError(
                    "no origin answered: " + ("; ".join(errors) or "all marked down")
                )
            tried.add(i)
            more = len(tried) < len(self._ups)
            async with contextlib.AsyncExitStack() as stack:
                try:
                    up = await stack.enter_async_context(self._ups[i].open(target))
                except UpstreamError as exc:
                    self.choice.record(i, False, self.monotonic(), moved_on=more)
                    errors.append(f"{self._ups[i].base_url}: {exc}")
                    continue
                broken = up.status in FAILOVER_STATUSES
                # A 404 may be this origin's gap (it missed the object, or it is hiding a
                # window it is still catching up on): the next origin may have it.
                if more and (broken or up.status == 404):
                    self.choice.record(i, not broken, self.monotonic(), moved_on=True)
                    errors.append(f"{self._ups[i].base_url}: {up.status}")
                    continue
                self.choice.record(i, not broken, self.monotonic())
                try:
                    yield up
                except UpstreamError:
                    self.choice.record(i, False, self.monotonic())  # cut off mid-body
                    raise
                return

    def statistics(self) -> list[UpstreamStatistics]:
        return self.choice.statistics()

    async def aclose(self) -> None:
        for up in self._ups:
            await up.aclose()
