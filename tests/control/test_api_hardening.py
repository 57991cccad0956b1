"""Control-plane API hardening: precise 4xx in the error shape, no echo, body cap, masking,
one purchase per product, owner-scoped session delete, media-plane event rules (SQLite + PostgreSQL).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest

from tests.control.conftest import ADMIN, OPERATOR, READER, Harness

pytestmark = pytest.mark.anyio

PPV = {"policy": {"ppv_product": "ppv-final", "ppv_price_cents": 1999, "currency": "EUR"}}
SECRET_KEY = "venue-stream-key-0123"
SECRET_PASS = "srt-passphrase-0123456"


def _error(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}, body  # never FastAPI's {"detail": ...}
    err: dict[str, Any] = body["error"]
    assert set(err) == {"reason", "message", "retryable", "details"}
    return err


def _fields(r: httpx.Response) -> list[str]:
    return [e["field"] for e in _error(r)["details"]["errors"]]


async def _draft(h: Harness, **spec: Any) -> dict[str, Any]:
    r = await h.op(
        "POST",
        "/v1/events",
        {
            "id": "final",
            "title": "Final",
            "starts_at": "2026-12-01T20:00:00Z",
            "ends_at": "2026-12-01T23:00:00Z",
            **spec,
        },
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


# -- PATCH: nulls and schedule ------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        "title",
        "ladder",
        "policy",
        "cdns",
        "ingest",
        "segment_duration_ms",
        "latency_mode",
        "allowed_regions",
        "blackouts",
        "dvr_window_s",
    ],
)
async def test_patch_null_for_a_non_nullable_field_is_422_and_changes_nothing(
    harness: Harness, field: str
) -> None:
    """PATCH with null for a field that must have a value answers 422 naming the field (was 500)."""
    await _draft(harness)
    r = await harness.op("PATCH", "/v1/events/final", {field: None})
    assert r.status_code == 422, r.text
    err = _error(r)
    assert err["reason"] == "invalid_request"
    assert _fields(r) == [f"body.{field}"]
    assert "null" in err["details"]["errors"][0]["message"]
    got = await harness.op("GET", "/v1/events/final")
    assert got.json()["version"] == 1


async def test_patch_ends_before_starts_is_422_in_the_patch_and_against_the_stored_start(
    harness: Harness,
) -> None:
    """ends_at before starts_at is refused whether both are in the patch or one is stored (was 500)."""
    await _draft(harness)
    both = await harness.op(
        "PATCH",
        "/v1/events/final",
        {"starts_at": "2026-12-02T20:00:00Z", "ends_at": "2026-12-02T19:00:00Z"},
    )
    assert both.status_code == 422, both.text
    assert "ends_at must be after starts_at" in _error(both)["message"]
    against_stored = await harness.op(
        "PATCH", "/v1/events/final", {"ends_at": "2026-12-01T19:00:00Z"}
    )
    assert against_stored.status_code == 422, against_stored.text
    assert _error(against_stored)["reason"] == "invalid_request"
    got = (await harness.op("GET", "/v1/events/final")).json()
    assert got["version"] == 1
    assert got["ends_at"].startswith("2026-12-01T23:00:00")
    # A draft may drop its schedule: null stays allowed for the schedule fields.
    cleared = await harness.op("PATCH", "/v1/events/final", {"starts_at": None, "ends_at": None})
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["starts_at"] is None


# -- error shape everywhere, no echo ----------------------------------------------------------


async def test_validation_errors_use_the_error_shape_and_never_echo_the_input(
    harness: Harness,
) -> None:
    """A 422 names the field and rule; a long bad value, an odd key or a bad JSON body is not echoed."""
    long_title = "T" * 30_000
    odd_key = "k" * 5_000
    r = await harness.op(
        "POST", "/v1/events", {"id": "final", "title": long_title, odd_key: 1, "cdns": []}
    )
    assert r.status_code == 422
    assert len(r.content) < 4_000
    assert "TTTT" not in r.text
    assert "kkkk" not in r.text
    assert set(_fields(r)) == {"body.title", "body.(unrecognised name)", "body.cdns"}
    rules = {e["rule"] for e in _error(r)["details"]["errors"]}
    assert rules == {"string_too_long", "extra_forbidden", "too_short"}
    bad_json = await harness.client.post(
        "/v1/events",
        content=b'{"id": "final", "title": "secret-value-123"',
        headers={
            "Authorization": f"Bearer {ADMIN}",
            "Idempotency-Key": "k1",
            "Content-Type": "application/json",
        },
    )
    assert bad_json.status_code == 422
    assert _error(bad_json)["details"]["errors"][0]["rule"] == "json_invalid"
    assert "secret-value-123" not in bad_json.text


async def test_bad_query_path_and_header_values_are_422_in_the_error_shape(
    harness: Harness,
) -> None:
    """Query, path and header parameters are validated too: limit out of range, a malformed id, a long key."""
    r = await harness.op("GET", "/v1/events?limit=0")
    assert r.status_code == 422
    assert _fields(r) == ["query.limit"]
    r = await harness.op("GET", "/v1/events?status=bogus")
    assert _fields(r) == ["query.status"]
    r = await harness.op("GET", "/v1/events/" + "Bad%20Id")
    assert r.status_code == 422
    assert _fields(r) == ["path.event_id"]
    r = await harness.op("PUT", "/v1/accounts/v1", {}, idem="x" * 200)
    assert r.status_code == 422
    assert _fields(r) == ["header.idempotency-key"]
    assert "xxxx" not in r.text


async def test_unknown_route_and_method_answer_in_the_error_shape(harness: Harness) -> None:
    """404 and 405 from routing carry the documented shape; Allow names every method of the path."""
    r = await harness.client.get("/v1/nothing-here")
    assert r.status_code == 404
    assert _error(r)["reason"] == "not_found"
    r = await harness.client.put("/healthz")
    assert r.status_code == 405
    assert _error(r)["reason"] == "method_not_allowed"
    r = await harness.client.delete("/v1/events/final")
    assert r.status_code == 405
    assert set(r.headers["allow"].split(", ")) == {"GET", "PATCH"}


async def test_operator_routes_refuse_unknown_query_parameters(harness: Harness) -> None:
    """A mistyped query parameter (`stauts=live`) is a 422, not silently a list of everything."""
    r = await harness.op("GET", "/v1/events?stauts=live", key=READER)
    assert r.status_code == 422
    err = _error(r)
    assert [(e["field"], e["rule"]) for e in err["details"]["errors"]] == [
        ("query.stauts", "extra_forbidden")
    ]
    r = await harness.op("GET", "/v1/audit?target_id=final&" + "q" * 500 + "=1", key=READER)
    assert r.status_code == 422
    assert "qqqq" not in r.text
    r = await harness.op("GET", "/v1/audit?target_id=a&target_id=b", key=READER)
    assert r.status_code == 422
    assert [(e["field"], e["rule"]) for e in _error(r)["details"]["errors"]] == [
        ("query.target_id", "multiple_values")
    ]
    assert (await harness.op("GET", "/v1/audit?target_id=final&limit=5")).status_code == 200


async def test_a_change_without_idempotency_key_is_400_before_anything_changes(
    harness: Harness,
) -> None:
    """Every mutating call needs an Idempotency-Key: 400 idempotency_key_required, nothing created."""
    r = await harness.client.post(
        "/v1/events",
        json={"id": "final", "title": "Final"},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert r.status_code == 400
    assert _error(r)["reason"] == "idempotency_key_required"
    assert (await harness.op("GET", "/v1/events/final")).status_code == 404
    r = await harness.client.post(
        "/v1/events", json={"id": "final"}, headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert r.status_code == 422  # with another error too, every problem is listed
    assert set(_fields(r)) == {"header.idempotency-key", "body.title"}


# -- event settings the media plane accepts --------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field", "rule"),
    [
        ({"segment_duration_ms": 7000}, "body.segment_duration_ms", "value_error"),  # not ÷ a day
        ({"segment_duration_ms": 1300}, "body.segment_duration_ms", "multiple_of"),
        ({"segment_duration_ms": 20_000}, "body.segment_duration_ms", "less_than_equal"),
        (
            {"ladder": [{"id": "v1", "width": 640, "height": 360, "bitrate_kbps": 700}] * 2},
            "body.ladder",
            "value_error",
        ),
        (
            {"ladder": [{"id": "v1", "width": 641, "height": 360, "bitrate_kbps": 700}]},
            "body.ladder.0.width",
            "value_error",
        ),
        ({"ladder": []}, "body.ladder", "too_short"),
        ({"latency_mode": "ultra"}, "body.latency_mode", "literal_error"),
        ({"cdns": ["cdn-z"]}, "body.cdns.0", "unknown_cdn"),
        ({"cdns": ["cdn-a", "cdn-a"]}, "body.cdns", "value_error"),
        (
            {"allowed_regions": ["not a region"]},
            "body.allowed_regions.0",
            "string_pattern_mismatch",
        ),
    ],
)
async def test_event_settings_the_media_plane_refuses_are_422(
    harness: Harness, spec: dict[str, Any], field: str, rule: str
) -> None:
    """Creating or patching an event with settings the media plane would refuse (or unknown CDNs) is 422."""
    r = await harness.op("POST", "/v1/events", {"id": "final", "title": "Final", **spec})
    assert r.status_code == 422, r.text
    errors = _error(r)["details"]["errors"]
    assert (errors[0]["field"], errors[0]["rule"]) == (field, rule)
    await _draft(harness)
    r = await harness.op("PATCH", "/v1/events/final", spec)
    assert r.status_code == 422, r.text
    errors = _error(r)["details"]["errors"]
    assert (errors[0]["field"], errors[0]["rule"]) == (field, rule)


async def test_events_name_configured_cdns_and_default_to_all_of_them(harness: Harness) -> None:
    """Without `cdns` an event uses every configured CDN (the stack's cdn-a, cdn-b, cdn-c)."""
    body = await _draft(harness)
    assert body["cdns"] == ["cdn-a", "cdn-b", "cdn-c"]
    r = await harness.op("PATCH", "/v1/events/final", {"cdns": ["cdn-c", "cdn-a"]})
    assert r.status_code == 200, r.text
    assert r.json()["cdns"] == ["cdn-c", "cdn-a"]
    r = await harness.op("PATCH", "/v1/events/final", {"segment_duration_ms": 4000})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("settings_overrides", [{"cdns": {"origin": ""}}])
async def test_configured_cdns_come_from_the_settings(harness: Harness) -> None:
    """With `cdns` configured to the origin alone, the stack's default names are unknown."""
    assert (await _draft(harness))["cdns"] == ["origin"]
    r = await harness.op("PATCH", "/v1/events/final", {"cdns": ["cdn-a"]})
    assert r.status_code == 422
    assert _error(r)["details"]["configured_cdns"] == ["origin"]


# -- secrets ------------------------------------------------------------------------------------


async def test_ingest_secrets_are_masked_for_read_only_keys_in_lists_gets_and_audit(
    harness: Harness,
) -> None:
    """A read-only key sees no stream key or passphrase anywhere; operators and admins see them."""
    await _draft(harness, ingest={"stream_key": SECRET_KEY, "passphrase": SECRET_PASS})
    r = await harness.op(
        "PATCH",
        "/v1/events/final",
        {"ingest": {"stream_key": SECRET_KEY + "-2", "passphrase": SECRET_PASS + "-2"}},
    )
    assert r.status_code == 200, r.text
    reads = [
        await harness.op("GET", "/v1/events", key=READER),
        await harness.op("GET", "/v1/events?status=draft", key=READER),
        await harness.op("GET", "/v1/events/final", key=READER),
        await harness.op("GET", "/v1/audit", key=READER),
        await harness.op("GET", "/v1/audit?target_id=final", key=READER),
    ]
    for got in reads:
        assert got.status_code == 200, got.text
        assert SECRET_KEY not in got.text
        assert SECRET_PASS not in got.text
    listed = reads[0].json()["events"][0]["ingest"]
    assert listed == {
        "protocol": "srt",
        "stream_key": "********",
        "passphrase": "********",
        "port": 0,
        "backup_port": 0,
    }
    entries = reads[3].json()["entries"]
    assert {e["action"] for e in entries} == {"event.create", "event.update"}
    assert entries[0]["before"]["ingest"]["stream_key"] == "********"
    assert entries[0]["after"]["ingest"]["passphrase"] == "********"
    for key in (OPERATOR, ADMIN):
        seen = await harness.op("GET", "/v1/events", key=key)
        assert seen.json()["events"][0]["ingest"]["stream_key"] == SECRET_KEY + "-2"
        audit = await harness.op("GET", "/v1/audit", key=key)
        assert audit.json()["entries"][0]["before"]["ingest"]["passphrase"] == SECRET_PASS


# -- purchases ----------------------------------------------------------------------------------


async def _buy(h: Harness, account: str, key: str) -> httpx.Response:
    return await h.client.post(
        "/v1/purchases",
        json={"event_id": "final"},
        headers=h.viewer(account) | {"Idempotency-Key": key},
    )


async def test_buying_an_owned_product_again_is_409_with_the_purchase_and_no_charge(
    harness: Harness,
) -> None:
    """A second purchase of an owned product with a new key is refused with the existing purchase."""
    await harness.event("final", "live", **PPV)
    await harness.account("v1")
    first = await _buy(harness, "v1", "k1")
    assert first.status_code == 201, first.text
    again = await _buy(harness, "v1", "k2")
    assert again.status_code == 409, again.text
    err = _error(again)
    assert err["reason"] == "already_purchased"
    assert err["details"]["purchase"] == first.json()
    assert harness.payments.calls == 1
    assert len(harness.payments.charges) == 1
    replay = await _buy(harness, "v1", "k1")  # the original key still replays its answer
    assert replay.status_code == 200
    assert replay.json() == first.json()
    await harness.account("v2")  # another account buys on its own
    assert (await _buy(harness, "v2", "k2")).status_code == 201
    assert len(harness.payments.charges) == 2


async def test_concurrent_purchases_with_different_keys_charge_once(harness: Harness) -> None:
    """Two purchases of one product racing with different keys: one is charged, the other refused."""
    harness.payments.latency_s = 0.05
    await harness.event("final", "live", **PPV)
    await harness.account("v1")
    responses: list[httpx.Response] = []

    async def one(key: str) -> None:
        responses.append(await _buy(harness, "v1", key))

    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(one, f"k{i}")
    assert harness.payments.calls == 1
    assert len(harness.payments.charges) == 1
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409], [
        r.text for r in responses
    ]
    refused = {_error(r)["reason"] for r in responses if r.status_code == 409}
    assert refused <= {"already_purchased", "purchase_in_progress"}


