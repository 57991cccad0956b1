"""Join storm against the playback API: saturation rate, latency at 50 % / 100 %, 5x overload.

Each server runs in a subprocess pinned to one core and is driven from this process, pinned to
the other, over loopback with a small raw HTTP/1.1 client (an httpx client would saturate before
the server). Latency is measured from each request's *intended* send time (open loop, no
coordinated omission). In the same run, with the same client and the same request bytes:

1. the reference: a bare FastAPI endpoint (uvicorn, uvloop, httptools) that validates the body
   and answers a small JSON object -- what the framework alone costs per request;
2. with ``--route``: `mainevent control serve` with ``lean_playback=false`` (every start through
   the FastAPI route, as before the lean path);
3. `mainevent control serve` as configured by default (one worker, SQLite).

For each control plane, every account first starts once (the waiting room: decisions looked up
and cached, reported as the cold rate); saturation and the load phases then measure grants with
cached decisions, the state of a join storm after pre-authorisation.

Run: `.venv/bin/python bench/playback_burst.py [--seconds 4] [--route]` (about two minutes on a
quiet machine). `--in-process N` instead measures CPU time per cached grant without sockets:
the lean path against the route and the bare reference, called as ASGI apps.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mainevent.control.auth import DevIdentityProvider, hash_api_key
from mainevent.control.db import Account, open_database
from mainevent.control.schemas import PlaybackRequest
from mainevent.control.settings import DEV_IDP_SECRET

ADMIN_KEY = "bench-admin-key"
ACCOUNTS = 20_000
PLAYING = 400


@dataclass
class Result:
    """Outcomes of one phase."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {"start": [], "refresh": []})
    #: Of each served request's latency, the part before it was written (no idle connection, or
    #: the load process itself behind): what the server cannot be blamed for.
    send_lag: dict[str, list[float]] = field(default_factory=lambda: {"start": [], "refresh": []})
    codes: dict[str, dict[int, int]] = field(default_factory=lambda: {"start": {}, "refresh": {}})
    missing_retry_after: int = 0
    sent: int = 0
    elapsed: float = 0.0
    send_time: float = 0.0
    planned_rate: float = 0.0
    lost: int = 0
    #: Requests that found every connection of the pool busy and waited for one to free up.
    backlogged: int = 0
    conns: int = 0

    def add(self, kind: str, status: int, latency: float, lag: float, retry_after: bool) -> None:
        self.codes[kind][status] = self.codes[kind].get(status, 0) + 1
        if status == 200:
            self.latencies[kind].append(latency)
            self.send_lag[kind].append(lag)
        elif status in (429, 503) and not retry_after:
            self.missing_retry_after += 1


def pct(values: list[float], q: float) -> float:
    """q-th percentile in milliseconds."""
    if not values:
        return float("nan")
    s = sorted(values)
    return 1000 * s[min(len(s) - 1, int(q / 100 * len(s)))]


class Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w)

    async def request(self, raw: bytes) -> tuple[int, bool, bytes]:
        self.writer.write(raw)
        line = await self.reader.readline()
        status = int(line.split()[1])
        length, retry = 0, False
        while True:
            h = await self.reader.readline()
            if h in (b"\r\n", b""):
                break
            name, _, value = h.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"retry-after":
                retry = True
        body = await self.reader.readexactly(length) if length else b""
        return status, retry, body


def post(path: str, jwt: str, body: dict[str, object]) -> bytes:
    data = json.dumps(body).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {jwt}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode() + data


class Load:
    """Builds requests: new starts by fresh viewers/devices, refreshes by already-playing sessions."""

    def __init__(self, idp: DevIdentityProvider) -> None:
        self.jwts = [idp.mint(f"acc{i}", ttl_s=3600) for i in range(ACCOUNTS)]
        self.n = 0
        self.playing: list[tuple[str, str, str]] = []  # (jwt, session, token)

    def start(self) -> bytes:
        self.n += 1
        return post(
            "/v1/events/bell/playback",
            self.jwts[self.n % ACCOUNTS],
            {"device": {"id": f"dev{self.n}"}},
        )

    def refresh(self) -> bytes:
        jwt, sid, token = random.choice(self.playing)
        return post(f"/v1/sessions/{sid}/refresh", jwt, {"token": token})


