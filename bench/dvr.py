"""DVR costs: live-edge latency under a DVR audience beyond the budget, and playlist reload bytes.

1. Reload bytes (pure computation, the real renderers): a media playlist over a 2 h DVR window
   of 2 s segments, full and as a delta update (`_HLS_skip=YES`, CAN-SKIP-UNTIL = 6 × TD), in
   standard mode and in LL-HLS mode (parts of 0.5 s on the last 3 × TD).
2. Live edge first: the real origin app (`create_app` over a `LiveEvent` with a DVR window,
   synthetic media stored on disk, memory cache of 8 segments per rendition) runs under uvicorn
   with the origin's protocol in a subprocess. This process runs `--live` live-edge clients
   (each: playlist, then the newest segment, once a second) and, in the loaded phases, `--dvr` DVR
   clients (random segments 1-10 min behind the edge, read from disk), for `--seconds` each:

   - `live only`: no DVR audience (the reference);
   - `dvr, no budget`: the DVR audience, nothing shed;
   - `dvr, budget`: the same with `max_concurrent` = `--budget` and `max_bytes_per_s` =
     `--budget-bytes` (DVR requests over either are 503 + Retry-After: 2); the DVR clients
     wait the Retry-After before asking again;
   - `dvr, budget, 50 ms retries`: the same, DVR clients retrying every 50 ms regardless.

   Reported per phase: live-edge request latency p50/p99, requests/s of each class, DVR 503s.
   The goal: live-edge p99 with the budget within 2 × the `live only` p99.

    .venv/bin/python bench/dvr.py [--seconds 10] [--live 40] [--dvr 60] [--budget 8]
                                  [--budget-bytes 6000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

from mainevent.media.manifest import (
    LowLatency,
    PublishedPart,
    PublishedSegment,
    RenditionWindow,
    render_media_playlist,
)
from mainevent.media.manifest.dvr import delta_update, dvr_playlist

SERVER_CODE = r"""
import asyncio, json, sys
from pathlib import Path
import uvicorn
from mainevent.media.cmaf import InitSection, Part, Segment, TrackInfo
from mainevent.media.origin.app import create_app
from mainevent.media.origin.live import LiveEvent, RenditionSpec
from mainevent.media.origin.protocol import origin_protocol
from mainevent.media.shedding import Budget
from mainevent.media.store import LocalSegmentStore

root, port, budget, budget_bytes, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
TS = 90_000
ev = LiveEvent(
    event_id="bench", renditions=[RenditionSpec("v720", "video", 3000, 1280, 720)],
    store=LocalSegmentStore(Path(root), memory_segments=8), segment_duration_ms=2000,
    window_segments=6, fps=30, dvr_window_s=3600,
    shed_budget=Budget(max_concurrent=budget, max_bytes_per_s=budget_bytes) if budget > 0 else None,
)

async def main() -> None:
    await ev.on_init("v720", InitSection(b"I" * 800, TrackInfo(1, "video", TS, "avc1.64001f", 1280, 720)))
    payload = b"x" * 375_000  # 1.5 Mbit/s of 2 s segments
    for msn in range(first, first + count):
        d = 2 * TS
        part = Part(msn, 0, msn * d, d, True, payload)
        await ev.on_segment("v720", Segment(msn=msn, start=msn * d, duration=d, timescale=TS, parts=(part,), data=payload))
    app = create_app({"bench": ev})
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=origin_protocol(app), log_level="error", access_log=False, lifespan="off"))
    print("ready", flush=True)
    await server.serve()

asyncio.run(main())
"""

FIRST = 900_000_000


def reload_bytes() -> dict[str, int]:
    """Bytes of one playlist reload over a 2 h window: full and delta, standard and LL."""
    out = {}
    n = 3600
    for mode in ("standard", "ll"):
        ll = None
        if mode == "ll":
            ll = LowLatency(
                part_target_us=512_000,
                part_us=500_000,
                part_hold_back_us=1_536_000,
                hold_back_us=6_000_000,
                can_skip_until_us=12_000_000,
            )
        w = RenditionWindow(
            target_duration_s=2, window_segments=n, segment_duration_us=2_000_000, low_latency=ll
        )
        parts = tuple(PublishedPart(i, 500_000, i == 0) for i in range(4)) if ll else ()
        for i in range(n):
            msn = FIRST + i
            w.publish(PublishedSegment(msn, 2_000_000, msn * 2000, "init.mp4", parts), float(i))
        if ll is None:
            full = dvr_playlist(
                w.playlist(0.0), can_skip_until_us=12_000_000, start_offset_us=-6_000_000
            )
            delta = delta_update(full)
        else:
            full, delta = w.playlist(0.0), w.playlist(0.0, skip=True)
        out[f"{mode}_full"] = len(render_media_playlist(full).encode())
        out[f"{mode}_delta"] = len(render_media_playlist(delta).encode())
    return out


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Conn:
    """One keep-alive HTTP/1.1 connection with a minimal client (httpx costs more CPU per
    request than the origin does on this machine, and would be what is measured)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> _Conn:
        r, w = await asyncio.open_connection(host, port)
        return cls(r, w)

    async def get(self, path: str) -> int:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        m = re.search(rb"(?i)content-length: *(\d+)", head)
        await self.reader.readexactly(int(m[1]) if m else 0)
        return status

    def close(self) -> None:
        self.writer.close()


