"""Object-storage segment store: the local store first, an S3-API bucket behind it.

Publication never waits for the bucket: `put_*` return once the local store has the bytes
(memory + disk, as with `LocalSegmentStore`), and an upload job is queued. One uploader task
drains the bounded queue, retrying each object with capped exponential backoff until it is
stored (the bytes are re-read from local disk, so a queued job costs a few bytes of memory).
When the queue is full the job is not queued, the miss is counted, and the uploader catches up
from the local index once the queue has drained: the index on disk is the durable backlog, so
an outage of any length loses nothing and never slows the live edge.

Uploaded segments are recorded in `uploaded.jsonl` beside the index; beyond `local_segments`
per rendition the oldest uploaded ones leave local disk, and `read` fetches them back from the
bucket (DVR, clips, VOD). Object keys: `<prefix><event>/<rendition>/<name>`.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mainevent.media.store.local import LocalSegmentStore
from mainevent.media.store.protocol import SegmentRecord, StoreError

__all__ = ["S3Config", "S3SegmentStore", "S3Stats", "backoff_s"]

log = logging.getLogger(__name__)

UPLOADED = "uploaded.jsonl"
_SEGMENT = re.compile(r"^(\d{1,18})\.m4s$")
_INIT = re.compile(r"^init(-[0-9a-f]{12})?\.mp4$")


@dataclass(frozen=True, slots=True)
class S3Config:
    """Where the bucket is and how the uploader behaves (see `config.S3Settings`)."""

    bucket: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    prefix: str = ""
    queue_max: int = 1024
    local_segments: int | None = None
    retry_base_s: float = 0.2
    retry_max_s: float = 10.0
    timeout_s: float = 5.0


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Wait before retry `attempt` (1, 2, …): base · 2^(attempt-1), capped at `max_s`."""
    return float(min(max_s, base_s * 2 ** min(attempt - 1, 30)))


@dataclass(frozen=True, slots=True)
class S3Stats:
    """Snapshot of the uploader."""

    queued: int
    uploaded: int
    failures: int
    overflowed: int
    evicted: int
    fetched: int
    backlog: bool
    """Some objects are known to be missing from the bucket (queue overflowed)."""


@dataclass(slots=True)
class _Counters:
    uploaded: int = 0
    failures: int = 0
    overflowed: int = 0
    evicted: int = 0
    fetched: int = 0


@dataclass(frozen=True, slots=True)
class _Job:
    event: str
    rendition: str
    name: str
    msn: int | None = None  # segments: evictable once stored


