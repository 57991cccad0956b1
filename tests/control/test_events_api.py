"""Event control plane over HTTP: CRUD, lifecycle, idempotency, ETags, audit, roles (SQLite + PostgreSQL)."""

from __future__ import annotations

import pytest

from tests.control.conftest import OPERATOR, READER, Harness

pytestmark = pytest.mark.anyio


async def test_create_get_list_update_event(harness: Harness) -> None:
    """An operator creates a draft event with its full configuration, reads it back, lists and edits it."""
    spec = {
        "allowed_regions": ["local", "GB"],
        "blackouts": [
            {
                "regions": ["GB"],
                "starts_at": "2026-12-01T20:00:00Z",
                "ends_at": "2026-12-01T22:00:00Z",
            }
        ],
        "policy": {
            "subscription_tiers": ["premium"],
            "ppv_product": "ppv-final",
            "ppv_price_cents": 1999,
            "min_age": 18,
            "max_streams": 3,
        },
        "segment_duration_ms": 2000,
        "latency_mode": "standard",
        "cdns": ["cdn-a", "cdn-b"],
        "dvr_window_s": 3600,
        "ingest": {"protocol": "rtmp", "stream_key": "venue-key-123"},
    }
    r = await harness.op("POST", "/v1/events", {"id": "final", "title": "Final", **spec})
    assert r.status_code == 201, r.text
    assert r.headers["etag"] == '"1"'
    assert r.headers["location"] == "/v1/events/final"
    body = r.json()
    assert body["status"] == "draft"
    assert body["allowed_transitions"] == ["scheduled"]
    assert body["policy"]["ppv_price_cents"] == 1999
    assert body["ingest"]["stream_key"] == "venue-key-123"
    got = await harness.op("GET", "/v1/events/final", key=READER)
    assert got.status_code == 200
    assert got.json()["cdns"] == ["cdn-a", "cdn-b"]
    assert got.json()["ingest"]["stream_key"] == "********"  # read-only keys never see credentials
    r = await harness.op(
        "PATCH",
        "/v1/events/final",
        {"title": "Grand Final"},
        key=OPERATOR,
        headers={"If-Match": '"1"'},
    )
    assert r.status_code == 200
    assert r.json()["title"] == "Grand Final"
    assert r.headers["etag"] == '"2"'
    assert r.json()["dvr_window_s"] == 3600  # untouched fields stay
    listed = await harness.op("GET", "/v1/events?status=draft", key=READER)
    assert [e["id"] for e in listed.json()["events"]] == ["final"]


async def test_full_lifecycle_and_illegal_transitions_answer_409(harness: Harness) -> None:
    """The legal path works end to end; skipping or reversing a step is refused with the reason and options."""
    await harness.event("final", "draft")
    r = await harness.op("POST", "/v1/events/final/transitions", {"to": "live"})
    assert r.status_code == 409
    err = r.json()["error"]
    assert err["reason"] == "illegal_transition"
    assert err["details"]["allowed"] == ["scheduled"]
    for step in ("scheduled", "rehearsal", "live", "paused", "live", "ended", "archived"):
        r = await harness.op("POST", "/v1/events/final/transitions", {"to": step})
        assert r.status_code == 200, (step, r.text)
    r = await harness.op("POST", "/v1/events/final/transitions", {"to": "live"})
    assert r.status_code == 409
    assert r.json()["error"]["details"]["allowed"] == []
    r = await harness.op("PATCH", "/v1/events/final", {"title": "x"})
    assert r.status_code == 409
    assert r.json()["error"]["reason"] == "event_archived"


async def test_scheduling_requires_a_schedule(harness: Harness) -> None:
    """An event without start and end cannot be scheduled (409 schedule_missing)."""
    r = await harness.op("POST", "/v1/events", {"id": "tbd", "title": "TBD"})
    assert r.status_code == 201
    r = await harness.op("POST", "/v1/events/tbd/transitions", {"to": "scheduled"})
    assert r.status_code == 409
    assert r.json()["error"]["reason"] == "schedule_missing"


