"""Playback authorisations per second with 1 vs 2 control-plane workers behind nginx, on one Redis.

Both runs are the same deployment but for the worker count: `mainevent control serve --workers N`
(nginx in front, sessions, rate-limit buckets and decisions on a private `redis-server`, SQLite
with 2,000 premium accounts). Load is `wrk` (one thread, 16 connections) posting playback starts
for random accounts and one of four devices each, so the stream limit is checked and sessions
replaced in Redis on every request. A warm-up run first caches every account's decision (in
Redis: the second worker finds them too); the measured run counts 200 answers per second.

Nothing is pinned: two workers need both cores, and nginx, Redis and wrk share them too, so on
a 2-core machine the ratio is bounded well below 2 by the load generator and the shared parts.

Origin write fan-out (`--only fanout`): the cost per segment of publishing to 0, 1 and 2 origin
processes (`mainevent origin serve`) through the ingest fan-out, LL-HLS mode (each segment's 4
parts are PUT too): the packager's CPU per segment, the origins' CPU per segment (from /proc),
and the time from storing a segment to every origin having listed it (segments pushed one after
another, as fast as the origins take them). Media: a real 320x180 x264 test pattern, cut again
at later epoch offsets.

Run: `.venv/bin/python bench/scale.py [--seconds 10] [--connections 64] [--only control|fanout]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The fan-out part feeds real CMAF made by the tests' media helpers (tests/service).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mainevent.control.auth import DevIdentityProvider
from mainevent.control.db import Account, open_database
from mainevent.control.settings import DEV_IDP_SECRET
from mainevent.testing.fleet import ControlFleet
from mainevent.testing.redis import RedisServer

ACCOUNTS = 2000

_LUA = r"""
local tokens = {TOKENS}
local n = #tokens
math.randomseed(os.time())
request = function()
  local i = math.random(n)
  local body = '{"device":{"id":"d' .. math.random(4) .. '"}}'
  return wrk.format("POST", "/v1/events/bell/playback",
    {["Authorization"] = "Bearer " .. tokens[i], ["Content-Type"] = "application/json"}, body)
end
local threads = {}
setup = function(thread) table.insert(threads, thread) end
statuses = {}
response = function(status, headers, body)
  local key = tostring(status)
  if status ~= 200 then
    local reason = string.match(body, '"reason":%s*"([a-z_]+)"')
    if reason then key = key .. ":" .. reason end
  end
  statuses[key] = (statuses[key] or 0) + 1
end
done = function(summary, latency, requests)
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for k, v in pairs(s) do io.write("status " .. k .. " " .. v .. "\n") end
  end
