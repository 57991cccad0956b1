"""The steering server inside the control plane: manifests per session, operator overrides
(audited, rate honoured), and playback grants that agree with steering."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.control.conftest import OPERATOR, READER, Harness

pytestmark = pytest.mark.anyio

CDNS = {"cdn-a": "http://a.example", "cdn-b": "http://b.example", "cdn-c": "http://c.example"}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        "cdns": CDNS,
        "steering": {"ttl_s": 10, "min_dwell_s": 0, "min_reload_interval_s": 2.0},
    }


def _use_fake_clock(h: Harness) -> None:
    assert h.services.steering is not None
    h.services.steering.app.clock = h.clock


async def steer(h: Harness, url: str, **extra: str) -> dict[str, Any]:
    r = await h.client.get(url, params=extra or None)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_a_session_gets_a_steering_manifest_and_stays_on_its_pathway(h: Harness) -> None:
    """HLS: VERSION 1, TTL, a RELOAD-URI carrying the session, its pathway first, sticky."""
    _use_fake_clock(h)
    r = await h.client.get("/steering/final/hls?sid=s-1&p=cdn-b")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/vnd.apple.steering-list"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["access-control-allow-origin"] == "*"
    body = r.json()
    assert body["VERSION"] == 1
    assert body["TTL"] == 10
    assert body["PATHWAY-PRIORITY"][0] == "cdn-b"
    assert sorted(body["PATHWAY-PRIORITY"]) == ["cdn-a", "cdn-b", "cdn-c"]
    reload = urlsplit(body["RELOAD-URI"])
    assert reload.path == "/steering/final/hls"
    state = parse_qs(reload.query)
    assert state["sid"] == ["s-1"]
    assert state["p"] == ["cdn-b"]
    assert state["r"] == ["local"]  # 127.0.0.1 in the CIDR table
    for _ in range(3):
        h.clock.advance(10)
        body = await steer(h, body["RELOAD-URI"], _HLS_pathway="cdn-b", _HLS_throughput="5000000")
        assert body["PATHWAY-PRIORITY"][0] == "cdn-b"


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_dash_gets_the_same_json_and_a_new_session_gets_an_id(h: Harness) -> None:
    """dash.js asks with _DASH_pathway: same keys; without sid the server names the session."""
    _use_fake_clock(h)
    r = await h.client.get('/steering/final/dash?_DASH_pathway="cdn-c"&_DASH_throughput=1')
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["PATHWAY-PRIORITY"][0] == "cdn-c"
    sid = parse_qs(urlsplit(body["RELOAD-URI"]).query)["sid"][0]
    assert sid.startswith("st-")


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("sid=s-1&p=cdn-x", "p='cdn-x' is not a pathway of this server (cdn-a, cdn-b, cdn-c)"),
        ("sid=a%20b", "sid 'a b' must be"),
        ("sid=s-1&m=soon", "m='soon' must be epoch seconds"),
        ("sid=s-1&r=eu%2Fwest", "r='eu/west' must be"),
    ],
)
async def test_a_malformed_steering_request_is_a_400_that_says_why(
    h: Harness, query: str, message: str
) -> None:
    """Bad state in the URL is refused with a precise message, and changes nothing."""
    r = await h.client.get(f"/steering/final/hls?{query}")
    assert r.status_code == 400
    assert r.json()["error"]["reason"] == "bad_steering_request"
    assert message in r.json()["error"]["message"]
    assert h.services.steering is not None
    assert h.services.steering.policy.statistics().per_cdn == dict.fromkeys(CDNS, 0)


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_a_session_asking_too_fast_gets_429_and_an_ended_event_410(h: Harness) -> None:
    """429 with Retry-After after a burst; 410 stops steering once the event ended."""
    _use_fake_clock(h)
    codes = [(await h.client.get("/steering/final/hls?sid=s-9")).status_code for _ in range(7)]
    assert codes[:5] == [200] * 5
    r = await h.client.get("/steering/final/hls?sid=s-9")
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert (await h.client.get("/steering/final/hls?sid=s-other")).status_code == 200
    assert h.services.steering is not None
    h.services.steering.service.end_event("final")
    r = await h.client.get("/steering/final/hls?sid=s-other")
    assert r.status_code == 410
    assert r.json()["error"]["reason"] == "event_ended"


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_operator_drain_is_audited_honours_its_rate_and_restore_undoes_it(
    h: Harness,
) -> None:
    """PUT drain cdn-b in local at 0.5: ≤ half per TTL leave; audit log has drain and restore."""
    _use_fake_clock(h)
    urls = {f"s{i}": f"/steering/final/hls?sid=s{i}&p=cdn-b" for i in range(20)}
    for sid in urls:
        body = await steer(h, urls[sid])
        urls[sid] = body["RELOAD-URI"]
    r = await h.op("PUT", "/v1/steering/overrides/local/cdn-b", {"action": "drain", "rate": 0.5})
    assert r.status_code == 200, r.text
    assert r.json()["override"]["rate"] == 0.5
    on_b = []
    for _ in range(3):
        h.clock.advance(10)
        n = 0
        for sid, url in urls.items():
            body = await steer(h, url)
            urls[sid] = body["RELOAD-URI"]
            n += body["PATHWAY-PRIORITY"][0] == "cdn-b"
            if body["PATHWAY-PRIORITY"][0] != "cdn-b":
                assert body["PATHWAY-PRIORITY"][-1] == "cdn-b"  # drained pathway last
        on_b.append(n)
    assert on_b[0] >= 10  # at most half moved in the first TTL
    assert on_b[1] == 0  # all within two TTLs
    status = (await h.op("GET", "/v1/steering", key=READER)).json()
    assert status["overrides"][0]["action"] == "drain"
    r = await h.op("DELETE", "/v1/steering/overrides/local/cdn-b")
    assert r.status_code == 200, r.text
    audit = (await h.op("GET", "/v1/audit?target_id=local/cdn-b")).json()["entries"]
    assert [e["action"] for e in audit] == ["steering.restore", "steering.drain"]
    assert audit[1]["actor"] == "alice"
    assert audit[1]["after"]["rate"] == 0.5
    r = await h.op("DELETE", "/v1/steering/overrides/local/cdn-b")
    assert r.status_code == 404
    assert r.json()["error"]["reason"] == "override_not_found"


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_override_requests_are_checked(h: Harness) -> None:
    """Unknown CDN 404, bad rate or action 422, read-only keys 403, replays are idempotent."""
    r = await h.op("PUT", "/v1/steering/overrides/local/cdn-x", {"action": "drain"})
    assert r.status_code == 404
    assert "steered CDNs: cdn-a, cdn-b, cdn-c" in r.json()["error"]["message"]
    r = await h.op("PUT", "/v1/steering/overrides/local/cdn-a", {"action": "drain", "rate": 2})
    assert r.status_code == 422
    r = await h.op("PUT", "/v1/steering/overrides/local/cdn-a", {"action": "evict"})
    assert r.status_code == 422
    r = await h.op("PUT", "/v1/steering/overrides/local/cdn-a", {"action": "pin"}, key=READER)
    assert r.status_code == 403
    first = await h.op(
        "PUT", "/v1/steering/overrides/local/cdn-a", {"action": "pin"}, key=OPERATOR, idem="k1"
    )
    again = await h.op(
        "PUT", "/v1/steering/overrides/local/cdn-a", {"action": "pin"}, key=OPERATOR, idem="k1"
    )
    assert first.status_code == again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    audit = (await h.op("GET", "/v1/audit?target_id=local/cdn-a")).json()["entries"]
    assert [e["action"] for e in audit] == ["steering.pin"]
    assert first.json()["override"]["rate"] == 0.25  # steering.drain_share by default


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_a_playback_grant_names_steering_consistent_with_its_cdn(h: Harness) -> None:
    """The grant's steering URL and pathway agree with its CDN; the steering server agrees too."""
    await h.event(cdns=["cdn-b", "cdn-a"])
    await h.account("acc-1", country="SE")
    r = await h.play("acc-1")
    assert r.status_code == 200, r.text
    g = r.json()
    assert g["cdn"]["name"] == "cdn-b"
    st = g["steering"]
    assert st["pathway"] == "cdn-b"
    assert st["url"] == f"/steering/final/hls?sid={g['session_id']}&p=cdn-b"
    assert st["manifest_url"] == g["cdn"]["manifest_url"] + "?pathway=cdn-b"
    body = await steer(h, st["url"])
    assert body["PATHWAY-PRIORITY"][0] == "cdn-b"
    metrics = (await h.client.get("/metrics")).text
    assert 'mainevent_steering_requests_total{kind="hls",status="200"} 1.0' in metrics
    assert 'mainevent_steering_sessions{cdn="cdn-b",region="local"} 1.0' in metrics


@pytest.fixture
def h(harness: Harness) -> Harness:
    return harness
