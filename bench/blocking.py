"""Held LL-HLS blocking playlist requests on one origin worker: release time and memory.

The origin (the real `create_app` over a `LiveEvent` in low-latency mode, fed synthetic media)
runs under uvicorn in a subprocess, one worker, pinned to core 0 when `taskset` exists. This
process (pinned to core 1, uvloop, a bare asyncio protocol per connection so that the load
generator is not what is measured) opens N TCP connections, each sending
`GET …/index.m3u8?_HLS_msn=M&_HLS_part=0`, waits until the origin reports all N held, then asks
it to publish part M.0 and notes when each connection's whole response has arrived. Per N:

- release: from the call that publishes the part (origin's monotonic clock, the same clock in
  both processes on Linux) to the first / median / last response completed here;
- origin done: publication to the origin handing its last response to the kernel;
- memory: origin RSS growth while the N requests are held, divided by N.

Servers, each in its own subprocess, in the same run:

- `origin`: what `mainevent up` runs — uvicorn with the origin's protocol
  (`mainevent.media.origin.protocol`), which answers held playlist requests in place;
- `asgi`: the same app through uvicorn's stock httptools protocol and the ASGI endpoint (how the
  origin served every request before the protocol existed);
- `reference`: no HTTP framework at all — a bare asyncio protocol that holds each connection and,
  on publish, writes one pre-rendered response of the same size to every held transport. Its
  time is the floor for answering N connections from one Python process on this machine.

    .venv/bin/python bench/blocking.py [--n 1000,5000,10000] [--servers reference,asgi,origin]
                                       [--loop uvloop|asyncio] [--no-gc-tune]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import cast

import uvloop

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
from mainevent.media.origin.protocol import origin_protocol
from mainevent.media.store import LocalSegmentStore

TS = 90_000
BASE = 1_800_000_000
port, data_dir, gc_tune, loop, server = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4], sys.argv[5]
port = int(port)
ev = LiveEvent(
    event_id="bench",
    renditions=[RenditionSpec("v360", "video", 600, 640, 360), RenditionSpec("a128", "audio", 128)],
    store=LocalSegmentStore(Path(data_dir)), segment_duration_ms=2000, window_segments=6, fps=30,
    latency="low", max_held_requests=50_000,
)
state = {"msn": BASE, "published_at": 0.0, "release_returned": 0.0, "last_done": 0.0}

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
    # The part lands now; releasing its held requests is part of publishing it.
    state["published_at"] = time.monotonic()
    ev.on_part("v360", part(state["msn"], 0))
    state["release_returned"] = time.monotonic()
    if profiler is not None and server == "origin":
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
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
    if profiler is not None and server == "asgi" and ev.waiters.held == 0 and state["last_done"] > state["published_at"] > 0:
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    done = max(state["last_done"], state["release_returned"])
    body = ev.playlist_body("v360") or b""
    return JSONResponse({"held": ev.waiters.held, "last_done": done, "rss_kb": rss_kb(), "next_msn": state["msn"],
                         "body_bytes": len(body)})

async def main():
    await feed()
    app = create_app({"bench": ev})
    app.router.routes[:0] = [Route("/bench/publish", publish, methods=["POST"]), Route("/bench/info", info),
                             Route("/bench/advance", advance, methods=["POST"])]
    if gc_tune:
        tune_gc()

    async def timed(scope, receive, send):
        # When the ASGI path has handed each response to uvicorn (the origin's own share).
        await app(scope, receive, send)
        if scope.get("path", "").endswith("index.m3u8"):
            state["last_done"] = time.monotonic()

    http = origin_protocol(app) if server == "origin" else "httptools"
    config = uvicorn.Config(timed, host="127.0.0.1", port=port, log_level="warning", http=http,
                            access_log=False, lifespan="off", backlog=20_000)
    print(json.dumps({"ready": True}), flush=True)
    await uvicorn.Server(config).serve()

if loop == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""

REFERENCE_CODE = r"""
import asyncio, json, sys, time
port, body_bytes, loop = int(sys.argv[1]), int(sys.argv[2]), sys.argv[4]
held = []
state = {"msn": 1, "published_at": 0.0, "done": 0.0}
body = b"#" * body_bytes
response = (b"HTTP/1.1 200 OK\r\ncontent-type: application/vnd.apple.mpegurl\r\n"
            b"content-length: %d\r\ncache-control: public, max-age=12\r\n\r\n" % len(body)) + body

def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def json_response(obj):
    b = json.dumps(obj).encode()
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(b), b)

