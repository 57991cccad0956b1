"""`mainevent load`: the orchestrator. Sets up the control plane and the event, starts worker
processes of real headless players, drives the scheduled faults, scrapes the shield and the
control plane every second, prints progress, and writes the report.

The players go through the real playback API (`POST /v1/events/{id}/playback`, refreshes,
session ends) of a `mainevent control serve` it starts (SQLite, accounts seeded, CDN base URLs =
the stack's edges), then play the granted manifest URL through the granted edge with the
others as fallbacks. Every player sends from 127.0.0.1, so the per-address rate limit is lifted
(a 2,000-viewer NAT is not what is being rehearsed); the per-account limit stays.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import shutil
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from mainevent.commands.stack import free_port
from mainevent.control.auth import hash_api_key
from mainevent.control.db import Account, open_database
from mainevent.media.edge.server import ADMIN_HEADER
from mainevent.sim.load.plan import plan_viewers
from mainevent.sim.report import Panel, PanelKind, write_report
from mainevent.sim.scenario import FaultKind, Scenario
from mainevent.testing.probes import metric

__all__ = ["LoadOptions", "LoadResult", "StackTargets", "run_load"]

ADMIN_KEY = "mainevent-load-admin"
GENERATOR_CPU_LIMIT = 0.9
"""A worker process busier than this (p95 of its per-second CPU share) is saturated."""
GENERATOR_LAG_LIMIT_MS = 250.0
"""A worker whose event loop wakes this late (p95) is saturated: its players' timings are its own."""


@dataclass(slots=True)
class _Window:
    """The first and the last of a series of metric snapshots (taken inside a time window)."""

    first: dict[str, float] | None = None
    last: dict[str, float] | None = None

    def see(self, snap: dict[str, float]) -> None:
        if self.first is None:
            self.first = snap
        else:
            self.last = snap

    def delta(self) -> dict[str, float]:
        """last − first per key; empty without two snapshots."""
        if self.first is None or self.last is None:
            return {}
        return {k: self.last[k] - self.first[k] for k in self.first}


@dataclass(frozen=True, slots=True)
class StackTargets:
    """The running stack the players are sent to."""

    event: str
    edges: dict[str, str]
    """Edge name → base URL (`cdn-a` → `http://127.0.0.1:…`)."""
    edge_admin_secret: str | None = None
    shield_url: str | None = None
    feed_control: Callable[[str], None] | None = None
    """Feed drill (`drop`, `restart`) when the run owns the venue feed."""


@dataclass(frozen=True, slots=True)
class LoadOptions:
    scenario: Scenario
    out_dir: Path
    viewers: int | None = None
    compress: float = 1.0
    """Event seconds per real second for the schedule (media always plays in real time)."""
    processes: int = 2
    refresh_every_s: float = 20.0
    """Real seconds between token refreshes of a playing session."""


@dataclass(slots=True)
class LoadResult:
    summary: dict[str, Any]
    report: Path
    viewers: list[dict[str, Any]] = field(default_factory=list)
    calibration: dict[str, list[float]] = field(default_factory=dict)
    """Latency samples (ms) during the scenario, the `sim.calibrate.calibrated` inputs: the
    players' start-up steps (`startup_step_ms`), and `GET /healthz` to the edges (`edge_ms`) and
    the control plane (`control_ms`) every second."""


def _pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]