async def closed_loop(
    port: int, load: Load, seconds: float, conns: int, limit: int | None = None, quiet: bool = False
) -> tuple[float, int]:
    """Saturation: `conns` connections, each sending its next new start as soon as it is answered.

    Granted starts per second and the number of other answers; ``limit``: stop after that many
    requests (or ``seconds``).
    """
    res = Result()
    gen = _OpenLoop(res)
    deadline = time.perf_counter() + seconds
    plan = [load.start() for _ in range(limit or int(seconds * 20_000))]
    feed = iter(plan)

    def refill(conn: _Client) -> bool:
        raw = next(feed, None) if time.perf_counter() < deadline else None
        if raw is None:
            return False
        gen.outstanding += 1
        conn.send("start", raw, time.perf_counter())
        return True

    gen.refill = refill
    gen.all_submitted = True  # closed loop: done when the last in-flight request is answered
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    for _ in range(conns):
        transport, proto = await loop.create_connection(lambda: _Client(gen), "127.0.0.1", port)
        proto.transport = transport
        refill(proto)
    await asyncio.wait_for(gen.finished.wait(), seconds + 60)
    elapsed = time.perf_counter() - t0
    for c in gen.idle:
        if c.transport is not None:
            c.transport.close()
    others = {k: v for k, v in res.codes["start"].items() if k != 200}
    if others and not quiet:
        print(f"    (closed loop: answers other than 200: {others})")
    return res.codes["start"].get(200, 0) / elapsed, sum(others.values()) + gen.lost


class _Client(asyncio.Protocol):
    """One keep-alive connection of the open-loop generator: callbacks only, no task per request."""

    def __init__(self, gen: _OpenLoop) -> None:
        self.gen = gen
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.pending: tuple[str, float, float] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.Transport):
            self.transport = transport

    def send(self, kind: str, raw: bytes, intended: float) -> None:
        assert self.transport is not None
        self.pending = (kind, intended, time.perf_counter())
        self.transport.write(raw)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pending is not None:  # the server closed a connection with a request outstanding
            self.pending = None
            self.gen.lost += 1
            self.gen.outstanding -= 1
            if self.gen.outstanding == 0 and self.gen.all_submitted:
                self.gen.finished.set()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        at = head.find(b"content-length:")
        length = (
            int(head[at + 15 : head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None])
            if at >= 0
            else 0
        )
        if len(self.buf) < end + 4 + length:
            return
        del self.buf[: end + 4 + length]
        assert self.pending is not None
        kind, intended, sent = self.pending
        self.pending = None
        self.gen.done(self, kind, int(head[9:12]), intended, sent, b"retry-after:" in head)


class _OpenLoop:
    """Sends planned requests at their intended times over a pre-opened connection pool."""

    def __init__(self, res: Result) -> None:
        self.res = res
        self.idle: list[_Client] = []
        self.backlog: collections.deque[tuple[str, bytes, float]] = collections.deque()
        self.outstanding = 0
        self.all_submitted = False
        self.lost = 0
        self.backlogged = 0
        self.finished = asyncio.Event()
        #: Closed-loop mode: called with a connection that became free; True if it sent again.
        self.refill: Callable[[_Client], bool] | None = None

    def submit(self, kind: str, raw: bytes, intended: float) -> None:
        self.outstanding += 1
        if self.idle:
            self.idle.pop().send(kind, raw, intended)
        else:
            self.backlogged += 1
            self.backlog.append((kind, raw, intended))

    def done(
        self, conn: _Client, kind: str, status: int, intended: float, sent: float, retry: bool
    ) -> None:
        self.res.add(kind, status, time.perf_counter() - intended, sent - intended, retry)
        self.outstanding -= 1
        if self.backlog:
            conn.send(*self.backlog.popleft())
        elif self.refill is None or not self.refill(conn):
            self.idle.append(conn)
        if self.outstanding == 0 and self.all_submitted:
            self.finished.set()