async def test_idempotency_key_replays_and_refuses_reuse(harness: Harness) -> None:
    """Retrying a change with the same key returns the first answer; the key cannot be reused for another change."""
    body = {"id": "final", "title": "Final"}
    first = await harness.op("POST", "/v1/events", body, idem="k-1")
    again = await harness.op("POST", "/v1/events", body, idem="k-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    other = await harness.op("POST", "/v1/events", {"id": "semi", "title": "Semi"}, idem="k-1")
    assert other.status_code == 422
    assert other.json()["error"]["reason"] == "idempotency_key_reused"
    dup = await harness.op("POST", "/v1/events", body, idem="k-2")
    assert dup.status_code == 409
    assert dup.json()["error"]["reason"] == "event_exists"
    missing = await harness.client.post(
        "/v1/events", json=body, headers={"Authorization": "Bearer admin-key-0123456789"}
    )
    assert missing.status_code == 400
    assert missing.json()["error"]["reason"] == "idempotency_key_required"
    t1 = await harness.op("POST", "/v1/events/final/transitions", {"to": "scheduled"}, idem="t")
    assert (
        t1.status_code == 409
    )  # no schedule: errors are not stored, the key can be used once fixed
    await harness.op(
        "PATCH",
        "/v1/events/final",
        {"starts_at": "2030-01-01T00:00:00Z", "ends_at": "2030-01-01T02:00:00Z"},
    )
    t2 = await harness.op("POST", "/v1/events/final/transitions", {"to": "scheduled"}, idem="t")
    t3 = await harness.op("POST", "/v1/events/final/transitions", {"to": "scheduled"}, idem="t")
    assert t2.status_code == t3.status_code == 200
    assert t3.headers["idempotent-replayed"] == "true"


async def test_stale_etag_is_refused_with_412(harness: Harness) -> None:
    """Two operators editing the same version: the second gets 412 and the current ETag, not a lost update."""
    await harness.event("final", "draft")
    a = await harness.op("PATCH", "/v1/events/final", {"title": "A"}, headers={"If-Match": '"1"'})
    b = await harness.op("PATCH", "/v1/events/final", {"title": "B"}, headers={"If-Match": '"1"'})
    assert a.status_code == 200
    assert b.status_code == 412
    assert b.json()["error"]["details"]["current_etag"] == '"2"'
    t = await harness.op(
        "POST", "/v1/events/final/transitions", {"to": "scheduled"}, headers={"If-Match": '"1"'}
    )
    assert t.status_code == 412
    ok = await harness.op(
        "POST", "/v1/events/final/transitions", {"to": "scheduled"}, headers={"If-Match": '"2"'}
    )
    assert ok.status_code == 200
    assert ok.headers["etag"] == '"3"'


async def test_audit_log_records_who_what_when_before_after(harness: Harness) -> None:
    """Every operator action is in the audit log with the actor, action and the event before and after."""
    await harness.event("final", "draft")
    await harness.op(
        "PATCH", "/v1/events/final", {"title": "Renamed"}, key=OPERATOR, idem="rename-1"
    )
    r = await harness.op("GET", "/v1/audit?target_id=final", key=READER)
    entries = r.json()["entries"]
    assert [e["action"] for e in entries] == ["event.update", "event.create"]
    upd = entries[0]
    assert (upd["actor"], upd["role"], upd["idempotency_key"]) == ("oscar", "operator", "rename-1")
    assert upd["before"]["title"] == "Final"
    assert upd["after"]["title"] == "Renamed"
    assert upd["at"]


async def test_operator_roles_are_enforced(harness: Harness) -> None:
    """No key → 401, read-only keys cannot change events, operators cannot manage accounts."""
    r = await harness.client.get("/v1/events")
    assert r.status_code == 401
    assert r.json()["error"]["reason"] == "missing_credentials"
    r = await harness.op("GET", "/v1/events", key="wrong-key")
    assert r.status_code == 401
    assert r.json()["error"]["reason"] == "invalid_credentials"
    r = await harness.op("POST", "/v1/events", {"id": "x", "title": "X"}, key=READER)
    assert r.status_code == 403
    assert r.json()["error"]["reason"] == "insufficient_role"
    r = await harness.op("PUT", "/v1/accounts/a1", {"country": "GB"}, key=OPERATOR)
    assert r.status_code == 403


async def test_openapi_document_lists_the_api(harness: Harness) -> None:
    """Clients can generate bindings from /openapi.json."""
    r = await harness.client.get("/openapi.json")
    paths = r.json()["paths"]
    for p in (
        "/v1/events",
        "/v1/events/{event_id}/transitions",
        "/v1/events/{event_id}/playback",
        "/v1/purchases",
        "/v1/sessions/{session_id}/refresh",
        "/v1/accounts/{account_id}",
    ):
        assert p in paths


async def test_account_put_with_etag(harness: Harness) -> None:
    """Accounts are versioned like events: a stale If-Match is refused."""
    r = await harness.op("PUT", "/v1/accounts/a1", {"country": "GB", "plan": "basic"})
    assert r.status_code == 201
    assert r.headers["etag"] == '"1"'
    r = await harness.op(
        "PUT", "/v1/accounts/a1", {"country": "GB", "plan": "premium"}, headers={"If-Match": '"1"'}
    )
    assert r.status_code == 200
    assert r.json()["plan"] == "premium"
    r = await harness.op("PUT", "/v1/accounts/a1", {"country": "GB"}, headers={"If-Match": '"1"'})
    assert r.status_code == 412
    assert (await harness.op("GET", "/v1/accounts/a1")).json()["version"] == 2
