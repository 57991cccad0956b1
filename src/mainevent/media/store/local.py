"""Embedded segment store: memory for the live edge, local disk for everything.

Files are written to a temporary name, fsynced when asked, then renamed, so a crash never
leaves a half-written segment under its real name. Each rendition has an append-only
`index.jsonl`; a torn last line (crash mid-append) is ignored on load, and a record whose file
is missing or of the wrong size is skipped, so only whole, published segments come back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import OrderedDict
from pathlib import Path

from mainevent.media.store.protocol import SegmentRecord, StoreError

log = logging.getLogger(__name__)

INDEX = "index.jsonl"
_EMPTY: OrderedDict[str, bytes] = OrderedDict()


class LocalSegmentStore:
    """`SegmentStore` on a local directory, with an in-memory cache of recent objects."""

    def __init__(self, root: Path, *, memory_segments: int = 64, fsync: bool = False) -> None:
        self.root = root
        self.memory_segments = memory_segments
        self.fsync = fsync
        # (event, rendition) -> name -> bytes; insertion order = publication order.
        self._memory: dict[tuple[str, str], OrderedDict[str, bytes]] = {}
        self._inits: dict[tuple[str, str], dict[str, bytes]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def _dir(self, event: str, rendition: str) -> Path:
        return self.root / event / rendition

    def _mem(self, event: str, rendition: str) -> OrderedDict[str, bytes]:
        return self._memory.setdefault((event, rendition), OrderedDict())

    def _write_file(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)

    @staticmethod
    def _write_durably(path: Path, data: bytes) -> None:
        """Temp file, fsync, rename, fsync of the directory: whole and on disk, whatever
        `fsync` says (for the few small documents that must survive a power cut)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _append_index(self, path: Path, line: str) -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())

    async def put_init(self, event: str, rendition: str, name: str, data: bytes) -> None:
        path = self._dir(event, rendition) / name
        try:
            await asyncio.to_thread(self._write_file, path, data)
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc.strerror}") from exc
        self._inits.setdefault((event, rendition), {})[name] = data

    async def put_segment(
        self, event: str, rendition: str, record: SegmentRecord, data: bytes
    ) -> None:
        if len(data) != record.size:
            raise StoreError(
                f"segment {record.msn}: record says {record.size} bytes, got {len(data)}"
            )
        d = self._dir(event, rendition)
        line = (
            json.dumps(
                {
                    "msn": record.msn,
                    "duration_us": record.duration_us,
                    "pdt_ms": record.program_date_time_ms,
                    "init": record.init_name,
                    "size": record.size,
                    "parts": [list(p) for p in record.parts],
                    **({"disc": True} if record.discontinuity else {}),
                    **({"slate": True} if record.slate else {}),
                },
                separators=(",", ":"),
            )
            + "\n"
        )
        lock = self._locks.setdefault((event, rendition), asyncio.Lock())
        async with lock:
            try:
                await asyncio.to_thread(self._write_file, d / f"{record.msn}.m4s", data)
                await asyncio.to_thread(self._append_index, d / INDEX, line)
            except OSError as exc:
                raise StoreError(
                    f"cannot store segment {record.msn} of {event}/{rendition}: {exc.strerror}"
                ) from exc
        mem = self._mem(event, rendition)
        mem[f"{record.msn}.m4s"] = data
        self._trim(mem)

    def put_part(self, event: str, rendition: str, msn: int, index: int, data: bytes) -> None:
        mem = self._mem(event, rendition)
        mem[f"{msn}.{index}.m4s"] = data
        self._trim(mem)

    def _trim(self, mem: OrderedDict[str, bytes]) -> None:
        # Parts and segments share the budget: a segment counts as one, a part as one.
        limit = self.memory_segments * 6
        while len(mem) > limit:
            mem.popitem(last=False)

    async def read(self, event: str, rendition: str, name: str) -> bytes | None:
        data = self._memory.get((event, rendition), _EMPTY).get(name)
        if data is not None:
            return data
        init = self._inits.get((event, rendition), {}).get(name)
        if init is not None:
            return init
        if name.count(".") != 1:
            return None  # parts live in memory only
        path = self._dir(event, rendition) / name
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from exc

    def get_cached(self, event: str, rendition: str, name: str) -> bytes | None:
        """Memory-only lookup (no disk access), for the hot path."""
        data = self._memory.get((event, rendition), _EMPTY).get(name)
        if data is None:
            data = self._inits.get((event, rendition), {}).get(name)
        return data

    def index_records(self, event: str, rendition: str) -> list[SegmentRecord]:
        """Every readable record of the rendition's index, in MSN order, whether or not its file
        is still on local disk (an object store may hold it)."""
        d = self._dir(event, rendition)
        try:
            lines = (d / INDEX).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out: dict[int, SegmentRecord] = {}
        for n, line in enumerate(lines, 1):
            try:
                o = json.loads(line)
                rec = SegmentRecord(
                    msn=int(o["msn"]),
                    duration_us=int(o["duration_us"]),
                    program_date_time_ms=int(o["pdt_ms"]),
                    init_name=str(o["init"]),
                    size=int(o["size"]),
                    parts=tuple((int(p[0]), bool(p[1])) for p in o.get("parts", [])),
                    discontinuity=bool(o.get("disc", False)),
                    slate=bool(o.get("slate", False)),
                )
            except (ValueError, KeyError, TypeError, IndexError):
                log.warning("ignoring unreadable line %d of %s (torn write?)", n, d / INDEX)
                continue
            out[rec.msn] = rec
        return [out[k] for k in sorted(out)]

    def local_size(self, event: str, rendition: str, msn: int) -> int | None:
        """Bytes of segment `msn` on local disk, or None when it has no file here."""
        try:
            return (self._dir(event, rendition) / f"{msn}.m4s").stat().st_size
        except FileNotFoundError:
            return None

    def remove_local(self, event: str, rendition: str, msn: int) -> None:
        """Delete segment `msn`'s local file (its copy lives elsewhere, e.g. object storage)."""
        (self._dir(event, rendition) / f"{msn}.m4s").unlink(missing_ok=True)

    def records(self, event: str, rendition: str) -> list[SegmentRecord]:
        d = self._dir(event, rendition)
        out = []
        for rec in self.index_records(event, rendition):
            size = self.local_size(event, rendition, rec.msn)
            if size is None:
                log.warning("segment %s/%d listed in the index has no file; skipped", d, rec.msn)
                continue
            if size != rec.size:
                log.warning(
                    "segment %s/%d has %d bytes, index says %d; skipped", d, rec.msn, size, rec.size
                )
                continue
            out.append(rec)
        return out

    def inits(self, event: str, rendition: str) -> dict[str, bytes]:
        d = self._dir(event, rendition)
        found = dict(self._inits.get((event, rendition), {}))
        if d.is_dir():
            for p in d.glob("init*.mp4"):
                found.setdefault(p.name, p.read_bytes())
        self._inits[(event, rendition)] = found
        return dict(found)

    def renditions(self, event: str) -> list[str]:
        """Renditions that have anything stored for `event` (on disk)."""
        d = self.root / event
        return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []

    async def put_event_meta(self, event: str, name: str, data: bytes) -> None:
        path = self._meta_path(event, name)
        try:
            await asyncio.to_thread(self._write_durably, path, data)
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc.strerror}") from exc

    def event_meta(self, event: str, name: str) -> bytes | None:
        path = self._meta_path(event, name)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from exc

    def _meta_path(self, event: str, name: str) -> Path:
        if "/" in name or name.startswith("."):
            raise StoreError(f"bad per-event document name {name!r}")
        return self.root / event / name

    def forget(self, event: str, rendition: str, msns: list[int]) -> None:
        mem = self._memory.get((event, rendition))
        if not mem:
            return
        gone = set(msns)
        for name in [n for n in mem if int(n.split(".", 1)[0]) in gone]:
            del mem[name]

    async def delete(self, event: str, rendition: str, msns: list[int]) -> None:
        """Delete segments (retention). Their index lines stay; `records()` skips a line whose
        file is gone, so a restart never lists a deleted segment."""
        self.forget(event, rendition, msns)
        d = self._dir(event, rendition)

        def unlink() -> None:
            for msn in msns:
                (d / f"{msn}.m4s").unlink(missing_ok=True)

        try:
            await asyncio.to_thread(unlink)
        except OSError as exc:
            raise StoreError(
                f"cannot delete segments of {event}/{rendition}: {exc.strerror}"
            ) from exc