async def test_a_declined_purchase_does_not_block_a_new_attempt(harness: Harness) -> None:
    """Only paid (or in-flight) purchases count as owned: after a decline a new key may buy."""
    await harness.event("final", "live", **PPV)
    await harness.account("v1")
    harness.payments.declined_accounts = frozenset({"v1"})
    assert (await _buy(harness, "v1", "k1")).status_code == 402
    harness.payments.declined_accounts = frozenset()
    assert (await _buy(harness, "v1", "k2")).status_code == 201


# -- sessions -----------------------------------------------------------------------------------


async def test_deleting_another_accounts_session_is_404_and_deletes_nothing(
    harness: Harness,
) -> None:
    """DELETE of someone else's session looks exactly like an unknown one (404) and leaves it playing."""
    await harness.event("final", "live")
    await harness.account("v1")
    await harness.account("v2")
    grant = await harness.play("v1")
    assert grant.status_code == 200, grant.text
    sid = grant.json()["session_id"]
    foreign = await harness.client.delete(f"/v1/sessions/{sid}", headers=harness.viewer("v2"))
    unknown = await harness.client.delete(
        "/v1/sessions/s-000000000000000000000000", headers=harness.viewer("v2")
    )
    assert foreign.status_code == unknown.status_code == 404
    assert _error(foreign) == _error(unknown)
    assert _error(foreign)["reason"] == "session_not_found"
    beat = await harness.client.post(f"/v1/sessions/{sid}/heartbeat", headers=harness.viewer("v1"))
    assert beat.status_code == 200  # still there
    own = await harness.client.delete(f"/v1/sessions/{sid}", headers=harness.viewer("v1"))
    assert own.status_code == 204
    gone = await harness.client.delete(f"/v1/sessions/{sid}", headers=harness.viewer("v1"))
    assert gone.status_code == 404