async def _phase(
    host: str, port: int, seconds: float, live_n: int, dvr_n: int, last: int, retry_s: float
) -> dict[str, float]:
    live_lat: list[float] = []
    counts = {"live": 0, "dvr": 0, "dvr_503": 0, "errors": 0}
    stop = time.monotonic() + seconds

    async def live() -> None:
        # A live viewer reloads every TD/2 (1 s) and fetches the newest segment.
        conn = await _Conn.open(host, port)
        await asyncio.sleep(random.random())
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            s1 = await conn.get("/live/bench/v720/index.m3u8")
            s2 = await conn.get(f"/live/bench/v720/{last}.m4s")
            live_lat.append((time.perf_counter() - t0) / 2)
            counts["live"] += 1
            if s1 != 200 or s2 != 200:
                counts["errors"] += 1
            await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - t0)))
        conn.close()

    async def dvr() -> None:
        conn = await _Conn.open(host, port)
        rng = random.Random()
        while time.monotonic() < stop:
            status = await conn.get(f"/live/bench/v720/{last - rng.randint(30, 300)}.m4s")
            if status == 503:
                counts["dvr_503"] += 1
                await asyncio.sleep(retry_s)
            elif status == 200:
                counts["dvr"] += 1
            else:
                counts["errors"] += 1
        conn.close()

    await asyncio.gather(*[live() for _ in range(live_n)], *[dvr() for _ in range(dvr_n)])
    live_lat.sort()
    q = statistics.quantiles(live_lat, n=100) if len(live_lat) > 100 else [live_lat[-1]] * 99
    return {
        "live_p50_ms": round(statistics.median(live_lat) * 1000, 2),
        "live_p99_ms": round(q[98] * 1000, 2),
        "live_req_s": round(counts["live"] * 2 / seconds, 1),
        "dvr_req_s": round(counts["dvr"] / seconds, 1),
        "dvr_503_s": round(counts["dvr_503"] / seconds, 1),
        "errors": counts["errors"],
    }


def run_origin(
    budget: int, budget_bytes: int, root: str, count: int
) -> tuple[subprocess.Popen[str], int]:
    port = _port()
    args = [root, str(port), str(budget), str(budget_bytes), str(FIRST), str(count)]
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_CODE, *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "ready" not in line:
        proc.kill()
        raise SystemExit("origin did not start")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(base + "/healthz", timeout=2)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    return proc, port


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--live", type=int, default=40, help="live-edge clients (1 reload/s each)")
    ap.add_argument("--dvr", type=int, default=60, help="DVR clients")
    ap.add_argument("--budget", type=int, default=8, help="origin max_concurrent, budget phase")
    ap.add_argument(
        "--budget-bytes", type=int, default=6_000_000, help="origin max_bytes_per_s, budget phase"
    )
    ap.add_argument("--segments", type=int, default=400, help="segments stored (2 s each)")
    args = ap.parse_args()
    result: dict[str, object] = {"reload_bytes_2h": reload_bytes()}
    last = FIRST + args.segments - 1
    phases = [
        ("live only", 0, 0, 0.0),
        ("dvr, no budget", args.dvr, 0, 0.0),
        # DVR players that wait the Retry-After (2 s) before asking again...
        ("dvr, budget", args.dvr, args.budget, 2.0),
        # ...and a hostile DVR audience that retries every 50 ms regardless.
        ("dvr, budget, 50 ms retries", args.dvr, args.budget, 0.05),
    ]
    with tempfile.TemporaryDirectory() as root:
        for name, dvr_n, budget, retry_s in phases:
            data = os.path.join(root, name.replace(" ", "_").replace(",", ""))
            proc, port = run_origin(budget, args.budget_bytes, data, args.segments)
            try:
                phase = _phase("127.0.0.1", port, args.seconds, args.live, dvr_n, last, retry_s)
                result[name] = asyncio.run(phase)
            finally:
                proc.terminate()
                proc.wait(10)
    ref = result["live only"]["live_p99_ms"]  # type: ignore[index]
    for name in ("dvr, no budget", "dvr, budget", "dvr, budget, 50 ms retries"):
        loaded = result[name]["live_p99_ms"]  # type: ignore[index]
        result[f"live_p99_ratio[{name}]"] = round(loaded / ref, 2)
    result["load"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
