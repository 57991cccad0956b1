"""Steering manifests per second per core, p99 at half load, against a bare ASGI app in the same
run; and policy re-evaluation for 1,000,000 sessions' groups.

    .venv/bin/python bench/steering.py [--duration 8] [--rounds 2] [--connections 64]
                                       [--sessions 1000000]

HTTP: one server process pinned to core 0 (`taskset -c 0`), uvicorn + uvloop + httptools, serving
either a bare ASGI app (fixed 150-byte JSON body: the reference) or the steering app
(`SteeringApp` over a 3-CDN policy, 200,000 distinct sessions in 20 regions, each request a
real policy decision and RELOAD-URI). Load from `wrk -t1` pinned to core 1 with a Lua script that
walks the sessions. Rounds alternate bare/steering; medians are printed. Then the same servers at
half the measured steering rate (wrk's per-connection `delay()`), for the p99.

Policy: placement of N sessions (first request of each), then a failure of cdn-b in every region
(one `update_health` over all region × ISP × CDN links), then one re-evaluation of all N sessions
(those on cdn-b moved per the drain schedule, the rest sticky). Printed in seconds and µs/session.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from edge import ensure_wrk
from mainevent.control.steering import (
    ANY,
    CdnSignal,
    CdnSpec,
    HealthReport,
    SessionState,
    SteeringConfig,
    SteeringPolicy,
)

SESSIONS_HTTP = 200_000
REGIONS = 20
CDNS = ("cdn-a", "cdn-b", "cdn-c")

SERVER = r"""
import sys, asyncio, uvicorn
kind = sys.argv[1]; port = int(sys.argv[2])
if kind == "bare":
    BODY = b'{"VERSION": 1, "TTL": 10, "RELOAD-URI": "/steering/bench/hls?sid=s1&r=r1&p=cdn-a&h=cdn-a", "PATHWAY-PRIORITY": ["cdn-a", "cdn-b", "cdn-c"]}'
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode()),
            (b"cache-control", b"no-store"), (b"access-control-allow-origin", b"*")]})
        await send({"type": "http.response.body", "body": BODY})
else:
    from mainevent.control.entitlement import RegionTable
    from mainevent.control.settings import SteeringSettings
    from mainevent.control.steering.server import build_steering
    rt = build_steering(SteeringSettings(min_reload_interval_s=0), ["cdn-a", "cdn-b", "cdn-c"],
                        regions=RegionTable([("127.0.0.0/8", "local")]))
    inner = rt.app
    async def app(scope, receive, send):
        if scope["type"] == "http":
            await inner(scope, receive, send)
from mainevent.common.gc_tuning import tune_gc; tune_gc()  # as the control plane does
uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
            log_level="warning", access_log=False, lifespan="off")
"""

LUA = """
counter = 0
sessions = {sessions}
regions = {regions}
request = function()
  counter = counter + 1
  local i = counter % sessions
  return wrk.format("GET", "/steering/bench/hls?sid=s" .. i .. "&r=r" .. (i % regions) .. "&p=cdn-a&_HLS_pathway=cdn-a")
end
{delay}
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(kind: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-c", SERVER, kind, str(port)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{kind} server did not start")


