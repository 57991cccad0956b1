"""Edge hit path vs nginx, side by side, and origin fetches per new object per shield.

    .venv/bin/python bench/edge.py [--duration 8] [--rounds 2] [--connections 64] [--storm 500]

Both shields front the same origin stand-in (`mainevent.media.edge.stub`, in this process) and run
pinned to core 0 (`taskset -c 0`): our edge (`mainevent edge serve`, uvloop + httptools, one
process) and Debian nginx (one worker, proxy_cache + proxy_cache_lock, config from
`mainevent.media.edge.nginx`). Load comes from `wrk -t1` pinned to core 1 (installed with apt when
missing and root). Hit-path objects: a ~2 KB playlist and a ~500 KB segment, both cached before
measuring. Then, for new objects that do not exist yet, a storm of `--storm` concurrent requests
from a separate process hits each shield and the origin's fetch count per object is printed.
Rounds alternate ours/nginx so background load affects both alike; medians are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from mainevent.media.edge.nginx import NginxShield, find_nginx, write_config
from mainevent.media.edge.stub import StubObject, StubUpstream

T = TypeVar("T")
PLAYLIST = "/live/bench/v360/index.m3u8"
SEGMENT = "/live/bench/v360/900000000.m4s"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start") from None
            time.sleep(0.05)


class OriginThread:
    """The stub origin on its own event loop in a thread of this process."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.stub: StubUpstream = self.call(self._make())

    async def _make(self) -> StubUpstream:
        stub = StubUpstream(hold_missing_s=30.0)
        await stub.start()
        return stub

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def publish(self, path: str, obj: StubObject) -> None:
        self.loop.call_soon_threadsafe(self.stub.publish, path, obj)

    def fetches(self, path: str) -> int:
        """Requests for `path` with any query (nginx sends `path?` with an empty one)."""
        return sum(n for t, n in self.stub.fetches.items() if t.partition("?")[0] == path)

    def stop(self) -> None:
        self.call(self.stub.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def ensure_wrk() -> str | None:
    wrk = shutil.which("wrk")
    if wrk is None and os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing Debian wrk…", flush=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "wrk"],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            stdout=subprocess.DEVNULL,
            check=False,
        )
        wrk = shutil.which("wrk")
    return wrk


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def run_wrk(wrk: str, url: str, duration: int, connections: int) -> tuple[float, float]:
    """(requests/s, p99 ms) from `wrk -t1 --latency` pinned to core 1."""
    out = subprocess.run(
        ["taskset", "-c", "1", wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        print(f"  warning: {errors.group(1)} non-2xx responses from {url}", flush=True)
    return rps, p99


def storm_fetches(origin: OriginThread, base: str, path: str, n: int) -> tuple[int, int, int]:
    """Fire `n` concurrent requests (separate process) for an unpublished `path`; publish it
    once the requests are in; returns (origin fetches, 200 responses, distinct bodies)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mainevent.media.edge.storm", base + path, str(n)],
        stdout=subprocess.PIPE,
    )
    time.sleep(4.0)  # the storm connects (2.5 s) then fires; nginx/ours hold all of it upstream
    origin.publish(path, StubObject(os.urandom(200_000)))
    out, _ = proc.communicate(120)
    data = json.loads(out.decode().strip().splitlines()[-1])
    return origin.fetches(path), data["statuses"].get("200", 0), len(data["digests"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--storm", type=int, default=500, help="concurrent requests per new object")
    ap.add_argument("--objects", type=int, default=3, help="new objects stormed per shield")
    args = ap.parse_args()

    nginx = find_nginx()
    wrk = ensure_wrk()
    if nginx is None or wrk is None or shutil.which("taskset") is None:
        print("bench/edge.py needs Debian nginx, wrk and taskset (make setup installs nginx)")
        return 1
    os.sched_setaffinity(0, {1})  # origin stand-in and bookkeeping on core 1 with wrk
    origin = OriginThread()
    origin.publish(
        PLAYLIST,
        StubObject(
            b"#EXTM3U\n" + b"#EXTINF:2.0,\nx.m4s\n" * 110,
            "max-age=3600",
            "application/vnd.apple.mpegurl",
        ),
    )
    origin.publish(SEGMENT, StubObject(os.urandom(500_000)))
    tmp = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ours_port, nginx_port = free_port(), free_port()
        ours = subprocess.Popen(
            [
                "taskset",
                "-c",
                "0",
                sys.executable,
                "-m",
                "mainevent.cli",
                "edge",
                "serve",
                "--name",
                "shield",
                "--upstream",
                origin.stub.url,
                "--port",
                str(ours_port),
                "--log-level",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
        )
        procs.append(ours)
        conf = write_config(
            NginxShield(
                nginx_port,
                "127.0.0.1",
                origin.stub.port,
                tmp,
                access_log=False,
                user="root" if os.geteuid() == 0 else None,
            )
        )
        ngx = subprocess.Popen(
            [
                "taskset",
                "-c",
                "0",
                nginx,
                "-p",
                str(tmp),
                "-c",
                str(conf),
                "-e",
                str(tmp / "error.log"),
            ],
            stdout=subprocess.DEVNULL,
        )
        procs.append(ngx)
        wait_port(ours_port, ours, "our edge")
        wait_port(nginx_port, ngx, "nginx")
        servers = {
            "ours": f"http://127.0.0.1:{ours_port}",
            "nginx": f"http://127.0.0.1:{nginx_port}",
        }
        import httpx

        for base in servers.values():
            for path in (PLAYLIST, SEGMENT, PLAYLIST, SEGMENT):
                httpx.get(base + path, timeout=10).raise_for_status()
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for rnd in range(args.rounds):
            for label, path in (("playlist 2 KB", PLAYLIST), ("segment 500 KB", SEGMENT)):
                for name, base in servers.items():
                    r = run_wrk(wrk, base + path, args.duration, args.connections)
                    results.setdefault((label, name), []).append(r)
                    print(
                        f"  round {rnd + 1} {label:<15} {name:<6} {r[0]:>10.0f} req/s  p99 {r[1]:.2f} ms",
                        flush=True,
                    )
        print()
        print(
            f"Hit path, one core each (taskset -c 0), wrk -t1 -c{args.connections} -d{args.duration}s on core 1, median of {args.rounds}"
        )
        print(
            f"{'object':<16}{'ours req/s':>12}{'nginx req/s':>13}{'ratio':>8}{'ours p99':>11}{'nginx p99':>11}"
        )
        for label in ("playlist 2 KB", "segment 500 KB"):
            o = results[(label, "ours")]
            n = results[(label, "nginx")]
            orps, nrps = statistics.median(r[0] for r in o), statistics.median(r[0] for r in n)
            op99, np99 = statistics.median(r[1] for r in o), statistics.median(r[1] for r in n)
            print(
                f"{label:<16}{orps:>12.0f}{nrps:>13.0f}{orps / nrps:>7.2f}×{op99:>9.2f}ms{np99:>9.2f}ms"
            )
        print()
        print(
            f"Origin fetches per new object per shield ({args.storm} concurrent requests from a separate process)"
        )
        for name, base in servers.items():
            counts = []
            for i in range(args.objects):
                path = f"/live/bench/v360/{900000100 + i + (0 if name == 'ours' else 500)}.m4s"
                fetches, ok, digests = storm_fetches(origin, base, path, args.storm)
                counts.append(fetches)
                print(
                    f"  {name:<6} {path}: {fetches} origin fetch(es), {ok}/{args.storm} × 200, {digests} distinct bodies",
                    flush=True,
                )
            print(f"  {name:<6} mean {statistics.mean(counts):.2f} origin fetches per object")
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT if p is procs[0] else signal.SIGQUIT)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        origin.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