class Held(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        path = data.split(b" ", 2)[1]
        if b"index.m3u8" in path:
            held.append(self.transport)
        elif path == b"/bench/publish":
            state["published_at"] = time.monotonic()
            for t in held:
                t.write(response)
            held.clear()
            state["done"] = time.monotonic()
            self.transport.write(json_response({"published_at": state["published_at"]}))
        elif path == b"/bench/advance":
            state["msn"] += 1
            self.transport.write(json_response({"next_msn": state["msn"]}))
        else:
            self.transport.write(json_response({"held": len(held), "last_done": state["done"],
                                                "rss_kb": rss_kb(), "next_msn": state["msn"]}))

async def main():
    server = await asyncio.get_running_loop().create_server(Held, "127.0.0.1", port, backlog=20_000)
    print(json.dumps({"ready": True}), flush=True)
    await server.serve_forever()

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


class HeldClient(asyncio.Protocol):
    """One player's connection: sends the blocking reload, notes when the whole answer is in."""

    def __init__(self, request: bytes, done: list[float], status: list[int]) -> None:
        self.request = request
        self.done = done
        self.status = status
        self.buf = b""
        self.need = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        cast(asyncio.WriteTransport, transport).write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
            self.need = end + 4 + length
            self.status.append(int(head.split(b" ", 2)[1]))
        if len(self.buf) >= self.need:
            self.done.append(time.monotonic())
            self.need = 1 << 62  # counted once


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
    loop = asyncio.get_running_loop()
    transports: list[asyncio.BaseTransport] = []
    for i in range(0, n, 200):  # connect in waves, as players arrive
        conns = await asyncio.gather(
            *(
                loop.create_connection(lambda: HeldClient(request, done, status), "127.0.0.1", port)
                for _ in range(min(200, n - i))
            )
        )
        transports += [t for t, _ in conns]
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
    deadline = time.monotonic() + 30
    while len(done) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(done)} of {n} answers within 30 s")
        await asyncio.sleep(0.01)
    assert set(status) == {200}, set(status)
    info = await http_json(port, "GET", "/bench/info")
    origin_ms = (float(str(info["last_done"])) - published_at) * 1000
    for t in transports:
        t.close()
    after = sorted(t - published_at for t in done)
    return {
        "n": n,
        "last_ms": after[-1] * 1000,
        "p50_ms": statistics.median(after) * 1000,
        "first_ms": after[0] * 1000,
        "kb_per_held": (rss1 - rss0) / n,
        "origin_ms": origin_ms,
    }


def pinned(cmd: list[str], core: int) -> list[str]:
    taskset = shutil.which("taskset")
    return [taskset, "-c", str(core), *cmd] if taskset and (os.cpu_count() or 1) > 1 else cmd


def run_server(
    kind: str, args: argparse.Namespace, ns: list[int], hard: int
) -> list[dict[str, float]]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        code = REFERENCE_CODE if kind == "reference" else ORIGIN_CODE
        body_arg = str(args.body_bytes) if kind == "reference" else tmp
        cmd = [sys.executable, "-c", code, str(port), body_arg]
        cmd += ["0" if args.no_gc_tune else "1", args.loop, kind]
        proc = subprocess.Popen(
            pinned(cmd, 0),
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard)),
        )
        try:
            assert proc.stdout is not None
            proc.stdout.readline()
            time.sleep(0.5)
            if kind != "reference":
                info = asyncio.run(http_json(port, "GET", "/bench/info"))
                args.body_bytes = int(str(info["body_bytes"]))
            for n in ns:
                r = uvloop.run(run_one(port, n))
                results.append(r)
                print(
                    f"{kind:>9} {n:>7} {r['first_ms']:>7.1f}ms {r['p50_ms']:>7.1f}ms "
                    f"{r['last_ms']:>7.1f}ms {r['origin_ms']:>10.1f}ms "
                    f"{r['kb_per_held']:>9.1f} KB",
                    flush=True,
                )
        finally:
            proc.terminate()
            proc.wait(10)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="1000,5000,10000")
    ap.add_argument("--servers", default="origin,asgi,reference")
    ap.add_argument("--no-gc-tune", action="store_true", help="leave the origin's GC untouched")
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    args = ap.parse_args()
    args.body_bytes = 2000
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    ns = [int(x) for x in args.n.split(",")]
    kinds = args.servers.split(",")
    print(
        f"one server process ({args.loop} loop, GC "
        f"{'untouched' if args.no_gc_tune else 'frozen after startup + thresholds raised'}), "
        f"load from this process; release = publication → response completed at the client"
    )
    print(
        f"{'server':>9} {'held':>7} {'first':>9} {'median':>9} {'last':>9} {'origin done':>12} "
        f"{'memory/held':>12}"
    )
    results = {kind: run_server(kind, args, ns, hard) for kind in kinds}
    if "reference" in results:
        ref = {r["n"]: r["last_ms"] for r in results["reference"]}
        for kind, rs in results.items():
            if kind != "reference":
                ratios = "  ".join(
                    f"{int(r['n'])}: {r['last_ms'] / ref[r['n']]:.2f}×"
                    for r in rs
                    if ref.get(r["n"])
                )
                print(f"{kind} last ÷ reference last: {ratios}")


if __name__ == "__main__":
    main()
