"""The start-time promise: a viewer admitted before the start is never denied at the start by load or outages."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mainevent.common.admission import AdmissionController, AdmissionPolicy, Admitted, Priority
from mainevent.common.tokens import DEV_TOKEN_KEY_HEX, TokenVerifier
from mainevent.control.entitlement import EventFacts, Policy, ViewerFacts
from mainevent.control.errors import ControlError
from mainevent.control.lifecycle import EventStatus
from mainevent.control.playback import PlaybackService
from mainevent.control.schemas import DeviceInfo
from tests.control.conftest import FakeClock, Harness, make_settings

T0 = 1_900_000_000.0


@dataclass
class _Source:
    """In-memory entitlement store that can fail or hang on command."""

    event_facts: EventFacts
    viewers: dict[str, ViewerFacts] = field(default_factory=dict)
    mode: str = "ok"  # ok | fail | hang

    async def _gate(self) -> None:
        if self.mode == "fail":
            raise ConnectionError("store down")
        if self.mode == "hang":
            await anyio.sleep(10)

    async def viewer(self, account_id: str) -> ViewerFacts | None:
        await self._gate()
        return self.viewers.get(account_id)

    async def event(self, event_id: str) -> EventFacts | None:
        await self._gate()
        return self.event_facts if event_id == self.event_facts.id else None


@settings(max_examples=40, deadline=None)
@given(
    viewers=st.integers(1, 12),
    lead_s=st.floats(1, 3000),
    after_start_s=st.floats(0, 3000),
    outage=st.sampled_from(["ok", "fail", "hang"]),
    load_delay=st.floats(0, 2.0),
    new_starts_in_flight=st.integers(0, 400),
    seed=st.integers(0, 2**32 - 1),
)
def test_preauthorised_viewers_keep_access_at_the_start(
    viewers: int,
    lead_s: float,
    after_start_s: float,
    outage: str,
    load_delay: float,
    new_starts_in_flight: int,
    seed: int,
) -> None:
    """Whatever the load and whether the store works, fails or hangs, pre-authorised viewers play at the bell."""
    clock = FakeClock(T0 - lead_s)
    event = EventFacts(
        "bell",
        EventStatus.SCHEDULED,
        T0,
        T0 + 7200,
        policy=Policy(subscription_tiers=frozenset({"p"})),
    )
    source = _Source(event, {f"v{i}": ViewerFacts(f"v{i}", plan="p") for i in range(viewers)})
    svc = PlaybackService(
        make_settings(store_timeout_s=0.01, breaker_failures=2), source, clock=clock
    )
    admission = AdmissionController(AdmissionPolicy(max_in_flight=512), random.Random(seed))

    async def scenario() -> None:
        grants = [
            await svc.authorise(f"v{i}", "bell", DeviceInfo(id=f"d{i}"), "local")
            for i in range(viewers)
        ]
        assert all(g.waiting_room for g in grants)
        # The bell: the store is in trouble, the server is flooded with new starts.
        clock.now = T0 + after_start_s
        source.mode = outage
        event_live = EventFacts("bell", EventStatus.LIVE, T0, T0 + 7200, policy=event.policy)
        if outage == "ok":
            source.event_facts = event_live
        for _ in range(new_starts_in_flight):
            admission.admit(Priority.NEW_START)
        admission.observe_delay(load_delay)
        verifier = TokenVerifier({"dev": DEV_TOKEN_KEY_HEX})
        for i, g in enumerate(grants):
            # 1. The token they already hold opens the stream: no request to us at all.
            assert verifier.verify(g.token, "/live/bell/v720/1.m4s", clock.now).ok
            # 2. And if they ask us (refresh), they are admitted and granted.
            ticket = admission.admit(Priority.REFRESH)
            assert isinstance(ticket, Admitted)
            try:
                fresh = await svc.refresh(f"v{i}", g.session_id, g.token)
            except ControlError as exc:  # pragma: no cover - the property failing
                pytest.fail(f"viewer v{i} denied at the start: {exc.reason}")
            finally:
                admission.release(ticket)
            assert verifier.verify(fresh.token, "/live/bell/master.m3u8", clock.now).ok

    anyio.run(scenario)


@pytest.mark.anyio
async def test_store_outage_keeps_known_viewers_and_refuses_unknown_ones_retryably(
    harness: Harness,
) -> None:
    """With the entitlement store failing at the bell, pre-authorised viewers refresh fine; new unknowns get 503 + Retry-After."""
    await harness.event(
        "final", "scheduled", starts_in=600, policy={"subscription_tiers": ["premium"]}
    )
    await harness.account("known", plan="premium")
    await harness.account("late", plan="premium")
    g = (await harness.play("known")).json()
    harness.source.fail = True
    harness.clock.advance(600)
    r = await harness.client.post(
        f"/v1/sessions/{g['session_id']}/refresh",
        json={"token": g["token"]},
        headers=harness.viewer("known"),
    )
    assert r.status_code == 200
    assert r.json()["degraded"] is True
    again = await harness.play(
        "known", device="d1"
    )  # pressing play again on the same device also works
    assert again.status_code == 200, again.text
    r = await harness.play("late")
    body: dict[str, Any] = r.json()
    assert (r.status_code, body["error"]["reason"]) == (503, "entitlement_unavailable")
    assert body["error"]["retryable"]
    assert int(r.headers["retry-after"]) >= 1
    harness.source.fail = False
    harness.clock.advance(harness.services.settings.breaker_open_s)
    assert (
        await harness.play("late")
    ).status_code == 200  # breaker probes, store answers, viewer plays


@pytest.mark.anyio
async def test_overload_sheds_polling_and_new_starts_but_serves_refreshes(harness: Harness) -> None:
    """At the bell under overload, status polling and new starts get 503 + Retry-After while refreshes go through."""
    await harness.event("final", "live")
    await harness.account("v1")
    g = (await harness.play("v1")).json()
    harness.services.admission.observe_delay(1.0)  # the server is far behind
    poll = await harness.client.get("/v1/events/final/status")
    start = await harness.play("v1", device="d2")
    assert (poll.status_code, start.status_code) == (503, 503)
    assert poll.json()["error"]["reason"] == "overloaded"
    assert int(poll.headers["retry-after"]) >= 1
    r = await harness.client.post(
        f"/v1/sessions/{g['session_id']}/refresh",
        json={"token": g["token"]},
        headers=harness.viewer("v1"),
    )
    assert r.status_code == 200
    ops = await harness.op("GET", "/v1/events")
    assert ops.status_code == 200  # operators are never shed


def test_refresh_survives_a_control_plane_restart_during_a_store_outage() -> None:
    """A playing viewer still gets a fresh token from a restarted control plane while the store is down."""
    clock = FakeClock(T0 - 600)
    event = EventFacts("bell", EventStatus.SCHEDULED, T0, T0 + 7200)
    source = _Source(event, {"v1": ViewerFacts("v1")})
    settings = make_settings(store_timeout_s=0.01)

    async def scenario() -> None:
        grant = await PlaybackService(settings, source, clock=clock).authorise(
            "v1", "bell", DeviceInfo(id="d"), "local"
        )
        clock.now = T0 + 1800
        source.mode = "fail"
        restarted = PlaybackService(settings, source, clock=clock)  # empty caches
        fresh = await restarted.refresh("v1", grant.session_id, grant.token)
        assert fresh.degraded
        assert fresh.session_id == grant.session_id
        assert (
            TokenVerifier({"dev": DEV_TOKEN_KEY_HEX})
            .verify(fresh.token, "/live/bell/1.m4s", clock.now)
            .ok
        )
        with pytest.raises(ControlError) as denied:  # a viewer with no token is not let in blindly
            await restarted.authorise("v2", "bell", DeviceInfo(id="d"), "local")
        assert denied.value.reason == "entitlement_unavailable"

    anyio.run(scenario)