async def _start_control(
    opts: LoadOptions, targets: StackTargets, n: int
) -> tuple[asyncio.subprocess.Process, str, Path]:
    work = opts.out_dir / "control"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    url = f"sqlite:///{work}/control.db"
    db = open_database(url)
    with db.write.begin() as s:
        now = datetime.now(UTC)
        s.add_all(
            Account(id=f"acc{i}", plan="premium", version=1, updated_at=now) for i in range(n)
        )
    db.dispose()
    port = free_port()
    env = dict(os.environ) | {
        "MAINEVENT_CONTROL__DATABASE_URL": url,
        "MAINEVENT_CONTROL__DATA_DIR": str(work),
        "MAINEVENT_CONTROL__API_KEYS": json.dumps(
            [{"name": "load", "role": "admin", "key_sha256": hash_api_key(ADMIN_KEY)}]
        ),
        "MAINEVENT_CONTROL__CDNS": json.dumps(targets.edges),
        "MAINEVENT_CONTROL__ADDRESS_RATE": "1000000",
        "MAINEVENT_CONTROL__ADDRESS_BURST": "1000000",
        "MAINEVENT_CONTROL__TOKEN_TTL_S": "3600",
    }
    log = open(work / "control.log", "wb")  # noqa: ASYNC230 - set-up, before any load
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mainevent.cli",
        "control",
        "serve",
        "--port",
        str(port),
        env=env,
        stdout=log,
        stderr=log,
    )
    log.close()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90  # a shared, loaded machine starts it slowly
    async with httpx.AsyncClient(base_url=base, timeout=5) as c:
        while True:
            if proc.returncode is not None or time.monotonic() > deadline:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                raise RuntimeError(f"control plane did not start (see {work / 'control.log'})")
            try:
                if (await c.get("/healthz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    return proc, base, work


async def _admin(c: httpx.AsyncClient, path: str, body: dict[str, Any]) -> None:
    r = await c.post(
        path,
        json=body,
        headers={
            "Authorization": f"Bearer {ADMIN_KEY}",
            "Idempotency-Key": f"{path}-{body.get('to', 'create')}",
        },
    )
    if r.status_code not in (200, 201):
        raise RuntimeError(f"control-plane setup failed: {path}: {r.status_code} {r.text[:300]}")


async def run_load(
    opts: LoadOptions, targets: StackTargets, say: Callable[[str], None] = print
) -> LoadResult:
    """Run the whole load test against `targets`; returns the summary and the report path."""
    sc = opts.scenario
    plans = plan_viewers(sc, opts.viewers)
    n = len(plans)
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    proc, control_url, work = await _start_control(opts, targets, n)
    records: list[dict[str, Any]] = []
    ticks: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
    scrapes: list[tuple[float, float, float, float]] = []  # t, origin fetches, shed, admitted
    probes: dict[str, list[float]] = {"edge_ms": [], "control_ms": []}
    # first and last scrape inside the scenario window: the shield's origin fetches by object
    # type, and the control plane's own time for new starts (sum and count)
    by_type = _Window()
    served = _Window()
    err_logs: list[BinaryIO] = []
    try:
        workers = []
        per = math.ceil(n / max(1, opts.processes))
        for w in range(max(1, opts.processes)):
            chunk = plans[w * per : (w + 1) * per]
            if not chunk:
                continue
            cfg_path = work / f"worker{w}.json"
            cfg_path.write_text(
                json.dumps(
                    {
                        "plans": [p.to_json() for p in chunk],
                        "start_s": sc.start_s,
                        "compress": opts.compress,
                        "event": targets.event,
                        "control_url": control_url,
                        "refresh_every_s": opts.refresh_every_s,
                    }
                )
            )
            err_logs.append((opts.out_dir / f"worker{w}.err").open("wb"))
            workers.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "mainevent.sim.load.worker",
                    str(cfg_path),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    # its warnings and tracebacks (and a task dump on SIGUSR1) stay readable
                    stderr=err_logs[-1],
                    limit=1 << 24,
                )
            )
        for p in workers:
            assert p.stdout is not None
            line = await asyncio.wait_for(p.stdout.readline(), 120)
            if not line.startswith(b'{"type": "ready"'):
                raise RuntimeError(f"a load worker failed to start: {line[:200]!r}")
        t0 = time.time() + 3.0
        bell = t0 + (0.0 - sc.start_s) / opts.compress
        end = t0 + (sc.end_s - sc.start_s) / opts.compress
        cdn_order = [c.name for c in sc.cdns if c.name in targets.edges] or list(targets.edges)
        async with httpx.AsyncClient(base_url=control_url, timeout=10) as c:
            await _admin(
                c,
                "/v1/events",
                {
                    "id": targets.event,
                    "title": f"load: {sc.name}",
                    "starts_at": datetime.fromtimestamp(bell, UTC).isoformat(),
                    "ends_at": datetime.fromtimestamp(end + 600, UTC).isoformat(),
                    "policy": {"subscription_tiers": ["premium"], "max_streams": 5},
                    "cdns": cdn_order,
                },
            )
            for to in ("scheduled", "rehearsal"):
                await _admin(c, f"/v1/events/{targets.event}/transitions", {"to": to})
        for p in workers:
            assert p.stdin is not None
            p.stdin.write(f"{t0!r}\n".encode())
            await p.stdin.drain()
            p.stdin.close()
        say(
            f"load: {n} players in {len(workers)} processes; bell in {bell - time.time():.0f} s, "
            f"end in {end - time.time():.0f} s (compression ×{opts.compress:g})"
        )

        async def read(w: int, p: asyncio.subprocess.Process) -> None:
            assert p.stdout is not None
            async for line in p.stdout:
                rec = json.loads(line)
                if rec["type"] == "tick":
                    ticks[int(rec["t"] - bell)][w] = rec
                else:
                    records.append(rec)
            await p.wait()

        async def scrape() -> None:
            async with httpx.AsyncClient(timeout=5) as c:
                while True:
                    origin = shed = admitted = math.nan
                    # this scrape falls inside the scenario window (decided once, at its start)
                    inside = sc.start_s <= (time.time() - bell) * opts.compress <= sc.end_s
                    # calibration inputs: how long a trivial request takes on this machine now
                    for base, into in [
                        *((e, probes["edge_ms"]) for e in targets.edges.values()),
                        (control_url, probes["control_ms"]),
                    ]:
                        t_probe = time.perf_counter()
                        try:
                            (await c.get(f"{base.rstrip('/')}/healthz")).raise_for_status()
                        except httpx.HTTPError:
                            continue
                        if inside:
                            into.append((time.perf_counter() - t_probe) * 1000)
                    try:
                        if targets.shield_url:
                            text = (await c.get(f"{targets.shield_url}/metrics")).text
                            origin = metric(text, "edge_upstream_fetches_total")
                            if inside:
                                by_type.see(
                                    {
                                        t: metric(text, "edge_upstream_fetches_total", type=t)
                                        for t in ("playlist", "segment", "init")
                                    }
                                )
                        text = (await c.get(f"{control_url}/metrics")).text
                        if inside:
                            served.see(
                                {
                                    k: metric(
                                        text,
                                        f"mainevent_control_request_seconds_{k}",
                                        priority="new_start",
                                    )
                                    for k in ("sum", "count")
                                }
                            )
                        shed = metric(text, "mainevent_control_shed_total")
                        admitted = metric(text, "mainevent_control_admitted_total")
                    except httpx.HTTPError:
                        pass
                    scrapes.append((time.time() - bell, origin, shed, admitted))
                    await asyncio.sleep(1.0)

        async def faults() -> None:
            async with httpx.AsyncClient(timeout=5) as c:
                await _sleep_until(bell)
                await _admin(
                    c, f"{control_url}/v1/events/{targets.event}/transitions", {"to": "live"}
                )
                say("T+0: the bell (event live)")
                for f, on in sorted(
                    _fault_steps(sc), key=lambda x: x[0].at_s + (0 if x[1] else x[0].duration_s)
                ):
                    at = (
                        t0
                        + ((f.at_s if on else f.at_s + f.duration_s) - sc.start_s) / opts.compress
                    )
                    await _sleep_until(at)
                    say(await _apply_fault(c, targets, f, on))

        async def progress() -> None:
            while True:
                await asyncio.sleep(5.0)
                now = int(time.time() - bell)
                latest = ticks.get(now) or ticks.get(now - 1) or {}
                playing: Counter[str] = Counter()
                waiting = 0
                for rec in latest.values():
                    playing.update(rec["playing"])
                    waiting += rec["waiting"]
                starts = [
                    r["startup_s"] for r in records if r["type"] == "viewer" and r.get("startup_s")
                ]
                shed = sum(1 for r in records if r["type"] == "auth" and r["status"] == 503)
                say(
                    f"  T{now:+5d} s  playing {sum(playing.values()):5d} "
                    f"({', '.join(f'{k} {v}' for k, v in sorted(playing.items()))})  waiting {waiting:5d}  "
                    f"sessions done {len(starts):5d}  shed {shed}"
                )

        async with asyncio.TaskGroup() as tg:
            helpers = [
                tg.create_task(scrape()),
                tg.create_task(faults()),
                tg.create_task(progress()),
            ]
            async with asyncio.TaskGroup() as readers:
                for i, p in enumerate(workers):
                    readers.create_task(read(i, p))
            for h in helpers:
                h.cancel()
    finally:
        for log in err_logs:
            log.close()
        async with httpx.AsyncClient(timeout=5) as c:
            for f, on in _fault_steps(sc):
                if not on:
                    try:
                        await _apply_fault(c, targets, f, False)
                    except (httpx.HTTPError, RuntimeError):
                        pass
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)
    summary, panels = _summarise(sc, opts, n, records, ticks, scrapes)
    summary["origin_fetches_by_type"] = {t: round(v) for t, v in by_type.delta().items()}
    # The control plane's own time per new start (arrival to end of response, its entitlement
    # lookup included), mean over the window: the simulator's `control.new_start_ms` when
    # calibrated (a light run: nothing queues, so it is the service time).
    d = served.delta()
    if d.get("count", 0) > 0:
        probes["new_start_ms"] = [d["sum"] / d["count"] * 1000]
        summary["control_new_start_ms"] = probes["new_start_ms"][0]
    # The players' own start-up (play request to the playhead moving, authorisation excluded,
    # as each player saw it, its event loop included), per step: the service time of the
    # simulator's start-up sequence of `startup_requests` sequential steps. One sample per
    # session (its mean step): the steps of one start share the moment and the machine, so the
    # simulator takes them at one quantile.
    steps = max(1, sc.delivery.startup_requests)
    probes["startup_step_ms"] = [
        sum(r["report"]["startup_phases_s"]) / steps * 1000
        for r in records
        if r["type"] == "viewer" and r.get("report") and r["report"]["startup_phases_s"]
    ]
    for key, samples in probes.items():
        name = key.removesuffix("_ms")
        summary[f"probe_{name}_p50_ms"] = _pct(samples, 0.5)
        summary[f"probe_{name}_p95_ms"] = _pct(samples, 0.95)
    report = write_report(opts.out_dir, f"mainevent load: {sc.name}, {n} players", summary, panels)
    (opts.out_dir / "viewers.json").write_text(
        json.dumps([r for r in records if r["type"] == "viewer"])
    )
    return LoadResult(
        summary,
        report,
        [r for r in records if r["type"] == "viewer"],
        {k: sorted(v) for k, v in probes.items()},
    )


