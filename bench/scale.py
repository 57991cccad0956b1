"""Playback authorisations per second with 1 vs 2 control-plane workers behind nginx, on one Redis.

Both runs are the same deployment but for the worker count: `mainevent control serve --workers N`
(nginx in front, sessions, rate-limit buckets and decisions on a private `redis-server`, SQLite
with 2,000 premium accounts). Load is `wrk` (one thread, 16 connections per worker) posting playback starts
for random accounts and one of four devices each, so the stream limit is checked and sessions
replaced in Redis on every request. A warm-up run first caches every account's decision (each
account in turn; in Redis, so the second worker finds them too); the measured run counts 200
answers per second.

Starts are answered by the workers' lean front (`control/playback_front.py`: no FastAPI, the
decision read, both rate-limit buckets and the session start as Redis Lua scripts); the share it
answered is printed, from each worker's `mainevent_control_lean_playback_total`.

Offered load grows with the fleet: `--connections` per worker (1 worker: wrk -c16, 2 workers:
-c32), so each run saturates its fleet and every worker sees the same concurrency; a capacity
is a saturated throughput. With the same 16 connections for both (`--same-connections`, the
figure recorded before 2026-12-07 14:00), each of two capped workers had 8 requests in flight
against the single worker's 16 and did 0.88× as much per CPU-second: its event loop batches
fewer requests per wake-up, and the fleet was measured below saturation.

Two ratios are printed, because on a 2-core machine wrk, nginx and Redis share the two cores with
the workers:

- **wall clock, uncapped**: grants/s of 2 workers / 1 worker, nothing pinned or capped. Bounded by
  the machine, not the workers: once one lean worker is fast, the load side (wrk + nginx + Redis)
  takes about as much CPU per grant as the worker, so the two cores are full before 2 workers are.
- **capacity**: the same runs with each worker confined, after its warm-up, to a fixed CPU share
  (`--cap`, default 0.4 cores: a cgroup of its own per worker with a CFS quota, `cpu.max` on
  cgroup v2 or `cpu.cfs_quota_us` on v1, 10 ms periods; needs a writable cgroupfs, else skipped).
  2 × 0.4 cores leaves 1.2 for the load side, so the figure measures what the workers can do,
  i.e. whether the fleet's capacity adds up across workers (shared state costs no worker-side
  serialisation). Each line also prints the CPU the workers really used (from /proc), so a run in
  which they did not get their quota shows, and grants per worker CPU-second ("per CPU-second
  2/1" near 1.0 means the second worker does as much per CPU-second as the first).

Edge hits (`--only edge`): one CDN of 1 vs 2 `mainevent edge serve` processes behind nginx (the
config of `mainevent up --edges-per-cdn N`), in front of the stub origin of `bench/edge.py`;
`wrk` fetches one cached 100 kB segment. Same two ratios, the capacity one with each edge process
capped at `--edge-cap` (0.05 cores: uncapped, one edge already out-serves what nginx and wrk
manage on this machine).

Origin write fan-out (`--only fanout`): the cost per segment of publishing to 0, 1 and 2 origin
processes (`mainevent origin serve`) through the ingest fan-out, LL-HLS mode (each segment's 4
parts are PUT too): the packager's CPU per segment, the origins' CPU per segment (from /proc),
and the time from storing a segment to every origin having listed it (segments pushed one after
another, as fast as the origins take them). Media: a real 320x180 x264 test pattern, cut again
at later epoch offsets.

Run: `.venv/bin/python bench/scale.py [--seconds 10] [--connections 16] [--same-connections]
[--cap 0.4] [--edge-cap 0.05] [--only control|fanout|edge]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The fan-out part feeds real CMAF made by the tests' media helpers (tests/service).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

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


class CpuCaps:
    """Each confined process in a cgroup of its own with a CFS quota of `cores` CPUs.

    cgroup v2 (`cpu.max`) where the unified hierarchy delegates the cpu controller, else the v1
    cpu controller (`cpu.cfs_quota_us`); both need a writable cgroupfs (root, or a delegated
    subtree). `available()` says whether one is there; the groups are removed in `close()`.
    """

    V2 = Path("/sys/fs/cgroup")
    V1 = Path("/sys/fs/cgroup/cpu")

    def __init__(self, cores: float) -> None:
        self.cores = cores
        self.groups: list[Path] = []
        self.v2 = (
            "cpu" in (self.V2 / "cgroup.subtree_control").read_text().split()
            if (self.V2 / "cgroup.subtree_control").exists()
            else False
        )

    @classmethod
    def available(cls) -> bool:
        base = cls.V2 if (cls.V2 / "cgroup.subtree_control").exists() else cls.V1
        return os.access(base, os.W_OK) and (
            (base / "cgroup.subtree_control").exists() or (base / "cpu.cfs_quota_us").exists()
        )

    def confine(self, pid: int) -> None:
        base = self.V2 if self.v2 else self.V1
        group = base / f"mainevent-bench-{os.getpid()}-{len(self.groups)}"
        group.mkdir()
        self.groups.append(group)
        # A short period: capped at 0.4 cores over 100 ms a worker would run 40 ms then stop 60,
        # and requests queued meanwhile would be shed as late; over 10 ms the stops are short.
        period = max(10_000, int(1000 / self.cores) + 1)  # the kernel's least quota is 1 ms
        quota = int(self.cores * period)
        if self.v2:
            (group / "cpu.max").write_text(f"{quota} {period}")
        else:
            (group / "cpu.cfs_period_us").write_text(str(period))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        (group / "cgroup.procs").write_text(str(pid))

    def throttled_s(self) -> float:
        """Seconds the confined processes were held back by their quota (cpu.stat), in all."""
        total = 0.0
        for g in self.groups:
            for line in (g / "cpu.stat").read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "throttled_time":  # v1, ns
                    total += int(value) / 1e9
                elif name == "throttled_usec":  # v2
                    total += int(value) / 1e6
        return total

    def close(self) -> None:
        for g in self.groups:
            with contextlib.suppress(OSError):
                g.rmdir()  # empty once its process exited
        self.groups = []


@dataclass(frozen=True, slots=True)
class Run:
    rate: float
    """Grants per second."""
    worker_cores: float
    """CPU the workers used during the measured run, in cores (CPU-seconds per second)."""
    front_share: float
    """Share of the grants answered by the lean front (the rest went through FastAPI)."""


def _front_answers(urls: list[str]) -> tuple[float, float]:
    """(answered, passed) lean-front counters summed over the workers' /metrics."""
    answered = passed = 0.0
    for u in urls:
        text = httpx.get(f"{u}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith("mainevent_control_lean_playback_total{"):
                value = float(line.rsplit(" ", 1)[1])
                if 'outcome="answered"' in line:
                    answered += value
                else:
                    passed += value
    return answered, passed


def measure(
    workers: int,
    tmp: Path,
    template: Path,
    script: Path,
    warm: Path,
    args: argparse.Namespace,
    wrk: str,
    cap: float | None = None,
) -> Run:
    """One fleet of `workers`; with `cap`, each worker confined to `cap` cores (cgroup quota)."""
    data = tmp / f"w{workers}-{cap}"
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
        caps = CpuCaps(cap) if cap is not None else None
        try:
            fleet.wait_ready()
            pids = [int(w["pid"]) for w in fleet.state()["workers"]]
            fleet.live_event("bell", {"subscription_tiers": ["premium"], "max_streams": 8})
            ok, bad = run_wrk(wrk, fleet.url, warm, args.warmup, args.connections)
            print(f"    warm-up {ok} grants, other answers {bad}", flush=True)
            if ok < ACCOUNTS:
                print(f"    warning: the warm-up reached {ok} of {ACCOUNTS} accounts", flush=True)
            if caps is not None:  # after the warm-up: it must reach every account either way
                for pid in pids:
                    caps.confine(pid)
            answered0, passed0 = _front_answers(fleet.worker_urls)
            cpu0, t0 = sum(_cpu_s(p) for p in pids), time.monotonic()
            conns = args.connections * (workers if args.per_worker else 1)
            ok, bad = run_wrk(wrk, fleet.url, script, args.seconds, conns)
            cores = (sum(_cpu_s(p) for p in pids) - cpu0) / (time.monotonic() - t0)
            answered, passed = _front_answers(fleet.worker_urls)
            answered, passed = answered - answered0, passed - passed0
        finally:
            fleet.close()
            if caps is not None:
                caps.close()
    rate = ok / args.seconds
    share = answered / (answered + passed) if answered + passed else 0.0
    what = f"each capped at {cap:.2f} cores" if cap is not None else "uncapped"
    what += f", wrk -c{args.connections * (workers if args.per_worker else 1)}"
    print(
        f"  {workers} worker(s), {what}: {rate:,.0f} grants/s ({bad} other answers), workers used "
        f"{cores:.2f} cores ({rate / max(cores, 1e-9):,.0f} grants per worker CPU-second), "
        f"{share:.0%} answered by the lean front; load {loadavg()}",
        flush=True,
    )
    return Run(rate, cores, share)


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


def edge_hits(edges: int, args: argparse.Namespace, wrk: str, cap: float | None) -> Run:
    """Cache hits/s of one CDN with `edges` `mainevent edge serve` processes behind nginx (the
    edge fleet of `mainevent up --edges-per-cdn N`), all missing to an in-process stub origin."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from edge import OriginThread  # bench/edge.py's origin stand-in
    from mainevent.commands.scaleout import CdnPool, edge_lb_config
    from mainevent.commands.stack import free_port
    from mainevent.common.nginx import find_nginx, make_dirs
    from mainevent.media.edge.stub import StubObject

    nginx = find_nginx()
    if nginx is None:
        raise SystemExit("nginx is missing: apt-get install nginx")
    origin = OriginThread()
    origin.publish("/live/demo/v1/100.m4s", StubObject(os.urandom(100_000)))
    tmp = Path(tempfile.mkdtemp(prefix="mainevent-edges-"))
    procs: list[subprocess.Popen[bytes]] = []
    caps = CpuCaps(cap) if cap is not None else None
    try:
        ports = [free_port() for _ in range(edges)]
        for port in ports:
            argv = [sys.executable, "-m", "mainevent.cli", "edge", "serve", "--name", "cdn-a"]
            argv += ["--upstream", origin.stub.url, "--port", str(port), "--log-level", "warning"]
            procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))
        listen = free_port()
        make_dirs(tmp)
        conf = tmp / "nginx.conf"
        pool = CdnPool("cdn-a", "127.0.0.1", listen, tuple(f"127.0.0.1:{p}" for p in ports))
        conf.write_text(edge_lb_config([pool], tmp, "root" if os.geteuid() == 0 else None))
        lb = subprocess.Popen([nginx, "-p", str(tmp), "-c", str(conf), "-e", "stderr"])
        procs.append(lb)
        for port in [*ports, listen]:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code < 500:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"edge bench: port {port} never answered")
                time.sleep(0.1)
        pids = [p.pid for p in procs[:edges]]
        if caps is not None:
            for pid in pids:
                caps.confine(pid)
        url = f"http://127.0.0.1:{listen}/live/demo/v1/100.m4s"
        for _ in range(4 * edges):  # fill every edge's cache (least_conn spreads these)
            httpx.get(url, timeout=10).raise_for_status()
        warm = subprocess.run(
            [wrk, "-t1", f"-c{args.connections}", "-d2s", url], capture_output=True, check=True
        )
        del warm
        cpu0, t0 = sum(_cpu_s(p) for p in pids), time.monotonic()
        out = subprocess.run(
            [wrk, "-t1", f"-c{args.connections}", f"-d{args.seconds}s", url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        cores = (sum(_cpu_s(p) for p in pids) - cpu0) / (time.monotonic() - t0)
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        fetches = origin.fetches("/live/demo/v1/100.m4s")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if caps is not None:
            caps.close()
        origin.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    what = f"each capped at {cap:.2f} cores" if cap is not None else "uncapped"
    print(
        f"  {edges} edge process(es), {what}: {rate:,.0f} hits/s of a 100 kB segment, edges used "
        f"{cores:.2f} cores ({rate / max(cores, 1e-9):,.0f} hits per edge CPU-second), "
        f"{fetches} origin fetch(es); load {loadavg()}",
        flush=True,
    )
    return Run(rate, cores, 1.0)


def _ratios(label: str, one: Run, two: Run, goal: bool) -> None:
    print(
        f"  {label}: 2/1 = {two.rate / one.rate:.2f}x"
        + (" (goal >= 1.8x)" if goal else "")
        + f"; per CPU-second 2/1 = {(two.rate / two.worker_cores) / (one.rate / one.worker_cores):.2f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=6)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--same-connections",
        dest="per_worker",
        action="store_false",
        help="control: both fleets get --connections in all (by default the offered load grows "
        "with the fleet: --connections per worker, so each worker sees the same concurrency)",
    )
    parser.add_argument("--only", choices=["control", "fanout", "edge"], help="run one part only")
    parser.add_argument(
        "--cap",
        type=float,
        default=0.4,
        help="capacity runs: CPU quota per control worker in cores (0 = no capacity runs)",
    )
    parser.add_argument(
        "--edge-cap",
        type=float,
        default=0.05,
        help="capacity runs: CPU quota per edge process in cores (an uncapped edge serving "
        "hits needs ~0.2 cores at what nginx and wrk manage here, so a cap must sit below that)",
    )
    parser.add_argument("--segments", type=int, default=30, help="fan-out: segments pushed")
    args = parser.parse_args()
    if args.only in (None, "fanout"):
        asyncio.run(fanout_bench(args.segments))
    if args.only == "fanout":
        return
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is missing: apt-get install wrk")
    capped = args.cap > 0 and CpuCaps.available()
    if args.cap > 0 and not capped:
        print("  (no writable cgroup cpu controller: capacity runs skipped)", flush=True)
    if args.only in (None, "edge"):
        print(
            f"edge hits: one CDN, 1 vs 2 edge processes behind nginx, wrk -t1 "
            f"-c{args.connections}; load {loadavg()}",
            flush=True,
        )
        one, two = edge_hits(1, args, wrk, None), edge_hits(2, args, wrk, None)
        _ratios("wall clock, uncapped", one, two, goal=True)
        if capped:
            cap = args.edge_cap
            one, two = edge_hits(1, args, wrk, cap), edge_hits(2, args, wrk, cap)
            _ratios(f"capacity, {cap:.2f} cores per edge", one, two, goal=True)
    if args.only == "edge":
        return
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
        # Warm-up: every account in turn, so each decision is cached before the measured run
        # (random picks for a few seconds would leave a third of them to the measured run).
        warm = tmp / "warm.lua"
        warm.write_text(
            _LUA.replace("TOKENS", tokens).replace(
                "local i = math.random(n)", "turn = (turn or 0) + 1\n  local i = (turn - 1) % n + 1"
            )
        )
        print(
            f"scale: playback starts through nginx, Redis-backed state, {ACCOUNTS} accounts, "
            f"wrk -t1 -c{args.connections}"
            + (" per worker" if args.per_worker else " for both fleets")
            + f"; {os.cpu_count()} cores; load {loadavg()}",
            flush=True,
        )
        one = measure(1, tmp, template, script, warm, args, wrk)
        two = measure(2, tmp, template, script, warm, args, wrk)
        _ratios("wall clock, uncapped", one, two, goal=True)
        if capped:
            one = measure(1, tmp, template, script, warm, args, wrk, args.cap)
            two = measure(2, tmp, template, script, warm, args, wrk, args.cap)
            _ratios(f"capacity, {args.cap:.2f} cores per worker", one, two, goal=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
