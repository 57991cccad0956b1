"""Playback authorisation over HTTP: every denial reason, grants, sessions, refresh (SQLite + PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest

from mainevent.common.tokens import DEV_TOKEN_KEY_HEX, TokenVerifier, split_token_path
from tests.control.conftest import Harness

pytestmark = pytest.mark.anyio


def _reason(r: Any) -> str:
    return str(r.json()["error"]["reason"])


async def test_grant_carries_token_manifest_cdns_and_player_config(harness: Harness) -> None:
    """An entitled viewer gets a token the origin accepts, a manifest URL, a CDN with fallbacks and player settings."""
    await harness.event(
        "final", "live", cdns=["cdn-a", "cdn-b"], policy={"subscription_tiers": ["premium"]}
    )
    await harness.account("v1", plan="premium")
    r = await harness.play("v1")
    assert r.status_code == 200, r.text
    g = r.json()
    assert g["cdn"]["name"] == "cdn-a"
    assert [f["name"] for f in g["fallbacks"]] == ["cdn-b"]
    assert g["manifest_url"] == f"/t/{g['token']}/live/final/master.m3u8"
    assert g["waiting_room"] is False
    assert g["degraded"] is False
    assert g["player"]["low_latency"] is True
    token, path = split_token_path(g["manifest_url"])
    assert token == g["token"]
    check = TokenVerifier({"dev": DEV_TOKEN_KEY_HEX}).verify(token, path, harness.clock.now)
    assert check.ok
    assert check.claims is not None
    assert check.claims.session_id == g["session_id"]
    assert g["player"]["refresh_at"] < g["expires_at"]


@pytest.mark.parametrize(
    ("setup", "account", "reason", "status"),
    [
        ({"status": "draft"}, {}, "event_not_published", 403),
        ({"status": "ended"}, {}, "event_ended", 403),
        ({"status": "archived"}, {}, "event_ended", 403),
        ({"status": "scheduled", "starts_in": 3 * 86_400}, {}, "waiting_room_closed", 403),
        ({"allowed_regions": ["GB"]}, {}, "region_not_allowed", 403),
        ({"blackouts": [{"regions": ["local"]}]}, {}, "blackout", 403),
        ({"policy": {"min_age": 18}}, {}, "age_unknown", 403),
        ({"policy": {"min_age": 18}}, {"date_of_birth": "2020-01-01"}, "age_restricted", 403),
        (
            {"policy": {"subscription_tiers": ["premium"]}},
            {"plan": "basic"},
            "subscription_required",
            403,
        ),
        (
            {"policy": {"subscription_tiers": ["premium"]}},
            {"plan": "premium", "plan_valid_until": "2001-01-01T00:00:00Z"},
            "subscription_expired",
            403,
        ),
        ({"policy": {"ppv_product": "ppv", "ppv_price_cents": 999}}, {}, "purchase_required", 403),
        (
            {
                "policy": {
                    "ppv_product": "ppv",
                    "ppv_price_cents": 999,
                    "subscription_tiers": ["premium"],
                }
            },
            {"plan": "premium", "plan_valid_until": "2001-01-01T00:00:00Z"},
            "purchase_required",
            403,
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
async def test_each_rule_denies_with_its_reason(
    harness: Harness, setup: dict[str, Any], account: dict[str, Any], reason: str, status: int
) -> None:
    """Each entitlement rule refuses with its own machine-readable reason."""
    setup = dict(setup)
    await harness.event("final", setup.pop("status", "live"), **setup)
    await harness.account("v1", **account)
    r = await harness.play("v1")
    assert (r.status_code, _reason(r)) == (status, reason)


async def test_credentials_and_unknown_things(harness: Harness) -> None:
    """Missing, forged or expired viewer tokens get 401s; unknown events 404; unknown accounts 403."""
    await harness.event("final", "live")
    r = await harness.client.post("/v1/events/final/playback", json={"device": {"id": "d"}})
    assert (r.status_code, _reason(r)) == (401, "missing_credentials")
    r = await harness.client.post(
        "/v1/events/final/playback",
        json={"device": {"id": "d"}},
        headers={"Authorization": "Bearer not.a.jwt"},
    )
    assert (r.status_code, _reason(r)) == (401, "invalid_credentials")
    assert harness.services.dev_idp is not None
    expired = harness.services.dev_idp.mint("v1", ttl_s=1, now=harness.clock.now - 3600)
    r = await harness.client.post(
        "/v1/events/final/playback",
        json={"device": {"id": "d"}},
        headers={"Authorization": f"Bearer {expired}"},
    )
    assert (r.status_code, _reason(r)) == (401, "credentials_expired")
    r = await harness.play("nobody")
    assert (r.status_code, _reason(r)) == (403, "account_not_found")
    await harness.account("v1")
    r = await harness.play("v1", event_id="nope")
    assert (r.status_code, _reason(r)) == (404, "event_not_found")


async def test_region_from_trusted_edge_header(
    settings_overrides: dict[str, Any], harness: Harness
) -> None:
    """Behind a trusted edge the edge's region header decides; untrusted clients cannot spoof it."""
    await harness.event("final", "live", allowed_regions=["GB"])
    await harness.account("v1")
    r = await harness.play("v1", **{"x-edge-region": "GB"})
    assert _reason(r) == "region_not_allowed"  # the test client is not a trusted edge
    harness.services.settings = harness.services.settings.model_copy(
        update={"trusted_edges": ("127.0.0.0/8",)}
    )
    harness.services.playback.settings = harness.services.settings
    r = await harness.play("v1", **{"x-edge-region": "GB"})
    assert r.status_code == 200, r.text