async def open_loop(
    port: int,
    load: Load,
    start_rate: float,
    refresh_rate: float,
    seconds: float,
    conns: int = 512,
) -> Result:
    """Fixed-rate arrivals of new starts and refreshes; latency from each request's intended send time.

    Requests are built and connections opened before the clock starts, and responses are parsed
    in protocol callbacks, so the single load core spends itself on sending and receiving.
    """
    res = Result()
    gen = _OpenLoop(res)
    loop = asyncio.get_running_loop()
    for _ in range(conns):
        transport, proto = await loop.create_connection(lambda: _Client(gen), "127.0.0.1", port)
        proto.transport = transport
        gen.idle.append(proto)
    total = start_rate + refresh_rate
    n = int(total * seconds)
    plan = []
    for _ in range(n):
        kind = "refresh" if random.random() < refresh_rate / total else "start"
        plan.append((kind, load.refresh() if kind == "refresh" else load.start()))
    t0 = time.perf_counter()
    i = 0
    while i < n:
        now = time.perf_counter()
        while i < n and t0 + i / total <= now:
            kind, raw = plan[i]
            gen.submit(kind, raw, t0 + i / total)
            i += 1
        if i < n:
            await asyncio.sleep(max(0.0, t0 + i / total - time.perf_counter()))
    res.send_time = max(1e-9, time.perf_counter() - t0)
    res.planned_rate = total
    gen.all_submitted = True
    if gen.outstanding:
        await asyncio.wait_for(gen.finished.wait(), 120)
    res.lost = gen.lost
    res.backlogged = gen.backlogged
    res.conns = conns
    res.sent = n
    res.elapsed = time.perf_counter() - t0
    for c in gen.idle:
        if c.transport is not None:
            c.transport.close()
    return res


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(port: int, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise SystemExit("control plane exited during start-up")
        try:
            c = await Conn.open(port)
            status, _, _ = await c.request(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
            c.writer.close()
            if status == 200:
                return
        except OSError:
            await asyncio.sleep(0.1)
    raise SystemExit("control plane did not start")


async def setup_event(port: int) -> None:
    c = await Conn.open(port)
    now = time.time()
    body: dict[str, object] = {
        "id": "bell",
        "title": "Bell",
        "starts_at": datetime.fromtimestamp(now - 60, UTC).isoformat(),
        "ends_at": datetime.fromtimestamp(now + 7200, UTC).isoformat(),
        "policy": {"subscription_tiers": ["premium"], "max_streams": 50},
    }
    steps: list[tuple[str, dict[str, object]]] = [("/v1/events", body)]
    steps += [
        ("/v1/events/bell/transitions", {"to": s}) for s in ("scheduled", "rehearsal", "live")
    ]
    for path, payload in steps:
        data = json.dumps(payload).encode()
        raw = (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
            f"Idempotency-Key: {path}-{payload.get('to', 'create')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode() + data
        status, _, text = await c.request(raw)
        if status not in (200, 201):
            raise SystemExit(f"setup failed: {path} {status} {text[:200]!r}")
    c.writer.close()


async def server_histograms(port: int) -> dict[str, list[tuple[float, int]]]:
    """Cumulative latency buckets per priority as measured by the server (arrival → response end),
    plus the admission and entitlement counters (under the pseudo-priority "counters", as
    ``(index, value)`` pairs in the order of ``COUNTERS``)."""
    c = await Conn.open(port)
    _, _, body = await c.request(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
    c.writer.close()
    out: dict[str, list[tuple[float, int]]] = {"counters": [(i, 0) for i in range(len(COUNTERS))]}
    for line in body.decode().splitlines():
        name, _, value = line.rpartition(" ")
        if name in COUNTERS:
            out["counters"][COUNTERS.index(name)] = (COUNTERS.index(name), int(float(value)))
        if line.startswith("mainevent_control_request_seconds_bucket"):
            labels, value = line.rsplit(" ", 1)
            prio = labels.split('priority="')[1].split('"')[0]
            le = labels.split('le="')[1].split('"')[0]
            out.setdefault(prio, []).append(
                (float("inf") if le == "+Inf" else float(le), int(value))
            )
    return out


COUNTERS = (
    'mainevent_control_admitted_total{priority="new_start"}',
    'mainevent_control_shed_total{priority="new_start"}',
    'mainevent_control_shed_late_total{priority="new_start"}',
    "mainevent_entitlement_lookups_total",
)


def server_counters(
    before: dict[str, list[tuple[float, int]]], after: dict[str, list[tuple[float, int]]]
) -> list[int]:
    """Increase of each of ``COUNTERS`` between two scrapes."""
    return [a - b for (_, a), (_, b) in zip(after["counters"], before["counters"], strict=True)]


def server_pct(
    before: dict[str, list[tuple[float, int]]],
    after: dict[str, list[tuple[float, int]]],
    prio: str,
    q: float,
) -> float:
    """q-th percentile (ms, bucket upper bound) of the server-side latency between two scrapes."""
    deltas = [(le, a - b) for (le, a), (_, b) in zip(after[prio], before[prio], strict=True)]
    total = deltas[-1][1]
    if total == 0:
        return float("nan")
    for le, cum in deltas:
        if cum >= q / 100 * total:
            return le * 1000
    return float("inf")


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages of the machine."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def runqueue_seconds(pid: int) -> float:
    """Time a process was ready to run but waited for its CPU (taken by other processes)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan")


def report(
    label: str,
    res: Result,
    before: dict[str, list[tuple[float, int]]],
    after: dict[str, list[tuple[float, int]]],
    cpu: tuple[float, float, float] | None = None,
) -> None:
    s, r = res.codes["start"], res.codes["refresh"]
    s_total, r_total = sum(s.values()), sum(r.values())
    print(
        f"  {label}: planned {res.planned_rate:,.0f} req/s, the load process achieved "
        f"{res.sent / res.send_time:,.0f} req/s ({res.sent} requests)"
        + (
            "  <- load-generator bound: client latencies include its own backlog"
            if res.sent / res.send_time < 0.9 * res.planned_rate
            else ""
        )
    )
    print(
        f"    new starts: {s_total} sent, codes {dict(sorted(s.items()))}; admitted: client p50 "
        f"{pct(res.latencies['start'], 50):.1f} ms p99 {pct(res.latencies['start'], 99):.1f} ms, "
        f"server p50 <= {server_pct(before, after, 'new_start', 50):.1f} ms "
        f"p99 <= {server_pct(before, after, 'new_start', 99):.1f} ms; "
        f"of it waiting to be sent p99 {pct(res.send_lag['start'], 99):.1f} ms "
        f"({res.backlogged} requests found all {res.conns} connections busy)"
    )
    if r_total:
        print(
            f"    refreshes:  {r_total} sent, served {100 * r.get(200, 0) / r_total:.1f} %; client p50 "
            f"{pct(res.latencies['refresh'], 50):.1f} ms p99 {pct(res.latencies['refresh'], 99):.1f} ms, "
            f"server p99 <= {server_pct(before, after, 'refresh', 99):.1f} ms"
        )
    others: dict[int | str, int] = {k: v for k, v in (s | r).items() if k not in (200, 429, 503)}
    if res.lost:
        others["connection closed without a response"] = res.lost
    print(
        f"    errors other than 429/503: {others or 'none'}; 429/503 without Retry-After: {res.missing_retry_after}"
    )
    admitted, shed, late, lookups = server_counters(before, after)
    print(
        f"    server: new starts admitted on arrival {admitted}, shed {shed} (of them {late} late, "
        f"when about to run); entitlement-store lookups {lookups}"
    )
    if cpu is not None:
        print(
            f"    CPU busy during the phase: server {100 * cpu[0]:.0f} %, load process "
            f"{100 * cpu[1]:.0f} %; the server waited for its core (other processes on it) "
            f"{1000 * cpu[2]:.0f} ms per second"
        )


def reference_app() -> object:
    """The bare-framework reference: a trivial FastAPI endpoint on the same server stack.

    Same method, path, headers and body as a playback start; it validates the body with the
    same pydantic model, reads the Authorization header and answers a small JSON object. No
    authentication, entitlement, session or token: what one request costs the framework alone.
    """
    from fastapi import FastAPI, Header

    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/events/{event_id}/playback")
    async def playback(
        event_id: str, body: PlaybackRequest, authorization: str | None = Header(None)
    ) -> dict[str, object]:
        return {"event": event_id, "device": body.device.id, "signed_in": authorization is not None}

    return app


def serve_reference(port: int) -> None:
    """Run :func:`reference_app` as `control serve` runs the control plane (uvloop, httptools)."""
    import gc

    import uvicorn

    app = reference_app()
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,  # type: ignore[arg-type]
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


async def start_server(
    argv: list[str], env: dict[str, str], core: int | None
) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv, "--port", str(port), env=env, stderr=asyncio.subprocess.DEVNULL
    )
    if core is not None:
        os.sched_setaffinity(proc.pid, {core})
    await wait_ready(port, proc)
    return proc, port


async def stop_server(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


async def saturate(
    port: int, proc: asyncio.subprocess.Process, load: Load, seconds: float
) -> tuple[float, float]:
    """Closed-loop saturation: granted requests per wall second and per second of server CPU.

    The second figure is what one core would do if the server had it to itself; on a shared
    machine the first one also counts the time other processes took the server's core.
    """
    cpu0, rq0, t0 = cpu_seconds(proc.pid), runqueue_seconds(proc.pid), time.perf_counter()
    rate, _ = await closed_loop(port, load, seconds, conns=64)
    wall = time.perf_counter() - t0
    cpu = cpu_seconds(proc.pid) - cpu0
    waited = runqueue_seconds(proc.pid) - rq0
    print(
        f"    (server CPU busy {100 * cpu / wall:.0f} % of the wall time; it waited for its core "
        f"{1000 * waited / wall:.0f} ms per second; load average {loadavg()})"
    )
    return rate, rate * wall / max(cpu, 1e-9)


async def warm_up(port: int, load: Load, conns: int = 16) -> tuple[float, int, int]:
    """The waiting room: every account starts until granted once (its decision is then cached).

    ``conns`` workers take accounts from a queue; a refused start (shed under load) goes back
    to the end of the queue. Returns the grant rate, the refusals and the store lookups.
    """
    before = await server_histograms(port)
    todo: collections.deque[int] = collections.deque(range(ACCOUNTS))
    refused = 0

    async def worker() -> None:
        nonlocal refused
        c = await Conn.open(port)
        try:
            while todo:
                i = todo.popleft()
                load.n += 1
                raw = post(
                    "/v1/events/bell/playback", load.jwts[i], {"device": {"id": f"dev{load.n}"}}
                )
                status, _, _ = await c.request(raw)
                if status != 200:
                    refused += 1
                    todo.append(i)
                    await asyncio.sleep(0.01)
        finally:
            c.writer.close()

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(conns):
            tg.create_task(worker())
    rate = ACCOUNTS / (time.perf_counter() - t0)
    lookups = server_counters(before, await server_histograms(port))[3]
    return rate, refused, lookups


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="mainevent-bench-"))
    template = tmp / "accounts.db"
    db = open_database(f"sqlite:///{template}")
    with db.write.begin() as s:
        now = datetime.now(UTC)
        s.add_all(
            Account(id=f"acc{i}", plan="premium", version=1, updated_at=now)
            for i in range(ACCOUNTS)
        )
    db.dispose()
    env = dict(os.environ) | {
        "MAINEVENT_CONTROL__DATA_DIR": str(tmp),
        "MAINEVENT_CONTROL__API_KEYS": json.dumps(
            [{"name": "bench", "role": "admin", "key_sha256": hash_api_key(ADMIN_KEY)}]
        ),
        "MAINEVENT_CONTROL__ACCOUNT_RATE": "1000",
        "MAINEVENT_CONTROL__ACCOUNT_BURST": "1000",
        "MAINEVENT_CONTROL__ADDRESS_RATE": "1000000",
        "MAINEVENT_CONTROL__ADDRESS_BURST": "1000000",
        # The warm-up's decisions must outlive the run (60 s by default; a slow warm-up on a
        # busy machine took longer than that).
        "MAINEVENT_CONTROL__DECISION_TTL_S": "3600",
    }
    cores = sorted(os.sched_getaffinity(0))
    server_core = cores[0] if len(cores) >= 2 else None
    if server_core is not None:
        os.sched_setaffinity(0, {cores[-1]})
    idp = DevIdentityProvider(
        secret=DEV_IDP_SECRET, issuer="mainevent-dev-idp", audience="mainevent"
    )
    print(
        f"playback burst: servers pinned to core {cores[0]}, load to core {cores[-1]}; "
        f"{ACCOUNTS} accounts, SQLite; load average {loadavg()}"
    )
    try:
        # 1. Reference: the bare framework, same client, same requests.
        proc, port = await start_server([__file__, "--serve-reference"], env, server_core)
        try:
            ref, ref_cpu = await saturate(port, proc, Load(idp), args.seconds)
            print(
                f"  reference (bare FastAPI endpoint, 64 connections back to back): {ref:,.0f} "
                f"req/s; {ref_cpu:,.0f} per second of server CPU"
            )
        finally:
            await stop_server(proc)
        modes = [("route", "false")] if args.route else []
        modes.append(("lean", "true"))
        for mode, lean in modes:
            db_file = tmp / f"control-{mode}.db"  # each control plane starts from the same state
            shutil.copyfile(template, db_file)
            proc, port = await start_server(
                ["-m", "mainevent.cli", "control", "serve"],
                env
                | {
                    "MAINEVENT_CONTROL__DATABASE_URL": f"sqlite:///{db_file}",
                    "MAINEVENT_CONTROL__LEAN_PLAYBACK": lean,
                },
                server_core,
            )
            try:
                await run_control(args, port, proc, idp, (ref, ref_cpu), mode)
            finally:
                await stop_server(proc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def run_control(
    args: argparse.Namespace,
    port: int,
    proc: asyncio.subprocess.Process,
    idp: DevIdentityProvider,
    reference: tuple[float, float],
    mode: str,
) -> None:
    ref, ref_cpu = reference
    label = {
        "route": "every request through the FastAPI route (lean_playback=false)",
        "lean": "cached decisions answered by the front (lean_playback=true, the default)",
    }[mode]
    print(f"control plane, {label}:")
    await setup_event(port)
    load = Load(idp)
    cold, refused, lookups = await warm_up(port, load)
    print(
        f"  waiting room (each account's first start, entitlement looked up in SQLite, "
        f"16 connections; refused starts retried): {cold:,.0f} authorisations/s, {refused} "
        f"refused, {lookups} store lookups"
    )
    c = await Conn.open(port)
    for _ in range(PLAYING):
        status, _, body = await c.request(load.start())
        if status == 200:
            g = json.loads(body)
            load.playing.append((load.jwts[load.n % ACCOUNTS], g["session_id"], g["token"]))
    c.writer.close()
    before = await server_histograms(port)
    sat, sat_cpu = await saturate(port, proc, load, args.seconds)
    lookups = server_counters(before, await server_histograms(port))[3]
    print(
        f"  saturation, cached decisions (64 connections back to back): {sat:,.0f} "
        f"authorisations/s = {sat / ref:.2f}x the reference; {sat_cpu:,.0f} per second of "
        f"server CPU = {sat_cpu / ref_cpu:.2f}x the reference's; {lookups} store lookups"
    )
    await asyncio.sleep(1)
    phases = [("50 % of saturation", 0.5, 0.0)]
    if mode == "lean" or args.route_phases:
        phases += [
            ("100 % of saturation", 1.0, 0.0),
            ("2.5x overload of new starts + refreshes at 20 % of saturation", 2.5, 0.2),
            ("5x overload of new starts + refreshes at 20 % of saturation", 5.0, 0.2),
        ]
    for phase, factor, refresh in phases:
        before = await server_histograms(port)
        cpu0, own0, t0 = cpu_seconds(proc.pid), time.process_time(), time.perf_counter()
        rq0 = runqueue_seconds(proc.pid)
        res = await open_loop(port, load, sat * factor, sat * refresh, args.seconds)
        wall = time.perf_counter() - t0
        cpu = (
            (cpu_seconds(proc.pid) - cpu0) / wall,
            (time.process_time() - own0) / wall,
            (runqueue_seconds(proc.pid) - rq0) / wall,
        )
        report(phase, res, before, await server_histograms(port), cpu)
        await asyncio.sleep(1)


def in_process(n: int) -> None:
    """CPU time per cached grant in this process, without sockets: the lean path's
    ``PlaybackFront.answer`` against the ASGI apps (control-plane route, bare reference) called
    directly with the same request (no uvicorn parsing, which favours the two ASGI figures)."""
    import math

    from mainevent.common.admission import AdmissionController, AdmissionPolicy, Admitted, Priority
    from mainevent.control.app import create_app
    from mainevent.control.entitlement import EventFacts, Policy
    from mainevent.control.lifecycle import EventStatus
    from mainevent.control.playback_front import PlaybackFront
    from mainevent.control.server import build_services
    from mainevent.control.settings import ControlSettings

    tmp = Path(tempfile.mkdtemp(prefix="mainevent-bench-"))
    try:
        settings = ControlSettings.model_validate(
            {"database_url": f"sqlite:///{tmp}/c.db", "account_burst": 1e9, "address_burst": 1e9}
        )
        services = build_services(settings)
        inf = (math.inf,) * 4
        services.admission = AdmissionController(
            AdmissionPolicy(max_queued=inf, delay_target=inf, delay_full=inf, max_wait=inf)
        )
        pb = services.playback
        now = time.time()
        pb.event_ttl_s = math.inf  # one snapshot for the whole measurement
        event = EventFacts(
            "bell", EventStatus.LIVE, now - 60, None, policy=Policy(max_streams=10**6)
        )
        pb._events["bell"] = (event, now)
        assert services.dev_idp is not None
        accounts = 2000
        jwts = [services.dev_idp.mint(f"acc{i}") for i in range(accounts)]
        for i in range(accounts):
            pb.decisions.core.put(f"acc{i}", "bell", None, now)
        reqs = [
            post("/v1/events/bell/playback", jwts[i % accounts], {"device": {"id": f"d{i}"}})
            for i in range(n)
        ]
        front = PlaybackFront(services)
        default = [(b"date", b"Sun, 06 Dec 2026 20:00:00 GMT"), (b"server", b"uvicorn")]

        def lean() -> None:
            for raw in reqs:
                ticket = services.admission.enqueue(Priority.NEW_START)
                assert isinstance(ticket, Admitted)
                out = front.answer(
                    raw, 0, len(raw), "bell", "127.0.0.1", time.monotonic(), ticket, default
                )
                assert out is not None
                assert out.startswith(b"HTTP/1.1 200")

        def asgi(app: object) -> None:
            async def one(raw: bytes) -> int:
                head, _, body = raw.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                headers = [
                    (k.strip().lower(), v.strip())
                    for k, _, v in (line.partition(b":") for line in lines[1:])
                ]
                scope = {
                    "type": "http",
                    "asgi": {"version": "3.0"},
                    "http_version": "1.1",
                    "method": "POST",
                    "scheme": "http",
                    "path": "/v1/events/bell/playback",
                    "raw_path": b"/v1/events/bell/playback",
                    "query_string": b"",
                    "root_path": "",
                    "headers": headers,
                    "client": ("127.0.0.1", 5000),
                    "server": ("127.0.0.1", 80),
                    "extensions": {},
                }
                status = 0

                async def receive() -> dict[str, object]:
                    return {"type": "http.request", "body": body, "more_body": False}

                async def send(message: dict[str, object]) -> None:
                    nonlocal status
                    if message["type"] == "http.response.start":
                        status = int(message["status"])  # type: ignore[call-overload]

                await app(scope, receive, send)  # type: ignore[operator]
                return status

            async def all_of_them() -> None:
                for raw in reqs:
                    assert await one(raw) == 200

            asyncio.run(all_of_them())

        route = create_app(services)
        reference = reference_app()
        results = {}
        for name, fn in (
            ("lean", lean),
            ("route", lambda: asgi(route)),
            ("reference", lambda: asgi(reference)),
        ):
            pb.sessions = type(pb.sessions)(settings.session_ttl_s)
            fn()  # warm (JWT cache, imports)
            pb.sessions = type(pb.sessions)(settings.session_ttl_s)
            t0 = time.process_time()
            fn()
            results[name] = (time.process_time() - t0) / n
        print(f"in process, CPU per cached grant ({n} requests, load average {loadavg()}):")
        for name, label in (
            ("reference", "bare FastAPI endpoint via ASGI (no uvicorn)"),
            ("route", "control-plane route via ASGI (no uvicorn)"),
            ("lean", "lean path, PlaybackFront.answer (request bytes to response bytes)"),
        ):
            per = results[name]
            print(
                f"  {label}: {1e6 * per:.1f} us = {1 / per:,.0f}/s of one core; "
                f"{results['reference'] / per:.2f}x the reference"
            )
        services.store.db.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    """Parse arguments and run the storm."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=4.0, help="duration of each phase")
    p.add_argument(
        "--route",
        action="store_true",
        help="also measure the control plane with lean_playback=false (saturation and 50 %%)",
    )
    p.add_argument(
        "--route-phases", action="store_true", help="with --route: all phases for the route too"
    )
    p.add_argument(
        "--in-process",
        type=int,
        metavar="N",
        default=0,
        help="only measure CPU per cached grant in this process, N requests per path",
    )
    p.add_argument("--serve-reference", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_reference:
        serve_reference(args.port)
        return
    if args.in_process:
        in_process(args.in_process)
        return
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
