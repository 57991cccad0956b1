"""Embedded time-series store for QoE windows: SQLite, three resolutions, retention by age.

Every closed 1 s window is written at 1 s resolution and merged into its 10 s and 1 min rows
as it arrives (a row per resolution, bucket start and series; the value is the mergeable
:class:`QoeAggregate` as JSON), so a query at any step reads one table. Retention (defaults):
1 s rows for the last hour, 10 s rows for the event (a day), 1 min rows for 30 days.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mainevent.control.telemetry.aggregate import ClosedWindow
from mainevent.control.telemetry.model import DIMENSIONS, Dims, QoeAggregate, QoeSeries

__all__ = ["RESOLUTIONS", "Retention", "TelemetryStore"]

RESOLUTIONS = (1, 10, 60)
"""Stored resolutions in seconds."""


@dataclass(frozen=True, slots=True)
class Retention:
    """How long rows of each resolution are kept, in seconds.

    ``event_s`` is a fixed age, not the event's end: the collector knows an event by its
    segment grid only (``EventTiming``), not when it ends, so "10 s rows for the event" means
    for a day after each row (longer than any event we run); tie it to the event's end once
    the collector learns it.
    """

    fine_s: float = 3600.0
    event_s: float = 86_400.0
    archive_s: float = 30 * 86_400.0

    def of(self, resolution: int) -> float:
        return {1: self.fine_s, 10: self.event_s, 60: self.archive_s}[resolution]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS qoe (
    res INTEGER NOT NULL,
    t INTEGER NOT NULL,
    event TEXT NOT NULL, region TEXT NOT NULL, cdn TEXT NOT NULL,
    isp TEXT NOT NULL, device TEXT NOT NULL,
    agg TEXT NOT NULL,
    PRIMARY KEY (res, event, t, region, cdn, isp, device)
) WITHOUT ROWID;
"""


class TelemetryStore:
    """SQLite file (or ``:memory:``); one connection, used from one thread."""

    def __init__(self, path: Path | str, retention: Retention | None = None) -> None:
        if isinstance(path, Path):
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self.retention = retention or Retention()

    def close(self) -> None:
        self._db.close()

    def write(self, windows: Sequence[ClosedWindow], *, merge: bool = False) -> None:
        """Store closed 1 s windows and fold them into their 10 s and 1 min rows; with
        ``merge``, a 1 s row already stored for the same second and series is added to (windows
        of several stream aggregators), not replaced."""
        if not windows:
            return
        db = self._db
        db.execute("BEGIN")
        try:
            for res in RESOLUTIONS:
                merged: dict[tuple[int, Dims], QoeAggregate] = {}
                for w in windows:
                    key = (w.start - w.start % res, w.dims)
                    acc = merged.get(key)
                    if acc is None:
                        merged[key] = acc = QoeAggregate()
                    acc.merge(w.agg)
                if res > 1 or merge:
                    self._fold_existing(res, merged)
                db.executemany(
                    "INSERT OR REPLACE INTO qoe VALUES (?,?,?,?,?,?,?,?)",
                    [
                        (res, t, d.event, d.region, d.cdn, d.isp, d.device, json.dumps(a.to_json()))
                        for (t, d), a in merged.items()
                    ],
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _fold_existing(self, res: int, merged: dict[tuple[int, Dims], QoeAggregate]) -> None:
        for (t, d), acc in merged.items():
            row = self._db.execute(
                "SELECT agg FROM qoe WHERE res=? AND event=? AND t=? AND region=? AND cdn=?"
                " AND isp=? AND device=?",
                (res, d.event, t, d.region, d.cdn, d.isp, d.device),
            ).fetchone()
            if row is not None:
                acc.merge(QoeAggregate.from_json(json.loads(row[0])))

    def expire(self, now: float) -> int:
        """Delete rows past their resolution's retention; returns how many."""
        n = 0
        for res in RESOLUTIONS:
            cur = self._db.execute(
                "DELETE FROM qoe WHERE res=? AND t < ?", (res, int(now - self.retention.of(res)))
            )
            n += cur.rowcount
        return n

    def resolution_for(self, start: float, step_s: float, now: float) -> int:
        """The coarsest stored resolution that divides ``step_s`` and still covers ``start``."""
        best = None
        for res in RESOLUTIONS:
            if step_s % res == 0 and start >= now - self.retention.of(res):
                best = res
        if best is None:
            # Older than the fine rows keep: the finest resolution that still has them.
            best = next((r for r in RESOLUTIONS if start >= now - self.retention.of(r)), 60)
        return best

    def step_for(self, start: float, step_s: int, now: float) -> tuple[int, int]:
        """The resolution a query reads and the step it answers: ``step_s`` rounded up to a
        whole number of rows of that resolution (a point cannot be finer than its rows: 10 s
        rows under a 1 s step would count each row's session-seconds and attempts as one
        second's)."""
        res = self.resolution_for(start, step_s, now)
        return res, max(res, -(-step_s // res) * res)

    def query(
        self,
        event: str,
        by: Sequence[str],
        start: float,
        end: float,
        step_s: int,
        now: float,
        where: dict[str, str] | None = None,
        *,
        open_windows: Sequence[ClosedWindow] = (),
        partial: bool = False,
    ) -> list[QoeSeries]:
        """Series grouped by ``by`` with one point per step from ``start`` to ``end``.

        The step is ``step_s`` or, finer than or not a multiple of the stored rows, the one
        :meth:`step_for` gives (each point says its ``step_s``); steps are aligned to the rows,
        from ``start`` rounded down to the resolution. Only whole steps are answered unless
        ``partial``: then the step still in progress is too, with what it has so far,
        ``open_windows`` (the collector's windows not yet closed and stored) included.
        """
        res, step_s = self.step_for(start, step_s, now)
        first = int(start) - int(start) % res
        sql = (
            "SELECT t, region, cdn, isp, device, agg FROM qoe WHERE res=? AND event=?"
            " AND t >= ? AND t < ?"
        )
        args: list[object] = [res, event, first, int(end)]
        for k, v in (where or {}).items():
            assert k in DIMENSIONS
            sql += f" AND {k}=?"
            args.append(v)
        groups: dict[tuple[str, ...], dict[int, QoeAggregate]] = {}

        def add(t: int, dims: Dims, agg: QoeAggregate) -> None:
            bucket = t - (t - first) % step_s
            per = groups.setdefault(dims.project(by), {})
            acc = per.get(bucket)
            if acc is None:
                per[bucket] = acc = QoeAggregate()
            acc.merge(agg)

        for t, region, cdn, isp, device, agg in self._db.execute(sql, args):
            add(
                int(t),
                Dims(event, region, cdn, isp, device),
                QoeAggregate.from_json(json.loads(agg)),
            )
        if partial:
            for w in open_windows:
                d = w.dims
                if (
                    d.event == event
                    and first <= w.start < end
                    and all(getattr(d, k) == v for k, v in (where or {}).items())
                ):
                    add(w.start, d, w.agg)
        out = []
        for labels, per in sorted(groups.items()):
            points = tuple(
                per[b].figures(float(b), float(step_s))
                for b in sorted(per)
                if b + step_s <= end or (partial and b < end)
            )
            out.append(QoeSeries(dict(zip(by, labels, strict=True)), points))
        return out

    def series_keys(self, event: str, since: float) -> Iterable[Dims]:
        for region, cdn, isp, device in self._db.execute(
            "SELECT DISTINCT region, cdn, isp, device FROM qoe WHERE res=1 AND event=? AND t>=?",
            (event, int(since)),
        ):
            yield Dims(event, region, cdn, isp, device)