async def test_concurrent_stream_limit_with_heartbeats_and_expiry(harness: Harness) -> None:
    """A third device is refused at a 2-stream limit until one stops or stops heartbeating; a device restart is free."""
    await harness.event("final", "live", policy={"max_streams": 2})
    await harness.account("v1")
    a = (await harness.play("v1", device="tv")).json()
    b = (await harness.play("v1", device="phone")).json()
    assert (
        await harness.play("v1", device="tv")
    ).status_code == 200  # same device again: replaces its session
    r = await harness.play("v1", device="laptop")
    assert (r.status_code, _reason(r)) == (
        403,
        "concurrent_stream_limit",
    )
    assert "retry-after" in r.headers
    harness.clock.advance(60)
    hb = await harness.client.post(
        f"/v1/sessions/{b['session_id']}/heartbeat", headers=harness.viewer("v1")
    )
    assert hb.status_code == 200
    harness.clock.advance(60)  # the tv session (not heartbeating) expires, the phone one lives on
    assert (await harness.play("v1", device="laptop")).status_code == 200
    gone = await harness.client.post(
        f"/v1/sessions/{a['session_id']}/heartbeat", headers=harness.viewer("v1")
    )
    assert (gone.status_code, _reason(gone)) == (404, "session_not_found")
    other = await harness.client.post(
        f"/v1/sessions/{b['session_id']}/heartbeat", headers=harness.viewer("v2")
    )
    assert _reason(other) == "session_mismatch"
    stop = await harness.client.delete(
        f"/v1/sessions/{b['session_id']}", headers=harness.viewer("v1")
    )
    assert stop.status_code == 204
    assert (await harness.play("v1", device="phone2")).status_code == 200


async def test_waiting_room_preauthorisation_token_valid_from_start(harness: Harness) -> None:
    """Before the bell viewers get a token valid from the start, so the start itself needs no lookups."""
    await harness.event("final", "scheduled", starts_in=600)
    await harness.account("v1")
    g = (await harness.play("v1")).json()
    assert g["waiting_room"] is True
    assert g["valid_from"] == int(harness.clock.now + 600)
    verifier = TokenVerifier({"dev": DEV_TOKEN_KEY_HEX})
    assert (
        verifier.verify(g["token"], "/live/final/master.m3u8", harness.clock.now).reason
        == "not_yet_valid"
    )
    assert verifier.verify(g["token"], "/live/final/master.m3u8", harness.clock.now + 600).ok
    status = await harness.client.get("/v1/events/final/status")
    assert status.json()["status"] == "scheduled"


async def test_refresh_renews_the_token_and_checks_ownership(harness: Harness) -> None:
    """A playing viewer swaps its token for a fresh one; another account or a forged token cannot."""
    await harness.event("final", "live")
    await harness.account("v1")
    g = (await harness.play("v1")).json()
    harness.clock.advance(3000)
    r = await harness.client.post(
        f"/v1/sessions/{g['session_id']}/refresh",
        json={"token": g["token"]},
        headers=harness.viewer("v1"),
    )
    assert r.status_code == 200
    assert r.json()["expires_at"] > g["expires_at"]
    assert r.json()["session_id"] == g["session_id"]
    r = await harness.client.post(
        f"/v1/sessions/{g['session_id']}/refresh",
        json={"token": g["token"]},
        headers=harness.viewer("v2"),
    )
    assert _reason(r) == "session_mismatch"
    forged = g["token"][:-4] + "0000"
    r = await harness.client.post(
        f"/v1/sessions/{g['session_id']}/refresh",
        json={"token": forged},
        headers=harness.viewer("v1"),
    )
    assert _reason(r) == "session_mismatch"


async def test_plan_change_invalidates_cached_decision(harness: Harness) -> None:
    """A viewer refused for lack of a plan can watch right after upgrading (no stale cached denial)."""
    await harness.event("final", "live", policy={"subscription_tiers": ["premium"]})
    await harness.account("v1", plan="basic")
    assert _reason(await harness.play("v1")) == "subscription_required"
    await harness.account("v1", plan="premium")
    assert (await harness.play("v1")).status_code == 200


async def test_rate_limit_per_account_answers_429_with_retry_after(harness: Harness) -> None:
    """One account hammering playback gets 429 with Retry-After once its bucket is empty."""
    harness.services.playback.account_limits.core.rate = 1.0
    harness.services.playback.account_limits.core.burst = 3.0
    await harness.event("final", "live")
    await harness.account("v1")
    codes = [(await harness.play("v1", device="d")).status_code for _ in range(4)]
    assert codes[:3] == [200, 200, 200]
    r = await harness.play("v1", device="d")
    assert (r.status_code, _reason(r)) == (429, "rate_limited")
    assert int(r.headers["retry-after"]) >= 1


K_OLD, K_NEW = "aa" * 32, "bb" * 32


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "token_keys": [
                {"kid": "old", "secret_hex": K_OLD},
                {"kid": "new", "secret_hex": K_NEW},
            ],
            "signing_kid": "new",
        }
    ],
)
async def test_key_rotation_signs_with_the_chosen_key(harness: Harness) -> None:
    """After switching `signing_kid`, new grants carry the new key id and origins knowing both keys accept them."""
    await harness.event("final", "live")
    await harness.account("v1")
    g = (await harness.play("v1")).json()
    assert "~kid=new~" in g["token"]
    both = TokenVerifier({"old": K_OLD, "new": K_NEW})
    assert both.verify(g["token"], "/live/final/master.m3u8", harness.clock.now).ok
    old_only = TokenVerifier({"old": K_OLD}, retired={"new"})
    assert (
        old_only.verify(g["token"], "/live/final/master.m3u8", harness.clock.now).reason
        == "key_retired"
    )