def default_client(cfg: S3Config) -> Any:
    """A boto3 S3 client without botocore's own retries (the uploader retries) and with
    short timeouts, so a dead endpoint costs at most `timeout_s` per attempt."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=cfg.endpoint_url,
        region_name=cfg.region,
        aws_access_key_id=cfg.access_key_id,
        aws_secret_access_key=cfg.secret_access_key,
        config=Config(
            connect_timeout=cfg.timeout_s,
            read_timeout=cfg.timeout_s,
            retries={"max_attempts": 1, "mode": "standard"},
        ),
    )


@dataclass
class S3SegmentStore:
    """`SegmentStore` over a `LocalSegmentStore` with an S3-API bucket behind it.

    Run `serve()` (the uploader) in the service's task group.
    """

    local: LocalSegmentStore
    config: S3Config
    client_factory: Callable[[S3Config], Any] = default_client
    sleep: Callable[[float], Any] = asyncio.sleep
    _client: Any = None
    _queue: asyncio.Queue[_Job] = field(init=False)
    _counters: _Counters = field(default_factory=_Counters)
    _uploaded: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    _uploaded_inits: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    # Uploaded segments still on local disk (min-heap) and the newest uploaded MSN.
    _evictable: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    _newest: dict[tuple[str, str], int] = field(default_factory=dict)
    _backlog: bool = True  # sweep the local disk once at start: a crash may have left some
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._queue = asyncio.Queue(self.config.queue_max)
        # Not idle until the start-up sweep has run (`_backlog` starts True).

    @property
    def root(self) -> Path:
        return self.local.root

    def _key(self, event: str, rendition: str, name: str) -> str:
        return f"{self.config.prefix}{event}/{rendition}/{name}"

    def _client_now(self) -> Any:
        if self._client is None:
            self._client = self.client_factory(self.config)
        return self._client

    # -- SegmentStore -------------------------------------------------------------------------

    async def put_init(self, event: str, rendition: str, name: str, data: bytes) -> None:
        await self.local.put_init(event, rendition, name, data)
        self._enqueue(_Job(event, rendition, name))

    async def put_segment(
        self, event: str, rendition: str, record: SegmentRecord, data: bytes
    ) -> None:
        await self.local.put_segment(event, rendition, record, data)
        self._enqueue(_Job(event, rendition, f"{record.msn}.m4s", record.msn))

    def put_part(self, event: str, rendition: str, msn: int, index: int, data: bytes) -> None:
        self.local.put_part(event, rendition, msn, index, data)

    async def read(self, event: str, rendition: str, name: str) -> bytes | None:
        data = await self.local.read(event, rendition, name)
        if data is not None or not (_SEGMENT.match(name) or _INIT.match(name)):
            return data
        try:
            data = await asyncio.to_thread(self._get, self._key(event, rendition, name))
        except Exception as exc:
            raise StoreError(
                f"cannot read {name} of {event}/{rendition} from bucket {self.config.bucket}: {exc}"
            ) from exc
        if data is not None:
            self._counters.fetched += 1
        return data

    def _get(self, key: str) -> bytes | None:
        client = self._client_now()
        try:
            obj = client.get_object(Bucket=self.config.bucket, Key=key)
        except client.exceptions.NoSuchKey:
            return None
        body: bytes = obj["Body"].read()
        return body

    def get_cached(self, event: str, rendition: str, name: str) -> bytes | None:
        return self.local.get_cached(event, rendition, name)

    def records(self, event: str, rendition: str) -> list[SegmentRecord]:
        """Records whose segment is on local disk whole, or in the bucket."""
        uploaded = self._uploaded_set(event, rendition)
        out = []
        for rec in self.local.index_records(event, rendition):
            size = self.local.local_size(event, rendition, rec.msn)
            if size == rec.size or (size is None and rec.msn in uploaded):
                out.append(rec)
        return out

    def inits(self, event: str, rendition: str) -> dict[str, bytes]:
        return self.local.inits(event, rendition)

    def renditions(self, event: str) -> list[str]:
        return self.local.renditions(event)

    def forget(self, event: str, rendition: str, msns: list[int]) -> None:
        self.local.forget(event, rendition, msns)

    async def put_event_meta(self, event: str, name: str, data: bytes) -> None:
        # Beside the index on local disk, which is what a restart reads anyway.
        await self.local.put_event_meta(event, name, data)

    def event_meta(self, event: str, name: str) -> bytes | None:
        return self.local.event_meta(event, name)

    async def delete(self, event: str, rendition: str, msns: list[int]) -> None:
        """Retention: delete locally and in the bucket; the uploaded list is rewritten without
        them so a restart never lists a deleted segment."""
        await self.local.delete(event, rendition, msns)
        uploaded = self._uploaded_set(event, rendition)
        gone = [m for m in msns if m in uploaded]
        if not gone:
            return

        def remove() -> None:
            client = self._client_now()
            for msn in gone:
                client.delete_object(
                    Bucket=self.config.bucket, Key=self._key(event, rendition, f"{msn}.m4s")
                )
            uploaded.difference_update(gone)
            path = self._uploaded_path(event, rendition)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("".join(f"{m}\n" for m in sorted(uploaded)), encoding="utf-8")
            os.replace(tmp, path)

        try:
            await asyncio.to_thread(remove)
        except Exception as exc:
            raise StoreError(
                f"cannot delete segments of {event}/{rendition} from bucket {self.config.bucket}: {exc}"
            ) from exc

    # -- uploader -----------------------------------------------------------------------------

    def statistics(self) -> S3Stats:
        c = self._counters
        return S3Stats(
            queued=self._queue.qsize(),
            uploaded=c.uploaded,
            failures=c.failures,
            overflowed=c.overflowed,
            evicted=c.evicted,
            fetched=c.fetched,
            backlog=self._backlog,
        )

    def is_uploaded(self, event: str, rendition: str, msn: int) -> bool:
        return msn in self._uploaded_set(event, rendition)

    def _uploaded_path(self, event: str, rendition: str) -> Path:
        return self.local.root / event / rendition / UPLOADED

    def _uploaded_set(self, event: str, rendition: str) -> set[int]:
        key = (event, rendition)
        found = self._uploaded.get(key)
        if found is None:
            found = set()
            try:
                for line in self._uploaded_path(event, rendition).read_text("utf-8").split():
                    if line.isdigit():
                        found.add(int(line))
            except FileNotFoundError:
                pass
            self._uploaded[key] = found
        return found

    def _enqueue(self, job: _Job) -> None:
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            # Full: not queued. The local index is the durable backlog; the uploader sweeps it
            # once the queue has drained (see `_catch_up`).
            self._counters.overflowed += 1
            self._backlog = True
            return
        self._idle.clear()

    async def wait_idle(self) -> None:
        """Wait until everything stored locally is in the bucket (queue empty, no backlog)."""
        await self._idle.wait()

    async def serve(self) -> None:
        """Upload queued objects until cancelled."""
        while True:
            if self._queue.empty():
                if self._backlog:
                    await self._catch_up()
                    continue
                self._idle.set()
            job = await self._queue.get()
            await self._upload(job)

    async def _catch_up(self) -> None:
        """Queue what the local disk holds and the bucket does not (as room allows; the rest
        stays backlog for the next sweep)."""
        self._backlog = False
        for job in await asyncio.to_thread(self._missing):
            if self._queue.full():
                self._backlog = True
                return
            self._queue.put_nowait(job)

    def _missing(self) -> list[_Job]:
        root = self.local.root
        jobs: list[_Job] = []
        events = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        for event in events:
            for rendition in self.local.renditions(event):
                uploaded = self._uploaded_set(event, rendition)
                inits = self._uploaded_inits.setdefault((event, rendition), set())
                jobs += [
                    _Job(event, rendition, n)
                    for n in self.local.inits(event, rendition)
                    if n not in inits
                ]
                jobs += [
                    _Job(event, rendition, f"{r.msn}.m4s", r.msn)
                    for r in self.local.index_records(event, rendition)
                    if r.msn not in uploaded
                    and self.local.local_size(event, rendition, r.msn) is not None
                ]
        return jobs

    async def _upload(self, job: _Job) -> None:
        path = self.local.root / job.event / job.rendition / job.name
        attempt = 0
        while True:
            try:
                data = await asyncio.to_thread(path.read_bytes)
            except FileNotFoundError:
                log.warning("%s left local disk before its upload; skipped", path)
                return
            try:
                await asyncio.to_thread(
                    self._put, self._key(job.event, job.rendition, job.name), data
                )
                break
            except Exception as exc:
                attempt += 1
                self._counters.failures += 1
                wait = backoff_s(attempt, self.config.retry_base_s, self.config.retry_max_s)
                if attempt == 1 or attempt % 10 == 0:
                    log.warning(
                        "upload of %s/%s/%s failed (attempt %d): %s; retrying in %.1f s",
                        job.event,
                        job.rendition,
                        job.name,
                        attempt,
                        exc,
                        wait,
                    )
                await self.sleep(wait)
        self._counters.uploaded += 1
        if job.msn is not None:
            self._counters.evicted += await asyncio.to_thread(
                self._mark_uploaded, job.event, job.rendition, job.msn
            )
        else:
            self._uploaded_inits.setdefault((job.event, job.rendition), set()).add(job.name)

    def _put(self, key: str, data: bytes) -> None:
        self._client_now().put_object(Bucket=self.config.bucket, Key=key, Body=data)

    def _mark_uploaded(self, event: str, rendition: str, msn: int) -> int:
        """Record `msn` as in the bucket, then delete local copies beyond `local_segments`;
        returns how many left local disk. Runs in a worker thread (file I/O), one at a time."""
        key = (event, rendition)
        with open(self._uploaded_path(event, rendition), "a", encoding="utf-8") as f:
            f.write(f"{msn}\n")
        uploaded = self._uploaded_set(event, rendition)
        uploaded.add(msn)
        keep = self.config.local_segments
        if keep is None:
            return 0
        heap = self._evictable.get(key)
        if heap is None:  # first time (or after a restart): what is uploaded and still local
            heap = [m for m in uploaded if self.local.local_size(event, rendition, m) is not None]
            heapq.heapify(heap)
            self._evictable[key] = heap
        else:
            heapq.heappush(heap, msn)
        newest = self._newest[key] = max(self._newest.get(key, msn), msn)
        evicted = 0
        while heap and heap[0] <= newest - keep:
            old = heapq.heappop(heap)
            if self.local.local_size(event, rendition, old) is not None:
                self.local.remove_local(event, rendition, old)
                evicted += 1
        return evicted
