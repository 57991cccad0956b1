"""DVR costs: live-edge latency under a DVR audience beyond the budget, and playlist reload bytes.

1. Reload bytes (pure computation, the real renderers): a media playlist over a 2 h DVR window
   of 2 s segments, full and as a delta update (`_HLS_skip=YES`, CAN-SKIP-UNTIL = 6 × TD), in
   standard mode and in LL-HLS mode (parts of 0.5 s on the last 3 × TD).
2. Live edge first: the real origin app (`create_app` over a `LiveEvent` with a DVR window,
   synthetic media stored on disk, memory cache of 8 segments per rendition) runs under uvicorn
   with the origin's protocol in a subprocess. This process runs `--live` live-edge clients
   (each: playlist, then the newest segment, in a loop) and, in the loaded phases, `--dvr` DVR
   clients (random segments 1-10 min behind the edge, read from disk), for `--seconds` each:

   - `live only`: no DVR audience (the reference);
   - `dvr, no budget`: the DVR audience, nothing shed;
   - `dvr, budget`: the same with `max_concurrent` = `--budget` (DVR requests over it are 503).

   Reported per phase: live-edge request latency p50/p99, requests/s of each class, DVR 503s.
   The goal: live-edge p99 with the budget within 2 × the `live only` p99.

    .venv/bin/python bench/dvr.py [--seconds 10] [--live 20] [--dvr 60] [--budget 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
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

root, port, budget, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
TS = 90_000
ev = LiveEvent(
    event_id="bench", renditions=[RenditionSpec("v720", "video", 3000, 1280, 720)],
    store=LocalSegmentStore(Path(root), memory_segments=8), segment_duration_ms=2000,
    window_segments=6, fps=30, dvr_window_s=3600,
    shed_budget=Budget(max_concurrent=budget) if budget > 0 else None,
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


async def _phase(base: str, seconds: float, live_n: int, dvr_n: int, last: int) -> dict[str, float]:
    live_lat: list[float] = []
    counts = {"live": 0, "dvr": 0, "dvr_503": 0, "errors": 0}
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=live_n + dvr_n + 10)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:

        async def live() -> None:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                r1 = await client.get("/live/bench/v720/index.m3u8")
                r2 = await client.get(f"/live/bench/v720/{last}.m4s")
                live_lat.append((time.perf_counter() - t0) / 2)
                counts["live"] += 1
                if r1.status_code != 200 or r2.status_code != 200:
                    counts["errors"] += 1

        async def dvr() -> None:
            rng = random.Random()
            while time.monotonic() < stop:
                msn = last - rng.randint(30, 300)
                r = await client.get(f"/live/bench/v720/{msn}.m4s")
                if r.status_code == 503:
                    counts["dvr_503"] += 1
                    await asyncio.sleep(0.05)  # a real player waits Retry-After; keep pressure high
                elif r.status_code == 200:
                    counts["dvr"] += 1
                else:
                    counts["errors"] += 1

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


def run_origin(budget: int, root: str, count: int) -> tuple[subprocess.Popen[str], str]:
    port = _port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_CODE, root, str(port), str(budget), str(FIRST), str(count)],
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
    return proc, base


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--live", type=int, default=20, help="live-edge clients")
    ap.add_argument("--dvr", type=int, default=60, help="DVR clients")
    ap.add_argument(
        "--budget", type=int, default=8, help="origin max_concurrent in the budget phase"
    )
    ap.add_argument("--segments", type=int, default=400, help="segments stored (2 s each)")
    args = ap.parse_args()
    result: dict[str, object] = {"reload_bytes_2h": reload_bytes()}
    last = FIRST + args.segments - 1
    phases = [
        ("live only", 0, 0),
        ("dvr, no budget", args.dvr, 0),
        ("dvr, budget", args.dvr, args.budget),
    ]
    with tempfile.TemporaryDirectory() as root:
        for name, dvr_n, budget in phases:
            proc, base = run_origin(
                budget, os.path.join(root, name.replace(" ", "_").replace(",", "")), args.segments
            )
            try:
                result[name] = asyncio.run(_phase(base, args.seconds, args.live, dvr_n, last))
            finally:
                proc.terminate()
                proc.wait(10)
    ref = result["live only"]["live_p99_ms"]  # type: ignore[index]
    loaded = result["dvr, budget"]["live_p99_ms"]  # type: ignore[index]
    result["live_p99_ratio_budget_vs_live_only"] = round(loaded / ref, 2)
    result["load"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
