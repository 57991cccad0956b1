"""Alerts over scraped platform health: manifest stale, feed lost, authorisation shedding, a
target down; each with a start and an end, on the alerts API and in /metrics."""

from __future__ import annotations

import pytest

from mainevent.config import DEFAULT_HEALTH_ALERTS, TelemetrySettings
from mainevent.control.telemetry.alerts import HealthAlertEngine, HealthRule
from mainevent.control.telemetry.model import AlertState
from tests.telemetry.conftest import T0, Harness


def _engine() -> HealthAlertEngine:
    s = TelemetrySettings()
    return HealthAlertEngine(
        [
            HealthRule(h.name, h.metric, h.threshold, h.above, h.for_s, h.rate, h.target)
            for h in s.health_alerts
        ]
    )


STALLED = 'mainevent_manifest_stalled{event="final",rendition="v720"}'
CONNECTED = 'mainevent_feed_connected{pipeline="primary"}'
SHED = 'mainevent_control_shed_total{priority="start"}'


def test_default_rules_cover_stale_manifests_lost_feeds_shedding_and_down_targets() -> None:
    assert {h.name for h in DEFAULT_HEALTH_ALERTS} == {
        "manifest-stale",
        "feed-lost",
        "authorisation-shedding",
        "target-down",
    }


def test_manifest_stale_fires_with_its_labels_and_resolves() -> None:
    eng = _engine()
    up = {"origin": True}
    assert eng.handle({"origin": {STALLED: 0.0}}, up, T0) == []
    (fired,) = eng.handle({"origin": {STALLED: 1.0}}, up, T0 + 1)
    assert fired.rule == "manifest-stale"
    assert fired.state is AlertState.FIRING
    assert fired.labels == {"target": "origin", "event": "final", "rendition": "v720"}
    assert [f.rule for f in eng.firing()] == ["manifest-stale"]
    assert eng.handle({"origin": {STALLED: 1.0}}, up, T0 + 2) == []  # still firing: no new event
    (ended,) = eng.handle({"origin": {STALLED: 0.0}}, up, T0 + 3)
    assert ended.state is AlertState.RESOLVED
    assert ended.at == T0 + 3
    assert eng.firing() == []


def test_feed_lost_fires_only_after_holding_for_its_duration() -> None:
    eng = _engine()
    up = {"origin": True}
    assert eng.handle({"origin": {CONNECTED: 0.0}}, up, T0) == []
    assert eng.handle({"origin": {CONNECTED: 0.0}}, up, T0 + 1) == []  # 1 s < for_s = 2 s
    (fired,) = eng.handle({"origin": {CONNECTED: 0.0}}, up, T0 + 2)
    assert (fired.rule, fired.state, fired.labels["pipeline"]) == (
        "feed-lost",
        AlertState.FIRING,
        "primary",
    )
    # A blip back and down again restarts the hold time.
    (ended,) = eng.handle({"origin": {CONNECTED: 1.0}}, up, T0 + 3)
    assert ended.state is AlertState.RESOLVED
    assert eng.handle({"origin": {CONNECTED: 0.0}}, up, T0 + 4) == []


def test_shedding_fires_on_the_counter_rising_and_resolves_when_it_stops() -> None:
    eng = _engine()
    up = {"control": True}
    assert eng.handle({"control": {SHED: 5.0}}, up, T0) == []  # first sample: no rate yet
    assert eng.handle({"control": {SHED: 5.0}}, up, T0 + 1) == []  # flat: nothing shed
    (fired,) = eng.handle({"control": {SHED: 45.0}}, up, T0 + 2)
    assert fired.rule == "authorisation-shedding"
    assert fired.value == pytest.approx(40.0)
    (ended,) = eng.handle({"control": {SHED: 45.0}}, up, T0 + 3)
    assert ended.state is AlertState.RESOLVED
    # A restarted process (counter reset) is not a negative rate nor an alert.
    assert eng.handle({"control": {SHED: 0.0}}, up, T0 + 4) == []


def test_a_target_that_stops_answering_fires_target_down_and_its_series_resolve() -> None:
    eng = _engine()
    assert eng.handle({"origin": {STALLED: 1.0}}, {"origin": True}, T0) != []
    events = []
    for s in range(1, 5):
        events += eng.handle({"origin": {STALLED: 1.0}}, {"origin": False}, T0 + s)
    # The stale series is gone from the scrape (resolved, value unknown); the target is down.
    assert [(e.rule, e.state) for e in events] == [
        ("manifest-stale", AlertState.RESOLVED),
        ("target-down", AlertState.FIRING),
    ]
    (back,) = eng.handle({"origin": {}}, {"origin": True}, T0 + 5)
    assert (back.rule, back.state) == ("target-down", AlertState.RESOLVED)


def test_bad_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="bare sample name"):
        HealthRule("x", 'mainevent_feed_connected{pipeline="a"}', 0.5)
    with pytest.raises(ValueError, match="for_s"):
        HealthRule("x", "up", 0.5, for_s=-1)


@pytest.mark.anyio
async def test_health_alerts_are_on_the_api_and_in_metrics(harness: Harness) -> None:
    c = harness.service.collector
    c.health({"origin": {CONNECTED: 0.0}}, {"origin": True}, T0)
    c.health({"origin": {CONNECTED: 0.0}}, {"origin": True}, T0 + 2)
    r = await harness.client.get("/v1/telemetry/alerts")
    assert r.status_code == 200
    body = r.json()
    assert [(f["rule"], f["labels"]["pipeline"]) for f in body["firing"]] == [
        ("feed-lost", "primary")
    ]
    assert body["firing"][0]["at"] == T0  # when the feed was first seen lost
    m = (await harness.client.get("/metrics")).text
    assert (
        'mainevent_telemetry_alert_firing{rule="feed-lost",series="target=origin,pipeline=primary"} 1.0'
        in m
    )
    c.health({"origin": {CONNECTED: 1.0}}, {"origin": True}, T0 + 3)
    body = (await harness.client.get("/v1/telemetry/alerts")).json()
    assert body["firing"] == []
    assert [(e["rule"], e["state"]) for e in body["events"]] == [
        ("feed-lost", "firing"),
        ("feed-lost", "resolved"),
    ]
    m = (await harness.client.get("/metrics")).text
    assert 'mainevent_telemetry_alert_events_total{rule="feed-lost",state="resolved"} 1.0' in m
