"""Access records from the shield and edges to the telemetry collector, and the sink they go into.

Shared by both planes: ``media/edge`` produces :class:`AccessRecord` values and hands them to a
:class:`TelemetrySink`; the collector (``control/telemetry``) decodes the same wire format.
Wire format: ``POST /v1/access`` with ``Content-Type: application/json`` and a body
``{"records": [[field, ...], ...]}``, each record a list in :data:`ACCESS_FIELDS` order (compact
enough for tens of thousands of records per second). A record of an edge from before
``ttlb_ms`` (its last field) has one field fewer and decodes with ``ttlb_ms`` None.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from dataclasses import astuple, dataclass, fields
from typing import Protocol

import httpx

__all__ = [
    "ACCESS_FIELDS",
    "AccessRecord",
    "HttpTelemetrySink",
    "MemoryTelemetrySink",
    "TelemetrySink",
    "decode_access_batch",
    "encode_access_batch",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """One response an edge or the shield sent."""

    ts: float
    """Epoch seconds when the request arrived."""
    cdn: str
    """The edge's name (``cdn-a``...) or ``shield``."""
    path: str
    """Request path (token prefix removed); the query is not kept except CMCD."""
    status: int
    """HTTP status sent."""
    bytes: int
    """Body bytes sent."""
    ttfb_ms: float
    """Request arrival → response head (with the body bytes in hand) written to the client.
    Includes anything the CDN made the request wait for: a fault drill's added latency, an
    upstream fetch on a miss, an LL-HLS blocking reload or preload-hint part held upstream
    (docs/telemetry.md, *CDN TTFB*)."""
    cache: str
    """HIT, STALE, MISS, COLLAPSED, FAULT, DENIED, ERROR."""
    client: str
    """Client address (the viewer for an edge, an edge for the shield)."""
    region: str | None
    """Region the request said it came from (``X-Client-Region``, set by a trusted front)."""
    user_agent: str | None
    """User-Agent header, for the device class."""
    cmcd: str | None
    """Raw CMCD of the request, percent-encoded as in a query: the ``CMCD=`` query value as sent
    and/or the ``CMCD-Request/Object/Status/Session`` header values (``%`` escaped), joined with
    commas."""
    ttlb_ms: float | None = None
    """Request arrival → last body byte written (the whole response); None from an edge that
    did not measure it."""


ACCESS_FIELDS = tuple(f.name for f in fields(AccessRecord))
_OLD_FIELDS = ACCESS_FIELDS.index("ttlb_ms")


def encode_access_batch(records: list[AccessRecord]) -> bytes:
    """The request body for ``POST /v1/access``."""
    return json.dumps({"records": [astuple(r) for r in records]}, separators=(",", ":")).encode()


def decode_access_batch(body: bytes, max_records: int) -> list[AccessRecord]:
    """Parse a ``POST /v1/access`` body; ValueError says precisely what is wrong."""
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    rows = doc.get("records") if isinstance(doc, dict) else None
    if not isinstance(rows, list):
        raise ValueError('body must be an object with a "records" list')
    if len(rows) > max_records:
        raise ValueError(f"more than {max_records} records in one batch")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or not _OLD_FIELDS <= len(row) <= len(ACCESS_FIELDS):
            raise ValueError(
                f"record {i}: expected a list of {len(ACCESS_FIELDS)} fields "
                f"({_OLD_FIELDS} from an edge without ttlb_ms)"
            )
        ts, cdn, path, status, nbytes, ttfb, cache, client, region, ua, cmcd = row[:_OLD_FIELDS]
        ttlb = row[_OLD_FIELDS] if len(row) > _OLD_FIELDS else None
        if not isinstance(ts, int | float) or isinstance(ts, bool):
            raise ValueError(f"record {i}: ts must be a number")
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"record {i}: status must be an HTTP status")
        if not isinstance(nbytes, int) or nbytes < 0:
            raise ValueError(f"record {i}: bytes must be a non-negative integer")
        if not isinstance(ttfb, int | float) or isinstance(ttfb, bool) or ttfb < 0:
            raise ValueError(f"record {i}: ttfb_ms must be a non-negative number")
        if ttlb is not None and (
            not isinstance(ttlb, int | float) or isinstance(ttlb, bool) or ttlb < 0
        ):
            raise ValueError(f"record {i}: ttlb_ms must be a non-negative number or null")
        for name, v in (("cdn", cdn), ("path", path), ("cache", cache), ("client", client)):
            if not isinstance(v, str):
                raise ValueError(f"record {i}: {name} must be a string")
        for name, v in (("region", region), ("user_agent", ua), ("cmcd", cmcd)):
            if v is not None and not isinstance(v, str):
                raise ValueError(f"record {i}: {name} must be a string or null")
        out.append(
            AccessRecord(
                float(ts),
                cdn,
                path,
                status,
                nbytes,
                float(ttfb),
                cache,
                client,
                region,
                ua,
                cmcd,
                None if ttlb is None else float(ttlb),
            )
        )
    return out


