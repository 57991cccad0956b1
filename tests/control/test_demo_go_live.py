"""The demo event of `mainevent up` goes live without an override when its feeds are healthy:
created through the API, taken to rehearsal and through a passing preflight by the supervisor's
own core; only when the checks still fail after the bounded wait does it go live with an
audited override that names them. The media plane is behind its `MediaPlane` interface (the
supervisor e2e test runs the real one)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mainevent.commands.supervised import create_demo_event, demo_go_live, record_of
from mainevent.config import Settings
from mainevent.control.app import ControlServices, create_app
from mainevent.control.db import open_database
from mainevent.control.server import build_services
from mainevent.control.supervisor import PreflightFacts, Supervisor, Visibility
from mainevent.control.supervisor.model import (
    Input,
    PreflightDone,
    RecordChanged,
    RequestTransition,
    RunPreflight,
    SetVisibility,
)
from tests.control.conftest import ADMIN, make_settings
from tests.control.test_supervisor_api import GOOD, FakeMediaPlane

pytestmark = pytest.mark.anyio

SICK = dataclasses.replace(GOOD, pipelines={"primary": False, "backup": True}, rejected_segments=4)


@dataclass
class Plane:
    """The control plane in-process and the supervisor's core driven over its API, as the
    `MediaSupervisor` adapter drives it (transitions and preflight through HTTP)."""

    services: ControlServices
    transport: httpx.ASGITransport
    live: asyncio.Event

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=self.transport,
            base_url="http://control",
            headers={"Authorization": f"Bearer {ADMIN}"},
        )

    async def supervise(self, event_id: str, retry_s: float = 0.05) -> None:
        """Feed the event's record to a `Supervisor` and carry out its actions until cancelled."""
        core = Supervisor(retry_s=retry_s)
        async with self.client() as http:
            n = 0

            async def feed(event: Input) -> None:
                nonlocal n
                todo = list(core.handle(event, time.time()))
                while todo:
                    a = todo.pop(0)
                    more: Input | None = None
                    n += 1
                    key = {"Idempotency-Key": f"sup-{n}"}
                    if isinstance(a, SetVisibility) and a.visibility is Visibility.LIVE:
                        self.live.set()
                    elif isinstance(a, RequestTransition):
                        await http.post(
                            f"/v1/events/{a.event_id}/transitions",
                            json={"to": a.to.value},
                            headers=key,
                        )
                        out = self.services.store.get_event(a.event_id)
                        more = RecordChanged(record_of(out))
                    elif isinstance(a, RunPreflight):
                        r = await http.post(f"/v1/events/{a.event_id}/preflight", headers=key)
                        body = r.json()
                        more = PreflightDone(
                            a.event_id, bool(body["passed"]), tuple(body["failing"])
                        )
                    if more is not None:
                        todo += core.handle(more, time.time())

            await feed(RecordChanged(record_of(self.services.store.get_event(event_id))))
            while True:
                await asyncio.sleep(retry_s)
                await feed(RecordChanged(record_of(self.services.store.get_event(event_id))))


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[Plane]:
    db = open_database(f"sqlite:///{tmp_path / 'control.db'}")
    services = build_services(make_settings(), db=db)
    app = create_app(services)
    yield Plane(services, httpx.ASGITransport(app=app), asyncio.Event())
    db.dispose()


async def _run_demo(plane: Plane, facts: PreflightFacts, wait_s: float) -> bool:
    plane.services.media = FakeMediaPlane(facts)
    settings = Settings()
    assert await create_demo_event("http://control", ADMIN, settings, plane.transport)
    event_id = settings.event.id
    supervisor = asyncio.create_task(plane.supervise(event_id))
    try:
        # The stack calls demo_go_live once the supervisor opened the rehearsal.
        for _ in range(200):
            if plane.services.store.get_event(event_id).status in ("rehearsal", "live"):
                break
            await asyncio.sleep(0.01)
        return await demo_go_live(
            "http://control", ADMIN, event_id, plane.live, wait_s=wait_s, transport=plane.transport
        )
    finally:
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor


async def _audit(plane: Plane, event_id: str) -> list[dict[str, Any]]:
    async with plane.client() as http:
        r = await http.get("/v1/audit", params={"target_id": event_id})
    entries: list[dict[str, Any]] = r.json()["entries"]
    return entries


async def test_healthy_feeds_take_the_demo_live_without_an_override(plane: Plane) -> None:
    """Healthy feeds: rehearsal → a passing preflight → live; no override in the audit."""
    assert await _run_demo(plane, GOOD, wait_s=30) is True
    event_id = Settings().event.id
    assert plane.services.store.get_event(event_id).status == "live"
    actions = [e["action"] for e in await _audit(plane, event_id)]
    assert "event.create" in actions
    assert "event.transition.rehearsal" in actions
    assert "event.preflight" in actions
    assert "event.transition.live" in actions
    assert "event.preflight.override" not in actions


async def test_checks_failing_past_the_bound_go_live_with_an_override_naming_them(
    plane: Plane,
) -> None:
    """A sick primary: after the bound the demo goes live by override, and the audited reason
    names each failing check with its detail."""
    assert await _run_demo(plane, SICK, wait_s=0.3) is False
    event_id = Settings().event.id
    assert plane.services.store.get_event(event_id).status == "live"
    override = next(
        e for e in await _audit(plane, event_id) if e["action"] == "event.preflight.override"
    )
    reason = override["after"]["reason"]
    assert reason.startswith("demo event of mainevent up: preflight still failing after 0.3 s")
    assert "feeds_healthy (unhealthy: primary)" in reason
    assert "segments_validating (4 segments rejected)" in reason


@pytest.mark.parametrize("bad", ["-1", "soon", "inf", "nan"])
def test_a_bad_demo_preflight_wait_is_refused_with_a_clear_message(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mainevent up --demo-preflight-wait` takes a finite number of seconds >= 0."""
    from mainevent.cli import build_parser

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["up", "--demo-preflight-wait", bad])
    assert exc.value.code == 2
    assert "--demo-preflight-wait" in capsys.readouterr().err
    args = build_parser().parse_args(["up", "--demo-preflight-wait", "0"])
    assert args.demo_preflight_wait == 0.0