# -- body cap -----------------------------------------------------------------------------------

BIG = 20 * 1024 * 1024


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    sent = 0
    yield b'{"device": {"id": "'
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}}'


async def _achunks(total: int) -> AsyncIterator[bytes]:
    for c in _chunks(total):
        yield c


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/events/final/playback"),
        ("POST", "/v1/purchases"),
        ("POST", "/v1/events"),
        ("PATCH", "/v1/events/final"),
        ("PUT", "/v1/accounts/v1"),
        ("POST", "/v1/sessions/s-1/refresh"),
        ("POST", "/dev/idp/token"),
    ],
)
async def test_a_20_mb_body_is_413_declared_or_chunked(
    harness: Harness, method: str, path: str
) -> None:
    """Every route answers a 20 MB body with 413 body_too_large (never 503, never an echo)."""
    await harness.event("final", "live")
    headers = {
        "Authorization": f"Bearer {ADMIN}" if "/playback" not in path else "",
        "Idempotency-Key": "k",
        "Content-Type": "application/json",
    } | (harness.viewer("v1") if "/playback" in path or "/sessions" in path else {})
    declared = await harness.client.request(
        method, path, content=b"".join(_chunks(BIG)), headers=headers
    )
    assert declared.status_code == 413, declared.text[:300]
    assert _error(declared)["reason"] == "body_too_large"
    assert declared.headers["connection"] == "close"
    assert len(declared.content) < 1000
    chunked = await harness.client.request(method, path, content=_achunks(BIG), headers=headers)
    assert chunked.status_code == 413, chunked.text[:300]
    assert _error(chunked)["reason"] == "body_too_large"
    stats = harness.services.admission.statistics()
    assert stats.in_flight == 0  # admitted requests refused by the cap gave their slot back