async def _sleep_until(t: float) -> None:
    delay = t - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


def _fault_steps(sc: Scenario) -> list[tuple[Any, bool]]:
    return [(f, on) for f in sc.faults for on in (True, False)]


async def _apply_fault(c: httpx.AsyncClient, targets: StackTargets, f: Any, on: bool) -> str:
    verb = "starts" if on else "ends"
    if f.kind is FaultKind.CDN_OUTAGE:
        base = targets.edges.get(f.cdn)
        if base is None or targets.edge_admin_secret is None:
            return f"fault {f.kind.value} on {f.cdn}: skipped (no such edge or no admin secret)"
        url = f"{base}/_edge/fault"
        headers = {ADMIN_HEADER: targets.edge_admin_secret}
        if on:
            body: dict[str, Any] = {"error_rate": 1.0}
            if f.region:
                body["region"] = f.region
            (await c.post(url, json=body, headers=headers)).raise_for_status()
        else:
            (await c.delete(url, headers=headers)).raise_for_status()
        return f"fault: {f.cdn} errors {'100 %' if on else 'cleared'}{' in ' + f.region if f.region else ''} ({verb})"
    if f.kind in (FaultKind.ENCODER_FAILURE, FaultKind.MANIFEST_STALL):
        if targets.feed_control is None:
            return (
                f"fault {f.kind.value}: skipped (the run does not own the feed; use --start-stack)"
            )
        await asyncio.to_thread(targets.feed_control, "drop" if on else "restart")
        return f"fault: venue feed {'cut' if on else 'restarted'} ({f.kind.value} {verb})"
    return f"fault {f.kind.value}: not driven by the load generator (simulator only)"


