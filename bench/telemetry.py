"""Telemetry collector throughput and freshness.

1. In process, one core: player records through the collector's whole path (decode →
   validate → dedupe/admission → aggregate), as JSON batches of --batch records from many
   sessions (``POST /v1/cmcd/{event}/batch``, the fast path) and as the CMCD v2 text bodies
   hls.js writes (``/v1/cmcd/{event}``); then edge access batches. Reference in the same run:
   ``json.loads`` of the same batch bodies (a C parse of the same bytes, nothing else), so the
   ratio survives a loaded machine better than the absolute figure. Rates are per CPU-second
   of this process (what "per core" means on a shared machine) and per wall second.
2. Over HTTP: a real collector (uvicorn, loopback) in its own process takes batch bodies from
   a second process (--connections, as fast as it answers), once with every POST on the
   FastAPI route (``lean_ingest=false``) and once through the lean ingest front (the default);
   records per CPU-second of the collector process (user + system, so the socket work counts),
   and, as the reference, the same bodies posted straight to a collector in this process. The
   loader's 20,000 sessions go on from round to round (sequence numbers move on); ``--churn``
   makes them new sessions every 50 bodies instead (the loader before 2026-12-07, session 4).
3. Freshness: the collector is fed at --rate records/s (batches) by a second process; a probe
   session is posted every 0.25 s (CMCD text, as a player does) and the time from sending to
   the query API counting it is measured, for whole seconds (the default query) and for a
   live query of the second in progress (``partial=true``); p50/p95 printed.

    .venv/bin/python bench/telemetry.py [--seconds 10] [--batch 1000] [--rate 100000]\
        [--only throughput|http|freshness] [--connections 2] [--churn]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec

from mainevent.common.gc_tuning import tune_gc
from mainevent.common.telemetry import AccessRecord, encode_access_batch
from mainevent.config import TelemetrySettings
from mainevent.control.telemetry.batch import encode_report_batch
from mainevent.control.telemetry.cmcd import encode_dict
from mainevent.control.telemetry.collector import Collector
from mainevent.control.telemetry.events import EventTiming, PlayerReport

EVENT = "bench"
TIMING = {EVENT: EventTiming(2000, 500)}
_CLK = os.sysconf("SC_CLK_TCK")


def records(n_bodies: int, batch: int, sessions: int, t0_ms: int) -> list[list[dict[str, Any]]]:
    """Batches of `batch` records, round-robin over `sessions`, with increasing sn: 60 %
    heartbeats, 35 % response records of media parts, 5 % bitrate changes."""
    rng = random.Random(1)
    sn = [0] * sessions
    out = []
    for _ in range(n_bodies):
        recs = []
        for _ in range(batch):
            s = rng.randrange(sessions)
            sn[s] += 1
            kind = rng.random()
            rec: dict[str, Any] = {
                "sid": f"5f3c2a1e-{s:08d}",
                "cid": EVENT,
                "sn": sn[s],
                "ts": t0_ms + sn[s] * 1000,
                "sta": "p",
                "bl": 8200,
            }
            if kind < 0.6:
                rec["e"] = "t"
            elif kind < 0.95:
                rec.update(
                    e="rr",
                    url=f"http://127.0.0.1:9001/live/{EVENT}/v720/{900000000 + sn[s]}.m4s",
                    rc=200,
                    ttfb=12,
                    ttlb=80,
                    br=2500,
                )
            else:
                rec.update(e="bc", br=2500)
            recs.append(rec)
        out.append(recs)
    return out


def text_body(recs: list[dict[str, Any]]) -> bytes:
    """The same records as hls.js writes them (CMCD v2 text, inner lists, persistent keys)."""
    lines = []
    for r in recs:
        d = {
            k: (v,) if k in ("bl", "br") else v
            for k, v in {**r, "v": 2, "sf": "h", "st": "l", "mtp": 12300}.items()
        }
        lines.append(encode_dict(d))
    return ("\n".join(lines) + "\n").encode()


def settings(**kw: object) -> TelemetrySettings:
    kw.setdefault("db_path", Path(":memory:"))
    return TelemetrySettings(
        capacity_per_s=1e9,
        keep_capacity_per_s=1e9,
        session_rate=1e9,
        session_burst=1e9,
        max_records=100_000,
        max_body_bytes=64 * 1024 * 1024,
        **kw,  # type: ignore[arg-type]
    )


def _ingest(bodies: list[bytes], seconds: float, batch: bool) -> tuple[float, float]:
    """Records/s (per CPU-second, per wall second) through a collector, `bodies` in a loop."""
    post = "cmcd_batch" if batch else "cmcd_report"
    ctype = "application/json" if batch else "application/cmcd"
    n = i = 0
    t0, c0 = time.perf_counter(), time.process_time()
    collector = Collector(settings(), TIMING)
    while time.perf_counter() - t0 < seconds:
        if i and i % len(bodies) == 0:
            # The bodies repeat: a fresh collector, so every record is new (not a cheap duplicate).
            collector = Collector(settings(), TIMING)
        out = getattr(collector, post)(
            EVENT,
            bodies[i % len(bodies)],
            ctype,
            client="127.0.0.2",
            user_agent="Mozilla/5.0 Chrome/156",
            region_header=None,
            now=time.time(),
        )
        assert out.status == 204, out.message
        assert out.duplicates == 0
        n += out.accepted
        i += 1
        if i % 20 == 0:
            collector.tick(time.time())  # the timer closes windows as the seconds end
    return n / (time.process_time() - c0), n / (time.perf_counter() - t0)


def _per_cpu(fn: Any, bodies: list[bytes], per_body: int, seconds: float) -> float:
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        for b in bodies:
            fn(b)
            n += per_body
    return n / (time.process_time() - c0)


def throughput(seconds: float, batch: int) -> None:
    recs = records(60, batch, 5000, int(time.time() * 1000))
    batches = [encode_report_batch(r) for r in recs]
    texts = [text_body(r) for r in recs]
    ref = _per_cpu(json.loads, batches, batch, min(seconds, 3))
    bare = msgspec.json.Decoder(dict[str, list[PlayerReport]]).decode
    decode = _per_cpu(bare, batches, batch, min(seconds, 3))
    fast_cpu, fast_wall = _ingest(batches, seconds, batch=True)
    text_cpu, text_wall = _ingest(texts, min(seconds, 5), batch=False)
    row = "  {:<62} {:>12,.0f} {:>10,.0f} {:>8.2f}"
    print(f"in process, one core, batches of {batch} player records from 5,000 sessions:")
    print(f"  {'path':<62} {'/CPU-second':>12} {'/wall s':>10} {'÷ ref':>8}")
    print(row.format("reference: json.loads of the same batch bodies", ref, float("nan"), 1.0))
    print(row.format("msgspec decode alone (→ PlayerReport)", decode, float("nan"), decode / ref))
    print(
        row.format(
            "JSON batch: decode→validate→dedupe/admission→aggregate",
            fast_cpu,
            fast_wall,
            fast_cpu / ref,
        )
    )
    print(
        row.format(
            "CMCD v2 text (hls.js): decode→validate→admission→aggregate",
            text_cpu,
            text_wall,
            text_cpu / ref,
        )
    )
    acc = [
        AccessRecord(
            time.time(),
            "cdn-a",
            f"/live/{EVENT}/v720/{i}.m4s",
            200,
            400_000,
            3.5,
            "HIT",
            "127.0.0.2",
            "eu",
            "Mozilla/5.0",
            None,
            40.0,
        )
        for i in range(batch)
    ]
    body = encode_access_batch(acc)
    collector = Collector(settings(), TIMING)
    access = _per_cpu(
        lambda b: collector.access_batch(b, "application/json", time.time()),
        [body],
        batch,
        min(seconds, 3),
    )
    print(f"  edge access batches (JSON): decode→validate→aggregate {access:>21,.0f}")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK


def _serve(port_q: multiprocessing.Queue[int], db: str, lean: bool) -> None:
    from mainevent.control.telemetry.server import TelemetryServer, build_service

    s = settings(db_path=Path(db), lean_ingest=lean)
    server = TelemetryServer(build_service(s, {**TIMING, "probe": EventTiming(2000, 0)}))
    server.bind()
    tune_gc()  # as `mainevent telemetry serve` and `mainevent up` do
    port_q.put(int(server.url.rsplit(":", 1)[1]))
    asyncio.run(server.serve())


def _rounds(recs: list[list[dict[str, Any]]], rnd: int, churn: bool) -> list[bytes]:
    """The bodies again for round `rnd`, nothing of it a duplicate: the same sessions going on
    (sequence numbers and timestamps moved past the last round's), or with `churn` new
    sessions each round (every session lives ~2.5 records)."""
    if churn:
        for batch in recs:
            for r in batch:
                r["sid"] = f"{rnd:04d}{r['sid'][4:]}"
        return [encode_report_batch(b) for b in recs]
    span = (
        1
        + max(r["sn"] for batch in recs for r in batch)
        - min(r["sn"] for batch in recs for r in batch)
    )
    shift = rnd * span
    return [
        encode_report_batch(
            [{**r, "sn": r["sn"] + shift, "ts": r["ts"] + 1000 * shift} for r in batch]
        )
        for batch in recs
    ]


def _loader_records(batch: int) -> list[list[dict[str, Any]]]:
    """The HTTP loader's records: 50 bodies over 20,000 sessions."""
    return records(50, batch, 20_000, int(time.time() * 1000))


def _load(
    url: str, rate: float | None, seconds: float, batch: int, churn: bool, conns: int, out: Any
) -> None:
    """Post batch bodies at `rate` records/s (None: as fast as the collector answers) on
    `conns` connections; puts (records accepted, seconds) on `out`."""
    recs = _loader_records(batch)
    rounds = {0: _rounds(recs, 0, churn)}
    sent = 0
    nxt = 0

    async def sender(c: httpx.AsyncClient, t0: float) -> None:
        nonlocal sent, nxt
        while time.monotonic() - t0 < seconds:
            i, nxt = nxt, nxt + 1
            rnd, j = divmod(i, len(recs))
            if rnd not in rounds:
                rounds[rnd] = _rounds(recs, rnd, churn)
                rounds.pop(rnd - 2, None)
            r = await c.post(
                f"{url}/v1/cmcd/{EVENT}/batch",
                content=rounds[rnd][j],
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 204, r.text
            sent += int(r.headers["x-accepted"])
            if rate:
                delay = t0 + (i + 1) * batch / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)

    async def run() -> None:
        limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)
        async with httpx.AsyncClient(timeout=30, limits=limits) as c:
            t0 = time.monotonic()
            await asyncio.gather(*(sender(c, t0) for _ in range(conns)))
            out.put((sent, time.monotonic() - t0))

    asyncio.run(run())


