"""The edge's upstream client: one GET per collapsed miss, whole bodies only (never a partial)."""

from __future__ import annotations

import httpx

from mainevent.media.edge.cache import UpstreamResponse

__all__ = ["Upstream", "UpstreamError"]

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


class Upstream:
    """GETs `target` (path + normalised query) from `base_url` over a keep-alive pool."""

    def __init__(self, base_url: str, *, timeout_s: float = 15.0, max_connections: int = 2048):
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 3.0)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=64),
            follow_redirects=False,
            trust_env=False,
        )

    async def get(self, target: str, headers: dict[str, str] | None = None) -> UpstreamResponse:
        try:
            r = await self._client.get(target, headers=headers)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{type(exc).__name__}: {exc}") from exc
        body = r.content
        declared = r.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) != len(body):
            raise UpstreamError(f"short body: {len(body)} of {declared} bytes")
        try:
            age = float(r.headers.get("age", "0"))
        except ValueError:
            age = 0.0
        kept = tuple((k, v) for k, v in r.headers.items() if k.lower() not in _HOP)
        return UpstreamResponse(r.status_code, kept, body, max(0.0, age))

    async def aclose(self) -> None:
        await self._client.aclose()
