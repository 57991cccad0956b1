"""Held LL-HLS blocking playlist requests on one origin worker: release time and memory.

The origin (the real `create_app` over a `LiveEvent` in low-latency mode, fed synthetic
media) runs under uvicorn in a subprocess, one worker. This process opens N raw TCP
connections with asyncio, each sending `GET …/index.m3u8?_HLS_msn=M&_HLS_part=0`, waits until
the origin reports all N held, then asks the origin to publish part M.0 and measures, for each
connection, when its whole response has arrived. Printed per N:

- release: time from the part's publication (origin's monotonic clock, which on Linux is the
  same clock in both processes) to the last / median response completed;
- origin done: publication to the origin handing its last response to the transport (the
  origin's own share; the rest is this load generator reading 10,000 sockets on shared cores);
- memory: origin RSS growth while the N requests are held, divided by N.

    .venv/bin/python bench/blocking.py [--n 1000,5000,10000] [--no-gc-tune] [--loop uvloop]

(`mainevent up` runs its origin on the default asyncio loop; `--loop uvloop` shows the gain.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time

ORIGIN_CODE = r"""
import asyncio, gc, json, sys, time
from pathlib import Path
import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from mainevent.media.cmaf import InitSection, Part, Segment, TrackInfo
from mainevent.media.origin import tune_gc
from mainevent.media.origin.app import create_app
from mainevent.media.origin.live import LiveEvent, RenditionSpec
from mainevent.media.store import LocalSegmentStore

TS = 90_000
BASE = 1_800_000_000
port, data_dir, gc_tune, loop = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1", sys.argv[4]
ev = LiveEvent(
    event_id="bench",
    renditions=[RenditionSpec("v360", "video", 600, 640, 360), RenditionSpec("a128", "audio", 128)],
    store=LocalSegmentStore(Path(data_dir)), segment_duration_ms=2000, window_segments=6, fps=30,
    latency="low", max_held_requests=50_000,
)
state = {"msn": BASE, "published_at": 0.0, "last_done": 0.0}

def part(msn, k, ts=TS):
    d = 2 * ts // 4
    return Part(msn, k, msn * 2 * ts + k * d, d, k == 0, bytes([k]) * 20_000)

async def feed():
    await ev.on_init("v360", InitSection(b"V", TrackInfo(1, "video", TS, "avc1.64001e", 640, 360)))
    await ev.on_init("a128", InitSection(b"A", TrackInfo(1, "audio", 48000, "mp4a.40.2", sample_rate=48000, channels=2)))
    for msn in range(BASE, BASE + 14):
        for rid, ts in (("v360", TS), ("a128", 48000)):
            parts = tuple(part(msn, k, ts) for k in range(4))
            for p in parts:
                ev.on_part(rid, p)
            await ev.on_segment(rid, Segment(msn, msn * 2 * ts, 2 * ts, ts, parts, b"".join(p.data for p in parts)))
    state["msn"] = BASE + 14
    ev.on_part("v360", part(state["msn"], 0))

import cProfile, os, pstats
profiler = cProfile.Profile() if os.environ.get("BENCH_PROFILE") else None

async def publish(request: Request):
    if profiler is not None:
        profiler.enable()
    ev.on_part("v360", part(state["msn"], 0))
    state["published_at"] = time.monotonic()
    return JSONResponse({"published_at": state["published_at"]})

async def advance(request: Request):
    # Complete the segment whose part 0 the last run published, so the next run waits anew.
    msn = state["msn"]
    for rid, ts in (("v360", TS), ("a128", 48000)):
        parts = tuple(part(msn, k, ts) for k in range(4))
        first = 1 if rid == "v360" else 0
        for p in parts[first:]:
            ev.on_part(rid, p)
        await ev.on_segment(rid, Segment(msn, msn * 2 * ts, 2 * ts, ts, parts, b"".join(p.data for p in parts)))
    state["msn"] = msn + 1
    gc.collect()
    return JSONResponse({"next_msn": state["msn"]})

def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

async def info(request: Request):
    if profiler is not None and ev.waiters.held == 0 and state["last_done"] > state["published_at"] > 0:
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    return JSONResponse({"held": ev.waiters.held, "last_done": state["last_done"], "rss_kb": rss_kb(), "next_msn": state["msn"],
                         "gc_counts": gc.get_count()})