def _summarise(
    sc: Scenario,
    opts: LoadOptions,
    n: int,
    records: list[dict[str, Any]],
    ticks: dict[int, dict[int, dict[str, Any]]],
    scrapes: list[tuple[float, float, float, float]],
) -> tuple[dict[str, Any], list[Panel]]:
    viewers = [r for r in records if r["type"] == "viewer"]
    auths = [r for r in records if r["type"] == "auth"]
    reports = [r["report"] for r in viewers if r.get("report")]
    startups = [r["startup_s"] for r in viewers if r.get("startup_s") is not None]
    stall_s = sum(r["stall_time_s"] for r in reports)
    played_s = sum(r["played_s"] for r in reports)
    grants = [a["latency_s"] for a in auths if a["kind"] != "refresh" and a["status"] == 200]
    refresh_ok = [a["latency_s"] for a in auths if a["kind"] == "refresh" and a["status"] == 200]
    codes = Counter(f"{a['kind']} {a['status']}" for a in auths)
    origin = [
        s[1]
        for s in scrapes
        if not math.isnan(s[1]) and sc.start_s <= s[0] * opts.compress <= sc.end_s
    ]
    fetches_during = origin[-1] - origin[0] if len(origin) >= 2 else math.nan
    latency_p50 = [r["latency"]["p50_s"] for r in reports if r["latency"]["p50_s"] is not None]
    summary: dict[str, Any] = {
        "scenario": sc.name,
        "players": n,
        "compression": opts.compress,
        "processes": opts.processes,
        "sessions": len(viewers),
        "sessions_started": len(startups),
        "sessions_refused": sum(1 for r in viewers if r.get("refused")),
        "sessions_fatal": sum(1 for r in reports if r.get("fatal")),
        "startup_p50_s": _pct(startups, 0.5),
        "startup_p95_s": _pct(startups, 0.95),
        "stalls": sum(r["stalls"] for r in reports),
        "rebuffer_ratio": stall_s / (stall_s + played_s) if stall_s + played_s > 0 else 0.0,
        "latency_p50_s": _pct(latency_p50, 0.5),
        "latency_p95_s": _pct(latency_p50, 0.95),
        "failovers": sum(r.get("failovers", 0) for r in reports),
        "origin_fetches": fetches_during,
        "auth_p50_s": _pct(grants, 0.5),
        "auth_p95_s": _pct(grants, 0.95),
        "refresh_p95_s": _pct(refresh_ok, 0.95),
        "auth_responses": dict(sorted(codes.items())),
        "shed": sum(1 for a in auths if a["status"] == 503 and a.get("reason") == "overloaded"),
        "http_errors": dict(sum((Counter(r["http_errors"]) for r in reports), Counter())),
    }
    # The load generator's own health: CPU share and event-loop lag of its worker processes.
    cpu = [rec["cpu"] for t in ticks.values() for rec in t.values() if "cpu" in rec]
    lag = [rec["lag_ms"] for t in ticks.values() for rec in t.values() if "lag_ms" in rec]
    summary["generator_cpu_p95"] = _pct(cpu, 0.95)
    summary["generator_lag_p95_ms"] = _pct(lag, 0.95)
    summary["generator_saturated"] = bool(
        (cpu and _pct(cpu, 0.95) >= GENERATOR_CPU_LIMIT)
        or (lag and _pct(lag, 0.95) >= GENERATOR_LAG_LIMIT_MS)
    )
    secs = list(range(min(ticks), max(ticks) + 1)) if ticks else []
    # Each worker's latest tick at every second: a worker whose loop lags skips seconds, and a
    # plain per-second sum would read those as players gone (a sawtooth in a loaded run).
    filled: list[dict[int, dict[str, Any]]] = []
    latest: dict[int, dict[str, Any]] = {}
    for sec in secs:
        latest.update(ticks.get(sec, {}))
        filled.append(dict(latest))
    cdns = sorted({c for t in ticks.values() for rec in t.values() for c in rec["playing"]})
    split = {
        c: [float(sum(rec["playing"].get(c, 0) for rec in f.values())) for f in filled]
        for c in cdns
    }
    waiting = [float(sum(rec["waiting"] for rec in f.values())) for f in filled]
    xs = [s[0] for s in scrapes]
    origin_rate = [0.0] + [max(0.0, b[1] - a[1]) for a, b in itertools.pairwise(scrapes)]
    shed_rate = [0.0] + [max(0.0, b[2] - a[2]) for a, b in itertools.pairwise(scrapes)]
    adm_rate = [0.0] + [max(0.0, b[3] - a[3]) for a, b in itertools.pairwise(scrapes)]
    xlabel = f"real seconds from the bell (event time ×{opts.compress:g})"
    panels = [
        Panel(
            "startup",
            "Start-up time (press play → playing)",
            "sessions",
            (),
            {"start-up (s)": startups},
            PanelKind.HIST,
            xlabel="seconds",
        ),
        Panel(
            "cdn_split",
            "Players playing, per CDN",
            "players",
            [float(s) for s in secs],
            split,
            PanelKind.STACK,
            xlabel=xlabel,
        ),
        Panel(
            "waiting",
            "Pre-authorised viewers in the waiting room",
            "viewers",
            [float(s) for s in secs],
            {"waiting room": waiting},
            xlabel=xlabel,
        ),
        Panel(
            "origin",
            "Origin fetches (shield → origin) per second",
            "fetches/s",
            xs,
            {"origin fetches": origin_rate},
            xlabel=xlabel,
        ),
        Panel(
            "shed",
            "Playback API: admitted and shed per second (server counters)",
            "requests/s",
            xs,
            {"admitted": adm_rate, "shed (503 overloaded)": shed_rate},
            xlabel=xlabel,
        ),
        Panel(
            "generator",
            "Load generator's own event-loop lag, per worker (lagging: it measures itself)",
            "ms",
            [float(s) for s in secs],
            {
                f"worker {w} loop lag": [
                    float(ticks[s].get(w, {}).get("lag_ms", 0.0)) for s in secs
                ]
                for w in sorted({w for t in ticks.values() for w in t})
            },
            xlabel=xlabel,
        ),
        Panel(
            "auth",
            "Authorisation latency of granted playback requests",
            "requests",
            (),
            {"grant latency (s)": grants},
            PanelKind.HIST,
            xlabel="seconds",
        ),
        Panel(
            "rebuffering",
            "Rebuffering ratio per session",
            "sessions",
            (),
            {
                "rebuffering ratio": [
                    r["stall_time_s"] / (r["stall_time_s"] + r["played_s"])
                    for r in reports
                    if r["stall_time_s"] + r["played_s"] > 0
                ]
            },
            PanelKind.HIST,
            xlabel="stalled / (played + stalled)",
        ),
        Panel(
            "latency",
            "Live latency per session (median)",
            "sessions",
            (),
            {"latency p50 (s)": latency_p50},
            PanelKind.HIST,
            xlabel="seconds",
        ),
    ]
    return summary, panels