class TelemetrySink(Protocol):
    """Where access records go. ``offer`` never blocks and never raises: telemetry must not
    slow a response; when the sink is full the record is dropped and counted."""

    def offer(self, record: AccessRecord) -> None: ...

    @property
    def dropped(self) -> int: ...


class MemoryTelemetrySink:
    """Keeps the last ``maxlen`` records (for tests and in-process wiring)."""

    def __init__(self, maxlen: int = 100_000) -> None:
        self.records: deque[AccessRecord] = deque(maxlen=maxlen)
        self._dropped = 0

    def offer(self, record: AccessRecord) -> None:
        if len(self.records) == self.records.maxlen:
            self._dropped += 1
        self.records.append(record)

    @property
    def dropped(self) -> int:
        return self._dropped


class HttpTelemetrySink:
    """Batches records and posts them to the collector's ``/v1/access``.

    The queue holds at most ``max_queued`` records; when it is full new records are dropped
    (counted in ``dropped``), so a slow or absent collector costs the edge nothing but the
    telemetry. A batch goes out every ``interval_s`` or as soon as ``batch_size`` are waiting;
    0.1 s keeps an edge's errors within the collector's 2 s visibility budget (ten small POSTs a
    second per edge cost next to nothing).
    """

    def __init__(
        self,
        url: str,
        *,
        max_queued: int = 50_000,
        batch_size: int = 2_000,
        interval_s: float = 0.1,
        timeout_s: float = 2.0,
    ) -> None:
        self.url = url.rstrip("/") + "/v1/access"
        self.max_queued = max_queued
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._queue: deque[AccessRecord] = deque()
        self._dropped = 0
        self.sent = 0
        self.failed_batches = 0
        self._wake = asyncio.Event()

    def offer(self, record: AccessRecord) -> None:
        if len(self._queue) >= self.max_queued:
            self._dropped += 1
            return
        self._queue.append(record)
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    @property
    def dropped(self) -> int:
        return self._dropped

    async def serve(self) -> None:
        """Post batches until cancelled (run it in the owner's TaskGroup)."""
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            while True:
                try:
                    await asyncio.wait_for(self._wake.wait(), self.interval_s)
                except TimeoutError:
                    pass
                self._wake.clear()
                while self._queue:
                    n = min(self.batch_size, len(self._queue))
                    batch = [self._queue.popleft() for _ in range(n)]
                    await self._post(client, batch)

    async def _post(self, client: httpx.AsyncClient, batch: list[AccessRecord]) -> None:
        try:
            r = await client.post(
                self.url,
                content=encode_access_batch(batch),
                headers={"Content-Type": "application/json"},
            )
        except httpx.HTTPError as exc:
            self.failed_batches += 1
            self._dropped += len(batch)
            log.debug("telemetry sink: %s unreachable: %s", self.url, exc)
            return
        if r.status_code >= 300:
            self.failed_batches += 1
            self._dropped += len(batch)
            log.debug("telemetry sink: %s answered %d", self.url, r.status_code)
        else:
            self.sent += len(batch)
