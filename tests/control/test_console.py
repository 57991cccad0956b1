"""Operations console on the control plane: login, session cookie, CSRF, roles, rate limit,
page and assets, and the live view (in-process, SQLite)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mainevent.control.app import create_app
from mainevent.control.console.live import (
    FreshnessTracker,
    delivery_health,
    parse_exposition,
    pipeline_health,
    playback_counters,
    qoe_columns,
)
from mainevent.control.console.sessions import COOKIE
from mainevent.control.db import open_database
from mainevent.control.server import build_services
from tests.control.conftest import ADMIN, OPERATOR, READER, FakeClock, make_settings

pytestmark = pytest.mark.anyio


class Console:
    def __init__(self, client: httpx.AsyncClient, clock: FakeClock, services: Any) -> None:
        self.client = client
        self.clock = clock
        self.services = services

    async def login(self, key: str) -> dict[str, Any]:
        r = await self.client.post("/console/api/login", json={"key": key})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    clock = FakeClock()
    db = open_database(f"sqlite:///{tmp_path / 'control.db'}")
    services = build_services(
        make_settings(console={"login_failures": 3, "login_window_s": 60}), db=db, clock=clock
    )
    app = create_app(services)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://control"
    ) as client:
        yield Console(client, clock, services)
    db.dispose()


def _event(event_id: str = "final") -> dict[str, Any]:
    return {
        "id": event_id,
        "title": "Final",
        "starts_at": "2030-01-01T20:00:00Z",
        "ends_at": "2030-01-01T23:00:00Z",
    }


async def test_login_sets_an_httponly_strict_cookie_and_answers_role_and_csrf(
    console: Console,
) -> None:
    r = await console.client.post("/console/api/login", json={"key": OPERATOR})
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == "oscar"
    assert body["role"] == "operator"
    assert len(body["csrf"]) >= 24
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/" in cookie
    # the cookie is opaque: it is neither the key nor the CSRF token
    value = cookie.split(";")[0].split("=", 1)[1]
    assert OPERATOR not in value
    assert body["csrf"] != value
    r = await console.client.get("/console/api/session")
    assert r.status_code == 200
    assert r.json()["csrf"] == body["csrf"]


async def test_bad_login_is_a_clear_401_then_rate_limited_with_retry_after(
    console: Console,
) -> None:
    for _ in range(3):
        r = await console.client.post("/console/api/login", json={"key": "wrong-key"})
        assert r.status_code == 401
        assert r.json()["error"]["reason"] == "invalid_credentials"
        assert COOKIE not in r.headers.get("set-cookie", "")
    r = await console.client.post("/console/api/login", json={"key": OPERATOR})
    assert r.status_code == 429
    assert r.json()["error"]["reason"] == "login_rate_limited"
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    console.clock.advance(61)
    await console.login(OPERATOR)


async def test_login_body_is_validated(console: Console) -> None:
    for body in ({}, {"key": ""}, {"key": "k", "extra": 1}, {"key": "x" * 300}):
        r = await console.client.post("/console/api/login", json=body)
        assert r.status_code == 422, body
        assert r.json()["error"]["reason"] == "invalid_request"


async def test_login_from_another_site_is_refused(console: Console) -> None:
    r = await console.client.post(
        "/console/api/login", json={"key": OPERATOR}, headers={"Origin": "https://evil.example"}
    )
    assert r.status_code == 403
    assert r.json()["error"]["reason"] == "cross_origin"
    r = await console.client.post(
        "/console/api/login", json={"key": OPERATOR}, headers={"Origin": "http://control"}
    )
    assert r.status_code == 200


async def test_cookie_changes_need_the_csrf_token(console: Console) -> None:
    s = await console.login(OPERATOR)
    assert (await console.client.get("/v1/events")).status_code == 200
    idem = {"Idempotency-Key": "k1"}
    r = await console.client.post("/v1/events", json=_event(), headers=idem)
    assert r.status_code == 403
    assert r.json()["error"]["reason"] == "csrf_token_invalid"
    r = await console.client.post(
        "/v1/events", json=_event(), headers=idem | {"X-CSRF-Token": "not-it"}
    )
    assert r.status_code == 403
    r = await console.client.post(
        "/v1/events", json=_event(), headers=idem | {"X-CSRF-Token": s["csrf"]}
    )
    assert r.status_code == 201, r.text
    audit = (await console.client.get("/v1/audit")).json()["entries"]
    assert audit[0]["actor"] == "oscar"
    assert audit[0]["action"] == "event.create"


async def test_read_only_session_reads_but_cannot_act(console: Console) -> None:
    s = await console.login(READER)
    assert s["role"] == "read-only"
    assert (await console.client.get("/v1/events")).status_code == 200
    assert (await console.client.get("/v1/audit")).status_code == 200
    r = await console.client.post(
        "/v1/events",
        json=_event(),
        headers={"Idempotency-Key": "k2", "X-CSRF-Token": s["csrf"]},
    )
    assert r.status_code == 403
    assert r.json()["error"]["reason"] == "insufficient_role"


async def test_logout_and_expiry_end_the_session(console: Console) -> None:
    await console.login(ADMIN)
    r = await console.client.post("/console/api/logout")
    assert r.status_code == 204
    assert (await console.client.get("/console/api/session")).status_code == 401
    r = await console.client.get("/v1/events")
    assert r.status_code == 401
    assert r.json()["error"]["reason"] == "missing_credentials"
    await console.login(ADMIN)
    console.clock.advance(console.services.settings.console.session_ttl_s + 1)
    assert (await console.client.get("/console/api/session")).status_code == 401
    assert (await console.client.get("/v1/events")).status_code == 401


async def test_api_key_still_works_beside_a_session(console: Console) -> None:
    await console.login(READER)
    r = await console.client.post(
        "/v1/events",
        json=_event("semi"),
        headers={"Authorization": f"Bearer {OPERATOR}", "Idempotency-Key": "k3"},
    )
    assert r.status_code == 201  # the key decides, not the read-only cookie


async def test_page_and_assets(console: Console) -> None:
    r = await console.client.get("/console/")
    assert r.status_code == 200
    assert "text/html" in r.headers["content-type"]
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    assert "/console/assets/uPlot.iife.min.js" in r.text
    for name in ("console.js", "console.css", "uPlot.iife.min.js", "uPlot.min.css"):
        a = await console.client.get(f"/console/assets/{name}")
        assert a.status_code == 200, name
        assert a.content
    r = await console.client.get("/console/assets/..%2Fplayer.html")
    assert r.status_code == 404
    r = await console.client.get("/console/assets/player.html")
    assert r.status_code == 404
    assert r.json()["error"]["reason"] == "not_found"
    r = await console.client.get("/console", follow_redirects=False)
    assert r.status_code == 308
    assert r.headers["location"] == "/console/"


async def test_live_view_needs_a_login_and_a_known_event(console: Console) -> None:
    assert (await console.client.get("/console/api/events/final/live")).status_code == 401
    s = await console.login(OPERATOR)
    r = await console.client.get("/console/api/events/nope/live")
    assert r.status_code == 404
    assert r.json()["error"]["reason"] == "event_not_found"
    r = await console.client.get("/console/api/events/bad%20id/live")
    assert r.status_code == 404
    await console.client.post(
        "/v1/events", json=_event(), headers={"Idempotency-Key": "k4", "X-CSRF-Token": s["csrf"]}
    )
    r = await console.client.get("/console/api/events/final/live")
    assert r.status_code == 200
    body = r.json()
    assert body["event"] == "final"
    assert body["playback"]["grants"] == 0
    assert body["playback"]["denials"] == {}
    assert body["playback"]["shed"] == {"refresh": 0, "new_start": 0, "purchase": 0, "poll": 0}
    assert body["qoe"] == {"event": [], "cdn": [], "region": []}


async def test_live_view_reports_an_unreachable_source(tmp_path: Path) -> None:
    clock = FakeClock()
    db = open_database(f"sqlite:///{tmp_path / 'c.db'}")
    services = build_services(
        make_settings(
            console={
                "metrics_targets": {"origin": "http://127.0.0.1:9/metrics"},
                "telemetry_url": "http://127.0.0.1:9",
                "scrape_timeout_s": 0.5,
            }
        ),
        db=db,
        clock=clock,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(services)), base_url="http://control"
    ) as client:
        await client.post(
            "/v1/events",
            json=_event(),
            headers={"Authorization": f"Bearer {ADMIN}", "Idempotency-Key": "k"},
        )
        r = await client.get(
            "/console/api/events/final/live", headers={"Authorization": f"Bearer {READER}"}
        )
    db.dispose()
    assert r.status_code == 200
    sources = r.json()["sources"]
    assert sources["origin"].startswith("unavailable")
    assert sources["telemetry"].startswith("unavailable")
    assert r.json()["pipelines"] == []


async def test_audience_counts_live_playback_sessions(console: Console) -> None:
    await console.login(READER)
    r = await console.client.get("/console/api/audience")
    assert r.status_code == 200
    assert r.json()["sessions"] == {}


# -- summaries of /metrics ---------------------------------------------------------------------

ORIGIN = """
# TYPE mainevent_feed_connected gauge
mainevent_feed_connected{pipeline="primary"} 1.0
mainevent_feed_connected{pipeline="backup"} 0.0
# TYPE mainevent_feed_bitrate_kbps gauge
mainevent_feed_bitrate_kbps{pipeline="primary"} 2512.34
mainevent_feed_bitrate_kbps{pipeline="backup"} 0.0
# TYPE mainevent_feed_fps gauge
mainevent_feed_fps{pipeline="primary"} 25.0
# TYPE mainevent_feed_av_offset_seconds gauge
mainevent_feed_av_offset_seconds{pipeline="primary"} 0.012
# TYPE mainevent_feed_since_last_packet_seconds gauge
mainevent_feed_since_last_packet_seconds{pipeline="primary"} 0.04
# TYPE mainevent_feed_verdict gauge
mainevent_feed_verdict{pipeline="primary",verdict="healthy"} 1.0
mainevent_feed_verdict{pipeline="primary",verdict="lost"} 0.0
mainevent_feed_verdict{pipeline="backup",verdict="lost"} 1.0
# TYPE mainevent_feed_input_errors counter
mainevent_feed_input_errors_total{pipeline="primary",kind="continuity"} 2.0
mainevent_feed_input_errors_total{pipeline="primary",kind="decode"} 1.0
# TYPE mainevent_pipeline_preferred gauge
mainevent_pipeline_preferred{event="final",pipeline="primary"} 0.0
mainevent_pipeline_preferred{event="final",pipeline="backup"} 1.0
mainevent_pipeline_preferred{event="other",pipeline="primary"} 1.0
# TYPE mainevent_last_msn gauge
mainevent_last_msn{event="final",rendition="v360"} 41.0
mainevent_last_msn{event="other",rendition="v360"} 7.0
# TYPE mainevent_manifest_stalled gauge
mainevent_manifest_stalled{event="final",rendition="v360"} 0.0
"""

EDGE = """
# TYPE edge_requests counter
edge_requests_total{edge="cdn-a",type="segment",cache="HIT"} 90.0
edge_requests_total{edge="cdn-a",type="segment",cache="MISS"} 8.0
edge_requests_total{edge="cdn-a",type="playlist",cache="COLLAPSED"} 2.0
edge_requests_total{edge="cdn-a",type="segment",cache="ERROR"} 1.0
# TYPE edge_upstream_fetches counter
edge_upstream_fetches_total{edge="cdn-a",type="segment"} 8.0
edge_upstream_fetches_total{edge="cdn-a",type="playlist"} 3.0
# TYPE edge_upstream_errors counter
edge_upstream_errors_total{edge="cdn-a",type="segment"} 1.0
"""


def test_pipeline_health_per_event_with_the_published_one() -> None:
    ps = {p.pipeline: p for p in pipeline_health(parse_exposition(ORIGIN), "final")}
    assert list(ps) == ["primary", "backup"]
    assert ps["primary"].connected
    assert ps["primary"].bitrate_kbps == 2512.3
    assert ps["primary"].verdict == "healthy"
    assert ps["backup"].verdict == "lost"
    assert ps["primary"].input_errors == 3.0
    assert ps["backup"].published
    assert not ps["primary"].published
    other = {p.pipeline: p for p in pipeline_health(parse_exposition(ORIGIN), "other")}
    assert other["primary"].published


def test_delivery_health_hit_ratio_and_upstream_fetches() -> None:
    d = delivery_health("cdn-a", parse_exposition(EDGE))
    assert d.requests == 101
    assert d.hits == 92
    assert d.misses == 8
    assert d.hit_ratio == 0.92
    assert d.upstream_fetches == 11
    assert d.upstream_errors == 1
    assert delivery_health("empty", []).hit_ratio is None


def test_freshness_age_grows_until_the_msn_moves() -> None:
    t = FreshnessTracker()
    s = parse_exposition(ORIGIN)
    assert t.update(s, "final", 100.0) == [
        {"rendition": "v360", "last_msn": 41, "age_s": 0.0, "stalled": False}
    ]
    assert t.update(s, "final", 103.5)[0]["age_s"] == 3.5
    moved = parse_exposition(ORIGIN.replace('rendition="v360"} 41.0', 'rendition="v360"} 42.0'))
    assert t.update(moved, "final", 104.0)[0] == {
        "rendition": "v360",
        "last_msn": 42,
        "age_s": 0.0,
        "stalled": False,
    }


def test_playback_counters_from_the_control_exposition() -> None:
    text = """
