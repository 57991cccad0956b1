"""Scale-out: collectors publish admitted reports to Redis Streams; aggregators consume them.

Selected by ``telemetry.stream.mode = "redis"``. Everything before aggregation is unchanged:
a collector decodes, validates, deduplicates and admits exactly as in process, but hands the
admitted inputs to a :class:`StreamSink` instead of its own :class:`Aggregator`. Per POST, the
sink's entries are appended (``XADD … MAXLEN ~ maxlen``) to one of ``shards`` streams chosen by
the session id, before the collector answers 204, so a report answered is a report stored.

Aggregators (:class:`StreamAggregator`, ``mainevent telemetry aggregate``) are consumers of one
consumer group on those streams (``XREADGROUP``, ``XACK`` once applied): each owns a set of
shards, so every report of one session reaches the same aggregator and its session state
(start-up, played/stalled time) is whole. Each runs the same sans-IO :class:`Aggregator` with the
collector's arrival time of every input, closes 1 s windows on its own timer (the blocking read
is bounded by the core's next deadline) and appends them to the windows stream. The query node
(:class:`WindowConsumer`) reads that stream and merges windows of the same second and series
from several aggregators in its store (counters exactly, sketches within their bound), and runs
the alert rules on them.

Wire format of an entry: field ``b``, a JSON list of items ``["p", now, dims, report, weight]``,
``["s", now, dims]`` (a shed heartbeat) or ``["a", now, dims, access_record]``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple
from typing import Any, cast

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from mainevent.common.telemetry import AccessRecord
from mainevent.config import TelemetrySettings
from mainevent.control.telemetry.aggregate import Aggregator, ClosedWindow
from mainevent.control.telemetry.events import EventTiming, PlayerReport, ReportKind
from mainevent.control.telemetry.model import Dims, QoeAggregate

__all__ = [
    "StreamAggregator",
    "StreamPublisher",
    "StreamSink",
    "WindowConsumer",
    "apply_entry",
    "decode_windows",
    "encode_windows",
    "shard_of",
]

log = logging.getLogger("mainevent.telemetry")

_Entries = list[tuple[bytes, dict[bytes, bytes]]]
_Read = list[tuple[bytes, _Entries]]
"""What XREAD/XREADGROUP answer (redis-py without decode_responses)."""


def shard_of(sid: str, shards: int) -> int:
    """The shard of a session (stable across processes, unlike ``hash``)."""
    return zlib.crc32(sid.encode()) % shards


_REPORT_FIELDS = PlayerReport.__struct_fields__
"""Attribute names of a report, in the order of its list on the stream."""


def _report_out(r: PlayerReport) -> list[Any]:
    out = list(msgspec.structs.astuple(r))
    out[2] = r.kind.value
    return out


def _report_in(v: Sequence[Any]) -> PlayerReport:
    vals = dict(zip(_REPORT_FIELDS, v, strict=True))
    vals["kind"] = ReportKind(vals["kind"])
    return PlayerReport(**vals)


class StreamSink:
    """Sans-IO: what a collector hands to the stream instead of its aggregator (same methods
    as :class:`Aggregator`'s inputs); :meth:`drain` gives one payload per shard touched."""

    def __init__(self, shards: int) -> None:
        self.shards = shards
        self._pending: list[list[list[Any]]] = [[] for _ in range(shards)]
        self._rr = 0

    def player(self, dims: Dims, r: PlayerReport, weight: float, now: float) -> None:
        self._pending[shard_of(r.sid, self.shards)].append(
            ["p", now, astuple(dims), _report_out(r), weight]
        )

    def players(
        self,
        dims_of: Sequence[Dims],
        reports: Sequence[PlayerReport],
        weights: Sequence[float],
        now: float,
    ) -> None:
        for dims, r, weight in zip(dims_of, reports, weights, strict=True):
            self.player(dims, r, weight, now)

    def shed(self, dims: Dims, now: float, sid: str | None = None) -> None:
        # To the session's shard: it keeps the session alive there (see Aggregator.shed).
        if sid is None:
            self._rr = shard = (self._rr + 1) % self.shards
        else:
            shard = shard_of(sid, self.shards)
        self._pending[shard].append(["s", now, astuple(dims), sid])

    def access(self, dims: Dims, rec: AccessRecord, now: float) -> None:
        self._rr = (self._rr + 1) % self.shards
        self._pending[self._rr].append(["a", now, astuple(dims), astuple(rec)])

    def drain(self) -> list[tuple[int, bytes]]:
        out = []
        for shard, items in enumerate(self._pending):
            if items:
                out.append((shard, json.dumps(items, separators=(",", ":")).encode()))
                self._pending[shard] = []
        return out


def apply_entry(agg: Aggregator, payload: bytes) -> int:
    """Feed one stream entry into an aggregator; returns the number of inputs."""
    items = json.loads(payload)
    for item in items:
        tag, now, dims = item[0], float(item[1]), Dims(*item[2])
        if tag == "p":
            agg.player(dims, _report_in(item[3]), float(item[4]), now)
        elif tag == "s":
            agg.shed(dims, now, item[3] if len(item) > 3 else None)
        elif tag == "a":
            agg.access(dims, AccessRecord(*item[3]), now)
        else:
            raise ValueError(f"unknown stream item {tag!r}")
    return len(items)


def encode_windows(windows: Sequence[ClosedWindow]) -> bytes:
    return json.dumps(
        [[w.start, astuple(w.dims), w.agg.to_json()] for w in windows], separators=(",", ":")
    ).encode()


def decode_windows(payload: bytes) -> list[ClosedWindow]:
    return [
        ClosedWindow(int(t), Dims(*d), QoeAggregate.from_json(a)) for t, d, a in json.loads(payload)
    ]


class _Names:
    def __init__(self, settings: TelemetrySettings) -> None:
        st = settings.stream
        self.prefix = st.prefix
        self.shards = st.shards
        self.maxlen = st.maxlen
        self.group = st.group

    def shard(self, n: int) -> str:
        return f"{self.prefix}:reports:{n}"

    @property
    def windows(self) -> str:
        return f"{self.prefix}:windows"


class StreamPublisher:
    """The collector's side: append what the sink collected to the shard streams."""

    def __init__(self, client: aioredis.Redis, settings: TelemetrySettings) -> None:
        self.client = client
        self.names = _Names(settings)
        self.sink = StreamSink(self.names.shards)
        self.published = 0

    async def flush(self) -> None:
        entries = self.sink.drain()
        if not entries:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for shard, payload in entries:
                pipe.xadd(
                    self.names.shard(shard),
                    {"b": payload},
                    maxlen=self.names.maxlen,
                    approximate=True,
                )
            await pipe.execute()
        self.published += len(entries)


class StreamAggregator:
    """One aggregator: a consumer of the group on its shards; closed windows to the windows
    stream. ``step()`` is one read-apply-ack-tick round (what ``run()`` repeats)."""

    def __init__(
        self,
        client: aioredis.Redis,
        settings: TelemetrySettings,
        events: Mapping[str, EventTiming],
        *,
        shards: Sequence[int] | None = None,
        consumer: str = "aggregator-0",
        clock: Callable[[], float],
        batch: int = 200,
    ) -> None:
        self.client = client
        self.names = _Names(settings)
        owned = list(range(self.names.shards)) if shards is None else list(shards)
        bad = [s for s in owned if not 0 <= s < self.names.shards]
        if bad or not owned:
            raise ValueError(f"shards must be a non-empty subset of 0..{self.names.shards - 1}")
        self.streams = [self.names.shard(s) for s in owned]
        self.consumer = consumer
        self.clock = clock
        self.batch = batch
        timings = {
            ev: EventTiming(ms, settings.part_target_ms) for ev, ms in settings.events.items()
        }
        timings.update(events)
        self.aggregator = Aggregator(
            timings,
            session_timeout_s=settings.session_timeout_s,
            max_sessions=settings.max_sessions,
        )
        self.applied = 0

    async def setup(self) -> None:
        """Create the group on each owned shard (from the stream's start) if it is missing."""
        for s in self.streams:
            try:
                await self.client.xgroup_create(s, self.names.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def recover(self, min_idle_ms: int = 30_000) -> int:
        """Take over entries of the owned shards that another consumer read but never
        acknowledged (it crashed) for ``min_idle_ms``: apply and ack them. Returns how many."""
        n = 0
        for s in self.streams:
            start = "0-0"
            while True:
                claimed = await self.client.xautoclaim(
                    s, self.names.group, self.consumer, min_idle_ms, start, count=self.batch
                )
                start, entries = claimed[0], cast(_Entries, claimed[1])
                ids = []
                for entry_id, data in entries:
                    if data:  # an entry trimmed away by MAXLEN comes back empty
                        self.applied += apply_entry(self.aggregator, data[b"b"])
                    ids.append(entry_id)
                if ids:
                    await self.client.xack(s, self.names.group, *ids)
                    n += len(ids)
                if start in (b"0-0", "0-0"):
                    break
        return n

    async def step(self, block_ms: int | None) -> int:
        """Read (blocking up to ``block_ms``; None = don't block), apply, ack; then close the
        windows that ended and publish them. Returns the entries applied."""
        got = cast(
            _Read,
            await self.client.xreadgroup(
                self.names.group,
                self.consumer,
                dict.fromkeys(self.streams, ">"),
                count=self.batch,
                block=block_ms,
            ),
        )
        n = 0
        for stream, entries in got or ():
            ids = []
            for entry_id, data in entries:
                self.applied += apply_entry(self.aggregator, data[b"b"])
                ids.append(entry_id)
            if ids:
                await self.client.xack(stream, self.names.group, *ids)
                n += len(ids)
        await self.tick()
        return n

    async def tick(self) -> list[ClosedWindow]:
        deadline = self.aggregator.next_deadline()
        if deadline is not None and self.clock() < deadline:
            return []
        windows = self.aggregator.tick(self.clock())
        if windows:
            await self.client.xadd(
                self.names.windows,
                {"w": encode_windows(windows)},
                maxlen=self.names.maxlen,
                approximate=True,
            )
        return windows

    async def run(self) -> None:
        """Until cancelled: block on the streams no longer than the next window deadline."""
        await self.setup()
        await self.recover()
        while True:
            deadline = self.aggregator.next_deadline()
            wait = 1.0 if deadline is None else max(0.0, deadline - self.clock() + 0.01)
            await self.step(max(1, int(wait * 1000)))


class WindowConsumer:
    """The query node's side: every closed window of every aggregator, in stream order."""

    def __init__(self, client: aioredis.Redis, settings: TelemetrySettings) -> None:
        self.client = client
        self.names = _Names(settings)
        self.last_id = "0"

    async def setup(self) -> None:
        """Start after the newest window already in the stream (stored before a restart)."""
        newest = cast(_Entries, await self.client.xrevrange(self.names.windows, count=1))
        if newest:
            self.last_id = newest[0][0].decode()

    async def read(self, block_ms: int | None) -> list[ClosedWindow]:
        got = cast(
            _Read,
            await self.client.xread({self.names.windows: self.last_id}, count=100, block=block_ms),
        )
        out: list[ClosedWindow] = []
        for _, entries in got or ():
            for entry_id, data in entries:
                out.extend(decode_windows(data[b"w"]))
                self.last_id = entry_id.decode()
        return out

    async def run(self, on_windows: Callable[[list[ClosedWindow]], object]) -> None:
        await self.setup()
        while True:
            try:
                windows = await self.read(5000)
            except (OSError, aioredis.ConnectionError) as exc:  # pragma: no cover - retried
                log.warning("telemetry windows stream: %s", exc)
                await asyncio.sleep(1.0)
                continue
            if windows:
                on_windows(windows)