def wrk(
    binary: str, port: int, duration: int, connections: int, script: Path
) -> tuple[float, float, int]:
    """(requests/s, p99 ms, non-2xx) of one wrk run pinned to core 1."""
    out = subprocess.run(
        ["taskset", "-c", "1", binary, "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
         "-s", str(script), f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, p99, int(bad.group(1)) if bad else 0


def http_bench(args: argparse.Namespace, tmp: Path) -> None:
    binary = ensure_wrk()
    if binary is None or shutil.which("taskset") is None:
        print("HTTP part skipped: needs wrk and taskset (apt-get install wrk)")
        return
    full = tmp / "full.lua"
    full.write_text(LUA.format(sessions=SESSIONS_HTTP, regions=REGIONS, delay=""))
    results: dict[str, list[tuple[float, float, int]]] = {"bare": [], "steering": []}
    servers = {kind: start_server(kind) for kind in results}
    try:
        for _p, port in servers.values():  # warm-up: every session placed once
            wrk(binary, port, 3, args.connections, full)
        for _ in range(args.rounds):
            for kind, (_p, port) in servers.items():
                results[kind].append(wrk(binary, port, args.duration, args.connections, full))
        med = {k: statistics.median(r[0] for r in v) for k, v in results.items()}
        p99 = {k: statistics.median(r[1] for r in v) for k, v in results.items()}
        bad = {k: sum(r[2] for r in v) for k, v in results.items()}
        print(
            f"Full load, one core (taskset -c 0), wrk -t1 -c{args.connections} -d{args.duration}s "
            f"on core 1, median of {args.rounds}:"
        )
        for k in results:
            print(f"  {k:<9} {med[k]:>9,.0f} manifests/s  p99 {p99[k]:6.2f} ms  non-2xx {bad[k]}")
        print(f"  ratio steering/bare: {med['steering'] / med['bare']:.2f}")
        # Half load: each of c connections waits so that c / (delay + latency) ≈ rate / 2.
        conns = 16
        target = med["steering"] / 2
        delay_ms = max(0.0, 1000 * conns / target)
        half = tmp / "half.lua"
        half.write_text(
            LUA.format(
                sessions=SESSIONS_HTTP,
                regions=REGIONS,
                delay=f"delay = function() return {delay_ms:.3f} end",
            )
        )
        print(
            f"Half load (target {target:,.0f}/s: wrk -c{conns}, delay {delay_ms:.2f} ms per request):"
        )
        for kind, (_p, port) in servers.items():
            rps, p, n = wrk(binary, port, args.duration, conns, half)
            print(f"  {kind:<9} {rps:>9,.0f} manifests/s  p99 {p:6.2f} ms  non-2xx {n}")
    finally:
        for proc, _port in servers.values():
            proc.terminate()
            proc.wait(10)


def policy_bench(n: int) -> None:
    isps = 10
    policy = SteeringPolicy(
        [CdnSpec(c) for c in CDNS],
        SteeringConfig(ttl_s=10, failure_drain_share=0.5, session_timeout_s=3600),
    )
    states = [
        SessionState(f"s{i}", f"r{i % REGIONS}", f"isp{i % isps}", CDNS[i % 3]) for i in range(n)
    ]
    now = 1_900_000_000.0
    t0 = time.perf_counter()
    for st in states:
        policy.steer(st, now)
    placed = time.perf_counter() - t0
    down = CdnSignal(error_rate=1.0, availability=0.0, ttfb_p95_ms=2000.0, samples=10)
    up = CdnSignal(error_rate=0.0, availability=1.0, ttfb_p95_ms=40.0, samples=10)
    report = HealthReport(
        {
            (f"r{r}", f"isp{i}", c): down if c == "cdn-b" else up
            for r in range(REGIONS)
            for i in range(isps)
            for c in CDNS
        }
        | {(f"r{r}", ANY, c): down if c == "cdn-b" else up for r in range(REGIONS) for c in CDNS}
    )
    t0 = time.perf_counter()
    policy.update_health(report, now + 1)
    health = time.perf_counter() - t0
    t0 = time.perf_counter()
    for st in states:
        policy.steer(st, now + 10)
    again = time.perf_counter() - t0
    stats = policy.statistics()
    print(
        f"Policy, {n:,} sessions in {REGIONS} regions × {isps} ISPs × {len(CDNS)} CDNs "
        f"({len(report.signals)} links):"
    )
    print(f"  placement          {placed:7.2f} s  ({placed / n * 1e6:5.2f} µs/session)")
    print(f"  health update      {health * 1000:7.2f} ms  (all links, cdn-b down everywhere)")
    print(
        f"  re-evaluation      {again:7.2f} s  ({again / n * 1e6:5.2f} µs/session; "
        f"{stats.moves:,} moved off cdn-b this TTL, {stats.per_cdn['cdn-b']:,} left to move)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--sessions", type=int, default=1_000_000)
    ap.add_argument("--no-http", action="store_true")
    args = ap.parse_args()
    print(
        f"load average before: {open('/proc/loadavg').read().strip()}  ({time.strftime('%Y-%m-%d %H:%M:%S %Z')})"
    )
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_http:
            http_bench(args, Path(tmp))
    policy_bench(args.sessions)
    print(f"load average after: {open('/proc/loadavg').read().strip()}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