mainevent_playback_grants_total 12
mainevent_playback_preauth_grants_total 3
mainevent_playback_denials_total{reason="geo_blocked"} 2
mainevent_playback_denials_total{reason="not_entitled"} 5
mainevent_control_shed_total{priority="poll"} 4
mainevent_control_shed_late_total{priority="poll"} 1
mainevent_playback_sessions 9
"""
    c = playback_counters(parse_exposition(text))
    assert c.grants == 12
    assert c.preauth_grants == 3
    assert c.sessions == 9
    assert c.denials == {"geo_blocked": 2, "not_entitled": 5}
    assert c.shed == {"poll": 5}


def test_qoe_columns() -> None:
    body = {
        "series": [
            {
                "labels": {"cdn": "cdn-a"},
                "points": [
                    {"start": 10.0, "concurrent_sessions": 2.0, "error_rate": 0.5},
                    {"start": 11.0, "concurrent_sessions": 3.0, "error_rate": None},
                ],
            }
        ]
    }
    [s] = qoe_columns(body)
    assert s["labels"] == {"cdn": "cdn-a"}
    assert s["columns"]["t"] == [10.0, 11.0]
    assert s["columns"]["concurrent_sessions"] == [2.0, 3.0]
    assert s["columns"]["error_rate"] == [0.5, None]
    assert s["columns"]["live_latency_p50_ms"] == [None, None]


def test_demo_logins_one_key_per_role_kept_across_restarts(tmp_path: Path) -> None:
    from mainevent.control.auth import OperatorAuth
    from mainevent.control.console.demo import ensure_demo_logins

    base = make_settings(api_keys=(), data_dir=str(tmp_path))
    s1, logins = ensure_demo_logins(base)
    assert set(logins) == {"admin", "operator", "read-only"}
    assert len(set(logins.values())) == 3
    auth = OperatorAuth(s1.api_keys)
    for role, key in logins.items():
        assert auth.authenticate(f"Bearer {key}", "read-only").role == role
    for name in ("control-admin.key", "control-operator.key", "control-readonly.key"):
        assert (tmp_path / name).stat().st_mode & 0o077 == 0
    _, again = ensure_demo_logins(base)
    assert again == logins  # a restart signs in with the same keys
    configured, none = ensure_demo_logins(make_settings(data_dir=str(tmp_path / "other")))
    assert none == {}
    assert configured.api_keys == make_settings().api_keys