def _loader_in_process(seconds: float, batch: int, churn: bool) -> float:
    """Records per CPU-second of the loader's bodies posted straight to one collector (what
    the HTTP path costs on top of, same workload); encoding the rounds is not counted."""
    recs = _loader_records(batch)
    collector = Collector(settings(), TIMING)
    n, cpu, rnd = 0, 0.0, 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        bodies = _rounds(recs, rnd, churn)
        rnd += 1
        c0 = time.process_time()
        for i, body in enumerate(bodies):
            out = collector.cmcd_batch(
                EVENT,
                body,
                "application/json",
                client="127.0.0.1",
                user_agent="python-httpx/0.28",
                region_header=None,
                now=time.time(),
            )
            assert out.status == 204, out.message
            assert out.duplicates == 0
            n += out.accepted
            if i % 10 == 0:
                collector.tick(time.time())
        cpu += time.process_time() - c0
    return n / cpu


def _collector(lean: bool = True) -> tuple[Any, str, tempfile.TemporaryDirectory[str]]:
    ctx = multiprocessing.get_context("spawn")
    q: multiprocessing.Queue[int] = ctx.Queue()
    d = tempfile.TemporaryDirectory()
    srv = ctx.Process(target=_serve, args=(q, f"{d.name}/t.db", lean), daemon=True)
    srv.start()
    return srv, f"http://127.0.0.1:{q.get(timeout=60)}", d


