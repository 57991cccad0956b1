"""Telemetry collector throughput and freshness.

1. Ingest + aggregate, one core, in process: CMCD v2 event-mode bodies as hls.js writes them
   (batches of --batch records from many sessions: heartbeats, bitrate changes, response
   records), through the collector's full path (decode → validate → dedupe/admission →
   aggregate), and edge access batches the same way. Reference in the same run: `json.loads` of
   the same records as JSON (a C-speed parse of the same bytes), so the ratio survives a
   loaded machine better than the absolute figure.
2. Freshness over HTTP: a real collector (uvicorn, loopback) is fed at --rate reports/s by a
   second process; probe sessions are posted every 0.25 s and the time from sending to the
   query API (`/v1/telemetry/qoe`) counting them is measured; p50/p95 printed.

    .venv/bin/python bench/telemetry.py [--seconds 10] [--batch 1000] [--rate 100000]
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

import httpx

from mainevent.common.telemetry import AccessRecord, encode_access_batch
from mainevent.config import TelemetrySettings
from mainevent.control.telemetry.cmcd import encode_dict
from mainevent.control.telemetry.collector import Collector
from mainevent.control.telemetry.events import EventTiming

EVENT = "bench"


def cmcd_bodies(n_bodies: int, batch: int, sessions: int, t0_ms: int) -> list[bytes]:
    """Bodies of `batch` records each, round-robin over `sessions`, with increasing sn."""
    rng = random.Random(1)
    sn = [0] * sessions
    bodies = []
    for _ in range(n_bodies):
        lines = []
        for _ in range(batch):
            s = rng.randrange(sessions)
            sn[s] += 1
            kind = rng.random()
            rec: dict[str, object] = {
                "sid": f"5f3c2a1e-{s:08d}",
                "cid": EVENT,
                "sn": sn[s],
                "ts": t0_ms + sn[s] * 1000,
                "sta": "p",
                "sf": "h",
                "st": "l",
                "mtp": (12300,),
                "bl": (8200,),
                "v": 2,
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
                    br=(2500,),
                )
            else:
                rec.update(e="bc", br=(2500,))
            lines.append(encode_dict(rec))  # type: ignore[arg-type]
        bodies.append(("\n".join(lines) + "\n").encode())
    return bodies


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


def throughput(seconds: float, batch: int) -> None:
    bodies = cmcd_bodies(60, batch, 5000, int(time.time() * 1000))
    collector = Collector(settings(), {EVENT: EventTiming(2000, 500)})
    # Reference: the same records as JSON objects, parsed by the C json module.
    ref_docs = [
        json.dumps(
            [
                dict(kv.split("=", 1) for kv in line.split(",") if "=" in kv)
                for line in b.decode().split("\n")
                if line
            ]
        ).encode()
        for b in bodies[:10]
    ]
    n = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    i = 0
    while time.perf_counter() - t0 < seconds:
        if i and i % len(bodies) == 0:
            # The bodies repeat: a fresh collector, so every record is new (not a cheap duplicate).
            collector = Collector(settings(), {EVENT: EventTiming(2000, 500)})
        out = collector.cmcd_report(
            EVENT,
            bodies[i % len(bodies)],
            "application/cmcd",
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
            collector.tick(time.time())
    cpu = time.process_time() - c0
    cmcd_rate = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    m = 0
    while time.perf_counter() - t0 < min(seconds, 3):
        for d in ref_docs:
            m += len(json.loads(d))
    ref_rate = m / (time.perf_counter() - t0)
    c1 = time.process_time()
    m2 = 0
    for _ in range(20):
        for d in ref_docs:
            m2 += len(json.loads(d))
    ref_cpu_rate = m2 / (time.process_time() - c1)
    # Edge access batches.
    recs = [
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
        )
        for i in range(batch)
    ]
    body = encode_access_batch(recs)
    t0 = time.perf_counter()
    a = 0
    while time.perf_counter() - t0 < min(seconds, 5):
        out = collector.access_batch(body, "application/json", time.time())
        a += out.accepted
    access_rate = a / (time.perf_counter() - t0)
    print(
        f"CMCD v2 event records ingested+aggregated, 1 core: {cmcd_rate:,.0f}/s wall "
        f"(batches of {batch}; x{cmcd_rate / ref_rate:.2f} of json.loads of the same records "
        f"= {ref_rate:,.0f}/s)"
    )
    print(
        f"  per CPU-second of this process (less sensitive to a shared machine): {n / cpu:,.0f}/s "
        f"(json.loads reference {ref_cpu_rate:,.0f}/s, x{n / cpu / ref_cpu_rate:.2f})"
    )
    print(f"edge access records ingested+aggregated, 1 core:   {access_rate:,.0f}/s")


def _serve(port_q: multiprocessing.Queue[int], db: str) -> None:
    from mainevent.control.telemetry.server import TelemetryServer, build_service

    s = settings(db_path=Path(db))
    server = TelemetryServer(
        build_service(s, {EVENT: EventTiming(2000, 500), "probe": EventTiming(2000, 0)})
    )
    server.bind()
    port_q.put(int(server.url.rsplit(":", 1)[1]))
    asyncio.run(server.serve())


def _load(url: str, rate: float, seconds: float, batch: int) -> None:
    bodies = cmcd_bodies(200, batch, 20000, int(time.time() * 1000))
    interval = batch / rate
    with httpx.Client(timeout=10) as c:
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < seconds:
            c.post(
                f"{url}/v1/cmcd/{EVENT}",
                content=bodies[i % len(bodies)],
                headers={"content-type": "application/cmcd"},
            )
            i += 1
            delay = t0 + i * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        print(f"load: {i * batch / (time.monotonic() - t0):,.0f} reports/s offered", flush=True)


def freshness(seconds: float, rate: float, batch: int) -> None:
    ctx = multiprocessing.get_context("spawn")
    q: multiprocessing.Queue[int] = ctx.Queue()
    with tempfile.TemporaryDirectory() as d:
        srv = ctx.Process(target=_serve, args=(q, f"{d}/t.db"), daemon=True)
        srv.start()
        url = f"http://127.0.0.1:{q.get(timeout=30)}"
        load = ctx.Process(target=_load, args=(url, rate, seconds, batch), daemon=True)
        load.start()
        lags: list[float] = []
        start = time.time()
        with httpx.Client(timeout=10) as c:
            k = 0
            while time.time() - start < seconds - 2:
                k += 1
                sent = time.time()
                line = encode_dict(
                    {
                        "e": "t",
                        "sid": f"probe-{k}",
                        "sn": 0,
                        "ts": int(sent * 1000),
                        "sta": "s",
                        "v": 2,
                    }
                )
                c.post(
                    f"{url}/v1/cmcd/probe",
                    content=(line + "\n").encode(),
                    headers={"content-type": "application/cmcd"},
                )
                while True:
                    r = c.get(
                        f"{url}/v1/telemetry/qoe",
                        params={
                            "event": "probe",
                            "from": start - 2,
                            "to": time.time() + 1,
                            "step": 1,
                        },
                    ).json()
                    seen = sum(p["play_attempts"] for s in r["series"] for p in s["points"])
                    if seen >= k:
                        lags.append(time.time() - sent)
                        break
                    if time.time() - sent > 10:
                        lags.append(float("inf"))
                        break
                    time.sleep(0.02)
                time.sleep(max(0.0, 0.25 - (time.time() - sent)))
        load.join(timeout=seconds + 30)
        srv.terminate()
        srv.join(timeout=10)
    lags.sort()
    p95 = lags[min(len(lags) - 1, int(0.95 * len(lags)))]
    print(
        f"freshness (sent → counted by /v1/telemetry/qoe) at {rate:,.0f} reports/s offered: "
        f"p50 {statistics.median(lags):.2f} s, p95 {p95:.2f} s, max {lags[-1]:.2f} s "
        f"over {len(lags)} probes"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=100_000)
    ap.add_argument("--only", choices=["throughput", "freshness"])
    args = ap.parse_args()
    print(f"load average: {open('/proc/loadavg').read().strip()}  (cpus: {os.cpu_count()})")
    if args.only != "freshness":
        throughput(args.seconds, args.batch)
    if args.only != "throughput":
        freshness(args.seconds, args.rate, args.batch)
    print(f"load average: {open('/proc/loadavg').read().strip()}", file=sys.stdout)


if __name__ == "__main__":
    main()