end
"""


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_wrk(
    wrk: str, url: str, script: Path, seconds: int, connections: int
) -> tuple[int, dict[str, int]]:
    """(200 answers, other answers by status and reason) of one wrk run."""
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"status (\S+) (\d+)", out)}
    ok = counts.pop("200", 0)
    return ok, counts


def measure(
    workers: int, tmp: Path, template: Path, script: Path, args: argparse.Namespace, wrk: str
) -> float:
    data = tmp / f"w{workers}"
    data.mkdir()
    shutil.copyfile(template, data / "control.db")
    with RedisServer() as redis:
        fleet = ControlFleet(
            workers=workers,
            redis_url=redis.url,
            data_dir=data,
            settings={
                "account_rate": 1000,
                "account_burst": 1000,
                "address_rate": 1_000_000,
                "address_burst": 1_000_000,
                "decision_ttl_s": 3600,
            },
        )
        try:
            fleet.wait_ready()
            fleet.live_event("bell", {"subscription_tiers": ["premium"], "max_streams": 8})
            ok, bad = run_wrk(wrk, fleet.url, script, args.warmup, args.connections)
            print(f"  {workers} worker(s): warm-up {ok} grants, other answers {bad}", flush=True)
            ok, bad = run_wrk(wrk, fleet.url, script, args.seconds, args.connections)
        finally:
            fleet.close()
    rate = ok / args.seconds
    print(
        f"  {workers} worker(s): {rate:,.0f} grants/s ({bad} other answers) load {loadavg()}",
        flush=True,
    )
    return rate


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _spawn_origin(conf: Path, port: int) -> subprocess.Popen[bytes]:
    """`mainevent origin serve` with `conf`, once it listens."""
    cmd = [sys.executable, "-m", "mainevent.cli", "origin", "serve", "--settings-json"]
    p = subprocess.Popen(
        [*cmd, str(conf), "--port", str(port), "--log-level", "warning"], stdout=subprocess.PIPE
    )
    assert p.stdout is not None
    json.loads(p.stdout.readline())
    return p


async def fanout_cost(origins: int, media: Any, tmp: Path, segments: int) -> dict[str, float]:
    """Publish `segments` LL-HLS segments to `origins` origin processes; the cost per segment."""
    from prometheus_client import CollectorRegistry
    from tests.service.ingest_media import RENDITION

    from mainevent.commands.stack import free_port
    from mainevent.media.origin.ingest_client import FanoutPublisher, FanoutStore
    from mainevent.media.origin.live import LiveEvent, RenditionSpec
    from mainevent.media.store import LocalSegmentStore, SegmentStore

    procs: list[subprocess.Popen[bytes]] = []
    urls = []
    for i in range(origins):
        port = free_port()
        conf = tmp / f"o{origins}-{i}.json"
        conf.write_text(
            json.dumps(
                {
                    "event": {
                        "id": "demo",
                        "latency": "low",
                        "ladder": [
                            {"id": RENDITION, "width": 320, "height": 180, "bitrate_kbps": 300}
                        ],
                    },
                    "origin": {"data_dir": str(tmp / f"o{origins}-{i}"), "ingest_secret": "b"},
                }
            )
        )
        procs.append(_spawn_origin(conf, port))
        urls.append(f"http://127.0.0.1:{port}")
    publisher = FanoutPublisher(urls, secret="b", registry=CollectorRegistry()) if urls else None
    store: SegmentStore = LocalSegmentStore(tmp / f"packager-{origins}")
    if publisher is not None:
        store = FanoutStore(store, publisher)
    event = LiveEvent(
        event_id="demo",
        renditions=[RenditionSpec(RENDITION, "video", 300, 320, 180)],
        store=store,
        segment_duration_ms=2000,
        window_segments=6,
        fps=30,
        latency="low",
        part_target_ms=500,
    )
    serve = asyncio.create_task(publisher.serve()) if publisher is not None else None

    async def drained() -> None:
        while publisher is not None and any(  # noqa: ASYNC110 - the core's counters, 0.5 ms
            s["queued"] or s["in_flight"] for s in publisher.statistics()
        ):
            await asyncio.sleep(0.0005)

    try:
        await event.on_init(RENDITION, media.init)
        await drained()
        cpu0 = time.process_time()
        ocpu0 = sum(_cpu_s(p.pid) for p in procs)
        took = []
        for seg in media.segments[:segments]:
            t0 = time.perf_counter()
            for part in seg.parts:
                event.on_part(RENDITION, part)
            await event.on_segment(RENDITION, seg)
            await drained()
            took.append(time.perf_counter() - t0)
        n = len(took)
        out = {
            "packager_cpu_ms": (time.process_time() - cpu0) * 1000 / n,
            "origins_cpu_ms": (sum(_cpu_s(p.pid) for p in procs) - ocpu0) * 1000 / n,
            "listed_p50_ms": sorted(took)[n // 2] * 1000,
            "listed_max_ms": max(took) * 1000,
        }
        if publisher is not None:
            assert all(s["dropped"] == 0 for s in publisher.statistics())
        return out
    finally:
        if serve is not None:
            serve.cancel()
            await asyncio.gather(serve, return_exceptions=True)
        for p in procs:
            p.terminate()
            p.wait(10)
            if p.stdout is not None:
                p.stdout.close()


async def fanout_bench(segments: int) -> None:
    from tests.service.ingest_media import make_media

    tmp = Path(tempfile.mkdtemp(prefix="mainevent-fanout-"))
    try:
        media = make_media(tmp, runs=-(-segments // 3))
        print(
            f"fan-out: {segments} LL-HLS segments (4 parts each, ~{len(media.segments[0].data):,}"
            f" bytes a segment) to 0/1/2 origin processes; load {loadavg()}",
            flush=True,
        )
        base: dict[str, float] = {}
        for n in (0, 1, 2):
            r = await fanout_cost(n, media, tmp, segments)
            base = base or r
            extra = r["packager_cpu_ms"] - base["packager_cpu_ms"]
            print(
                f"  {n} origin(s): packager {r['packager_cpu_ms']:.2f} ms CPU/segment "
                f"(+{extra:.2f} for the fan-out), origins {r['origins_cpu_ms']:.2f} ms CPU/segment"
                f" in all, stored → listed everywhere p50 {r['listed_p50_ms']:.1f} ms, "
                f"max {r['listed_max_ms']:.1f} ms",
                flush=True,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=6)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--only", choices=["control", "fanout"], help="run one part only")
    parser.add_argument("--segments", type=int, default=30, help="fan-out: segments pushed")
    args = parser.parse_args()
    if args.only != "control":
        asyncio.run(fanout_bench(args.segments))
    if args.only == "fanout":
        return
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is missing: apt-get install wrk")
    tmp = Path(tempfile.mkdtemp(prefix="mainevent-scale-"))
    try:
        template = tmp / "accounts.db"
        db = open_database(f"sqlite:///{template}")
        with db.write.begin() as s:
            now = datetime.now(UTC)
            s.add_all(
                Account(id=f"acc{i}", plan="premium", version=1, updated_at=now)
                for i in range(ACCOUNTS)
            )
        db.dispose()
        idp = DevIdentityProvider(
            secret=DEV_IDP_SECRET, issuer="mainevent-dev-idp", audience="mainevent"
        )
        tokens = ",".join(json.dumps(idp.mint(f"acc{i}", ttl_s=7200)) for i in range(ACCOUNTS))
        script = tmp / "starts.lua"
        script.write_text(_LUA.replace("TOKENS", tokens))
        print(
            f"scale: playback starts through nginx, Redis-backed state, {ACCOUNTS} accounts, "
            f"wrk -t1 -c{args.connections}; {os.cpu_count()} cores; load {loadavg()}",
            flush=True,
        )
        one = measure(1, tmp, template, script, args, wrk)
        two = measure(2, tmp, template, script, args, wrk)
        print(f"  ratio 2 workers / 1 worker: {two / one:.2f}x (goal >= 1.8x)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