def _http_run(
    seconds: float, batch: int, lean: bool, churn: bool, conns: int
) -> tuple[float, float, float]:
    """(records/s wall, records per collector CPU-second, share of a core) of one run."""
    ctx = multiprocessing.get_context("spawn")
    srv, url, d = _collector(lean)
    try:
        out: multiprocessing.Queue[tuple[int, float]] = ctx.Queue()
        load = ctx.Process(
            target=_load, args=(url, None, seconds, batch, churn, conns, out), daemon=True
        )
        c0 = _cpu_s(srv.pid or 0)
        load.start()
        sent, elapsed = out.get(timeout=seconds + 120)
        # The collector idles while the loader starts: its CPU over the whole run is its
        # CPU for the records sent.
        cpu = _cpu_s(srv.pid or 0) - c0
        load.join(timeout=30)
    finally:
        srv.terminate()
        srv.join(timeout=10)
        d.cleanup()
    return sent / elapsed, sent / cpu, cpu / elapsed


def over_http(seconds: float, batch: int, churn: bool, conns: int) -> None:
    workload = "new sessions every 50 bodies" if churn else "20,000 sessions going on"
    ref = _loader_in_process(min(seconds, 5), batch, churn)
    route = _http_run(seconds, batch, lean=False, churn=churn, conns=conns)
    lean = _http_run(seconds, batch, lean=True, churn=churn, conns=conns)
    print(
        f"over HTTP on loopback, batches of {batch} from another process on {conns} "
        f"connection(s) ({workload}):"
    )
    row = "  {:<58} {:>10} {:>12} {:>7} {:>8}"
    print(row.format("path", "/wall s", "/CPU-second", "core", "÷ ref"))
    print(row.format("reference: same bodies in process (no HTTP)", "", f"{ref:,.0f}", "", "1.00"))
    for name, (wall, per_cpu, core) in (
        ("FastAPI route (lean_ingest=false)", route),
        ("lean ingest front (the default)", lean),
    ):
        print(
            row.format(
                name, f"{wall:,.0f}", f"{per_cpu:,.0f}", f"{core:.0%}", f"{per_cpu / ref:.2f}"
            )
        )


