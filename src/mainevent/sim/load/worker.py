"""One load-generator process: many real headless players in asyncio, each playing what the
playback API grants it (`mainevent.player.grants`).

Run by `mainevent load` as `python -m mainevent.sim.load.worker CONFIG.json`; prints JSON lines
on stdout: `tick` (every second: players playing per CDN, waiting, joined), `auth` (each try of
a playback-API request: `mainevent.player.grants.ApiCall`, kind, status, latency, attempt...) and
`viewer` (one per play session: start-up, stalls, latency, CDN, the player's report).
"""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from mainevent.control.auth import DevIdentityProvider
from mainevent.control.settings import DEV_IDP_SECRET
from mainevent.player import PlayerConfig, grants
from mainevent.player.grants import ApiCall
from mainevent.player.transport import LeanTransport
from mainevent.sim.load.plan import JoinKind, ViewerPlan

_DEVICE_TYPES = {
    "web": "web",
    "desktop": "web",
    "mobile": "mobile",
    "phone": "mobile",
    "tv": "tv",
    "console": "console",
}


def _device_type(device: str) -> str:
    """The playback API's device type for a scenario device name."""
    return _DEVICE_TYPES.get(device, "other")


@dataclass(slots=True)
class _State:
    cfg: dict[str, Any]
    t0: float
    """Epoch time of event second `start_s`."""
    playing: Counter[str] = field(default_factory=Counter)
    waiting: int = 0
    done: int = 0

    def at(self, event_s: float) -> float:
        """Epoch time of an event second."""
        return self.t0 + (event_s - float(self.cfg["start_s"])) / float(self.cfg["compress"])


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


async def _sleep_until(t: float) -> None:
    delay = t - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


def _auth_record(call: ApiCall) -> None:
    _emit({"type": "auth", **call.to_dict()})


async def _authorise(
    api: httpx.AsyncClient, st: _State, plan: ViewerPlan, jwt: str, kind: str
) -> dict[str, Any] | None:
    """POST playback until granted (honouring Retry-After), or None after repeated refusals."""
    device = {"id": plan.device_id, "type": _device_type(plan.device), "model": plan.device}
    return await grants.authorise(api, st.cfg["event"], device, jwt, _auth_record, kind=kind)


async def _session(
    api: httpx.AsyncClient,
    media: httpx.AsyncClient,
    st: _State,
    plan: ViewerPlan,
    jwt: str,
    grant: dict[str, Any],
    pressed: float,
    until_s: float,
    joined: str,
) -> None:
    cdn = grant["cdn"]["name"]
    duration = max(1.0, st.at(until_s) - time.time())
    st.playing[cdn] += 1
    requested = time.time()
    try:
        report = await grants.play_granted(
            api,
            media,
            jwt,
            grant,
            _auth_record,
            duration_s=duration,
            refresh_every_s=st.cfg["refresh_every_s"],
            config=PlayerConfig(startup_timeout_s=30.0),
        )
    finally:
        st.playing[cdn] -= 1
    startup = None if report.startup_s is None else (requested - pressed) + report.startup_s
    _emit(
        {
            "type": "viewer",
            "index": plan.index,
            "region": plan.region,
            "isp": plan.isp,
            "device": plan.device,
            "kind": joined,
            "cdn": cdn,
            "pressed": pressed,
            "started": requested + (report.startup_s or 0.0),
            "ended": time.time(),
            "startup_s": startup,
            "report": report.to_dict(),
        }
    )
    await grants.end(api, jwt, grant)


async def _viewer(
    api: httpx.AsyncClient,
    client: httpx.AsyncClient,
    st: _State,
    plan: ViewerPlan,
    idp: DevIdentityProvider,
) -> None:
    jwt = idp.mint(plan.account, ttl_s=6 * 3600)
    bell = st.at(0.0)
    await _sleep_until(st.at(plan.open_s))
    if plan.kind is JoinKind.PREAUTH:
        st.waiting += 1
        grant = await _authorise(api, st, plan, jwt, "preauth")
        await _sleep_until(st.at(plan.press_s))
        st.waiting -= 1
        # A pre-authorised token is valid from the bell: an early press waits for it.
        await _sleep_until(bell)
        pressed = max(st.at(plan.press_s), bell)
    else:
        pressed = time.time()
        grant = await _authorise(api, st, plan, jwt, "start")
    if grant is None:
        _emit(
            {
                "type": "viewer",
                "index": plan.index,
                "region": plan.region,
                "kind": plan.kind.value,
                "cdn": None,
                "pressed": pressed,
                "startup_s": None,
                "report": None,
                "refused": True,
            }
        )
        return
    await _session(api, client, st, plan, jwt, grant, pressed, plan.leave_s, plan.kind.value)
    if plan.return_s is not None:
        await _sleep_until(st.at(plan.return_s))
        pressed = time.time()
        grant = await _authorise(api, st, plan, jwt, "start")
        if grant is not None:
            await _session(api, client, st, plan, jwt, grant, pressed, plan.end_s, "return")