async def main():
    await feed()
    app = create_app({"bench": ev})
    app.router.routes[:0] = [Route("/bench/publish", publish, methods=["POST"]), Route("/bench/info", info),
                             Route("/bench/advance", advance, methods=["POST"])]
    if gc_tune:
        tune_gc()

    async def timed(scope, receive, send):
        # When the origin has handed each response to the transport (its own share of the time).
        await app(scope, receive, send)
        if scope.get("path", "").endswith("index.m3u8"):
            state["last_done"] = time.monotonic()

    config = uvicorn.Config(timed, host="127.0.0.1", port=port, log_level="warning",
                            access_log=False, lifespan="off", backlog=20_000)
    print(json.dumps({"ready": True}), flush=True)
    await uvicorn.Server(config).serve()

if loop == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def http_json(port: int, method: str, path: str) -> dict[str, object]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: o\r\nContent-Length: 0\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    body = await reader.readexactly(length)
    writer.close()
    result: dict[str, object] = json.loads(body)
    return result


async def held_client(
    port: int,
    request: bytes,
    opened: asyncio.Semaphore,
    done: list[float],
    status: list[int],
    writers: list[asyncio.StreamWriter],
) -> None:
    async with opened:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    done.append(time.monotonic())
    status.append(int(head.split(b" ", 2)[1]))
    writers.append(writer)  # closed after the measurement, as a player keeps its connection


async def run_one(port: int, n: int) -> dict[str, float]:
    await http_json(port, "POST", "/bench/advance")
    info = await http_json(port, "GET", "/bench/info")
    msn = info["next_msn"]
    rss0 = int(str(info["rss_kb"]))
    request = (
        f"GET /live/bench/v360/index.m3u8?_HLS_msn={msn}&_HLS_part=0 HTTP/1.1\r\nHost: o\r\n\r\n"
    ).encode()
    done: list[float] = []
    status: list[int] = []
    writers: list[asyncio.StreamWriter] = []
    opened = asyncio.Semaphore(200)  # connect in waves, as players arrive
    tasks = [
        asyncio.ensure_future(held_client(port, request, opened, done, status, writers))
        for _ in range(n)
    ]
    deadline = time.monotonic() + 60
    while True:
        info = await http_json(port, "GET", "/bench/info")
        if info["held"] == n:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"only {info['held']} of {n} requests held after 60 s")
        await asyncio.sleep(0.05)
    rss1 = int(str(info["rss_kb"]))
    pub = await http_json(port, "POST", "/bench/publish")
    published_at = float(str(pub["published_at"]))
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert set(status) == {200}, set(status)
    info = await http_json(port, "GET", "/bench/info")
    origin_ms = (float(str(info["last_done"])) - published_at) * 1000
    for w in writers:
        w.close()
    after = sorted(t - published_at for t in done)
    return {
        "n": n,
        "last_ms": after[-1] * 1000,
        "p50_ms": statistics.median(after) * 1000,
        "first_ms": after[0] * 1000,
        "kb_per_held": (rss1 - rss0) / n,
        "origin_ms": origin_ms,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="1000,5000,10000")
    ap.add_argument("--no-gc-tune", action="store_true", help="leave the origin's GC untouched")
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = ap.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ns = [int(x) for x in args.n.split(",")]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                ORIGIN_CODE,
                str(port),
                tmp,
                "0" if args.no_gc_tune else "1",
                args.loop,
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard)),
        )
        try:
            assert proc.stdout is not None
            proc.stdout.readline()
            time.sleep(0.5)
            print(
                f"origin: uvicorn (httptools) + Starlette app, playlists answered before routing, "
                f"1 worker, {args.loop} loop, LL mode; GC "
                f"{'untouched' if args.no_gc_tune else 'frozen after startup + thresholds raised'}"
            )
            print(
                f"{'held':>7} {'first':>9} {'median':>9} {'last':>9} {'origin done':>12} "
                f"{'memory/held':>12}"
            )
            for n in ns:
                r = asyncio.run(run_one(port, n))
                print(
                    f"{n:>7} {r['first_ms']:>7.1f}ms {r['p50_ms']:>7.1f}ms "
                    f"{r['last_ms']:>7.1f}ms {r['origin_ms']:>10.1f}ms "
                    f"{r['kb_per_held']:>9.1f} KB"
                )
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