def _probe(c: httpx.Client, url: str, k: int, start: float, partial: bool) -> float:
    sent = time.time()
    line = encode_dict(
        {"e": "t", "sid": f"probe-{k}", "sn": 0, "ts": int(sent * 1000), "sta": "s", "v": 2}
    )
    # `cdn=`: a play request names no media URL, and the attempt is counted under the CDN of
    # the session's first media response (hls.js); the report URL's default stands in for it.
    c.post(
        f"{url}/v1/cmcd/probe?cdn=cdn-a",
        content=(line + "\n").encode(),
        headers={"content-type": "application/cmcd"},
    )
    while True:
        now = time.time()
        params: dict[str, Any] = {"event": "probe", "from": start - 2, "to": now, "step": 1}
        if partial:
            params.update(partial="true", to=now + 1)
        r = c.get(f"{url}/v1/telemetry/qoe", params=params).json()
        if sum(p["play_attempts"] for s in r["series"] for p in s["points"]) >= k:
            return time.time() - sent
        if time.time() - sent > 10:
            return float("inf")
        time.sleep(0.02)


def freshness(seconds: float, rate: float, batch: int, conns: int) -> None:
    ctx = multiprocessing.get_context("spawn")
    srv, url, d = _collector()
    try:
        out: multiprocessing.Queue[tuple[int, float]] = ctx.Queue()
        load = ctx.Process(
            target=_load, args=(url, rate, seconds, batch, False, conns, out), daemon=True
        )
        load.start()
        lags: dict[bool, list[float]] = {False: [], True: []}
        start = time.time()
        with httpx.Client(timeout=10) as c:
            k = 0
            while time.time() - start < seconds - 2:
                k += 1
                partial = k % 2 == 0
                sent = time.time()
                lags[partial].append(_probe(c, url, k, start, partial))
                time.sleep(max(0.0, 0.25 - (time.time() - sent)))
        sent, elapsed = out.get(timeout=seconds + 60)
        offered = sent / elapsed
        load.join(timeout=30)
    finally:
        srv.terminate()
        srv.join(timeout=10)
        d.cleanup()
    for partial, name in ((False, "whole seconds"), (True, "partial=true")):
        got = sorted(lags[partial])
        if not got:
            print(f"freshness ({name}): no probe in {seconds:g} s")
            continue
        p95 = got[min(len(got) - 1, int(0.95 * len(got)))]
        print(
            f"freshness (probe sent → counted by /v1/telemetry/qoe, {name}) at "
            f"{offered:,.0f} records/s offered: p50 {statistics.median(got):.2f} s, "
            f"p95 {p95:.2f} s, max {got[-1]:.2f} s over {len(got)} probes"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=100_000)
    ap.add_argument("--only", choices=["throughput", "http", "freshness"])
    ap.add_argument("--churn", action="store_true", help="over HTTP: new sessions every 50 bodies")
    ap.add_argument("--connections", type=int, default=2, help="of the HTTP loader")
    args = ap.parse_args()
    tune_gc()  # the collector's settings (its process calls it too): the references see the same
    print(f"load average: {Path('/proc/loadavg').read_text().strip()}  (cpus: {os.cpu_count()})")
    if args.only in (None, "throughput"):
        throughput(args.seconds, args.batch)
    if args.only in (None, "http"):
        over_http(args.seconds, args.batch, args.churn, args.connections)
    if args.only in (None, "freshness"):
        freshness(args.seconds, args.rate, args.batch, args.connections)
    print(f"load average: {Path('/proc/loadavg').read_text().strip()}", file=sys.stdout)


if __name__ == "__main__":
    main()