async def _ticker(st: _State, total: int) -> None:
    """Every second: players per CDN, and how this process itself is doing (its CPU share over
    the last second, and how late this tick woke: the event loop's lag). A load generator that
    is out of CPU measures itself, not the platform; the report says so."""
    loop = asyncio.get_running_loop()
    due = loop.time()
    cpu0, wall0 = time.process_time(), loop.time()
    while True:
        now = loop.time()
        cpu = time.process_time()
        _emit(
            {
                "type": "tick",
                "t": time.time(),
                "playing": dict(st.playing),
                "waiting": st.waiting,
                "done": st.done,
                "total": total,
                "cpu": (cpu - cpu0) / max(1e-9, now - wall0),
                "lag_ms": max(0.0, now - due) * 1000,
            }
        )
        cpu0, wall0 = cpu, now
        due = now + 1.0
        await asyncio.sleep(1.0)


@dataclass(frozen=True, slots=True)
class _Clients:
    """How each viewer gets its own HTTP clients: one for the playback API, one for media.

    A viewer is a device with its own connections, so each one gets its own small pool. One
    client shared by hundreds of players would be one pool of hundreds of connections, and
    httpcore scans the whole pool on every request (measured: 2.8 ms of CPU per request with
    100 players on one pool, 1.0 ms with a client each), so the load generator, not the
    platform, would be what starves. The TLS context is built once and shared.

    Both clients run on `LeanTransport` (httptools parsing): httpx's default transport costs
    about 0.5-0.9 ms of CPU per request in the client, the lean one a third of that (`bench/
    player_cost.py`), and at 2,000 players that is most of a core.
    """

    control_url: str
    tls: ssl.SSLContext
    timeout_s: float = 10.0

    def api(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.control_url,
            timeout=self.timeout_s,
            transport=LeanTransport(verify=self.tls),
            trust_env=False,
        )

    def media(self, region: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=self.timeout_s,
            transport=LeanTransport(verify=self.tls),
            trust_env=False,
            headers={"X-Client-Region": region},
        )


async def run(cfg: dict[str, Any]) -> None:
    plans = [ViewerPlan.from_json(p) for p in cfg["plans"]]
    # Ready (imports done, plans loaded): the orchestrator answers with the start time on stdin,
    # so a slow start on a loaded machine never eats into the schedule.
    _emit({"type": "ready"})
    line = await asyncio.to_thread(sys.stdin.readline)
    st = _State(cfg, float(line))
    idp = DevIdentityProvider(
        secret=DEV_IDP_SECRET, issuer="mainevent-dev-idp", audience="mainevent"
    )
    clients = _Clients(cfg["control_url"], ssl.create_default_context())
    # `kill -USR1 <worker>` prints where every task is waiting (a stuck viewer shows here).
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _dump_tasks)
    async with asyncio.TaskGroup() as tg:
        ticker = tg.create_task(_ticker(st, len(plans)))
        async with asyncio.TaskGroup() as viewers:
            for plan in plans:
                viewers.create_task(_one(clients, st, plan, idp))
        ticker.cancel()


def _dump_tasks() -> None:
    tasks = asyncio.all_tasks()
    sys.stderr.write(f"--- {len(tasks)} tasks at {time.time():.3f}\n")
    for task in tasks:
        task.print_stack(limit=12, file=sys.stderr)
    sys.stderr.flush()


async def _one(clients: _Clients, st: _State, plan: ViewerPlan, idp: DevIdentityProvider) -> None:
    try:
        async with clients.api() as api, clients.media(plan.region) as media:
            await _viewer(api, media, st, plan, idp)
    finally:
        st.done += 1


def main() -> None:
    import logging

    logging.basicConfig(level=logging.DEBUG, format="%(created).3f %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    try:
        import uvloop

        uvloop.run(run(cfg))
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(run(cfg))


if __name__ == "__main__":
    main()