async def test_a_body_just_under_the_cap_is_read(harness: Harness) -> None:
    """The cap refuses only what is over it: a large but allowed body is validated as usual."""
    limit = harness.services.settings.max_body_bytes
    title = "T" * (limit - 200)
    r = await harness.op("POST", "/v1/events", {"id": "final", "title": title})
    assert r.status_code == 422  # read and validated (title too long), not 413
    assert _fields(r) == ["body.title"]


# -- OpenAPI --------------------------------------------------------------------------------------


async def test_openapi_documents_security_schemes_and_error_bodies(harness: Harness) -> None:
    """Every operator and viewer route names its security scheme and documents its errors as the envelope."""
    doc = (await harness.client.get("/openapi.json")).json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["operatorKey"]["scheme"] == "bearer"
    assert schemes["viewerJwt"]["bearerFormat"] == "JWT"
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    envelope = {"$ref": "#/components/schemas/ErrorResponse"}
    viewer_paths = ("/playback", "/v1/sessions/", "/v1/purchases")
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            codes = {c for c in op["responses"] if c[0] in "45"}
            for c in codes:
                schema = op["responses"][c]["content"]["application/json"]["schema"]
                assert schema == envelope, (method, path, c)
            if path in ("/healthz", "/metrics"):
                continue
            assert "422" in codes, (method, path)
            if method in ("post", "put", "patch"):
                assert "413" in codes, (method, path)
            if path.startswith("/v1/") and not path.endswith("/status"):
                want = "viewerJwt" if any(v in path for v in viewer_paths) else "operatorKey"
                assert op["security"] == [{want: []}], (method, path)
                assert "401" in codes, (method, path)
    json.dumps(doc)  # serialisable as served
