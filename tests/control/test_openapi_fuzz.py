"""Schemathesis against the OpenAPI document: generated requests on every route, in-process on a
real SQLite store, never get a 500 or an answer outside the documented schema.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.generation.case import Case
from schemathesis.specs.openapi.checks import positive_data_acceptance
from starlette.types import ASGIApp, Receive, Scope, Send

from mainevent.common.admission import AdmissionController, AdmissionPolicy
from mainevent.control.app import create_app
from mainevent.control.db import open_database
from mainevent.control.server import build_services
from tests.control.conftest import ADMIN, make_settings

VIEWER_PREFIXES = ("/v1/sessions/", "/v1/purchases")
# What a schema-valid request may still get besides success: credentials and state (unknown
# ids, conflicts, a random If-Match), rate limits.
STATE_STATUSES = {401, 403, 404, 409, 412, 429}
# Event bodies have rules JSON Schema cannot state (ends_at after starts_at, segment durations
# that divide a day, unique rendition ids, CDNs from the settings): a schema-valid body may be
# refused for those, and only for those.
RULES_BEYOND_SCHEMA = {"POST /v1/events", "PATCH /v1/events/{event_id}"}


def _accepted_or_refused_for_a_stated_reason(case: Case, status: int, text: str) -> None:
    """Schemathesis' positive_data_acceptance, knowing the refusals no schema can express."""
    if status < 300 or status in STATE_STATUSES:
        return
    assert status == 422, (case.operation.label, status, text)
    error = json.loads(text)["error"]
    if error["reason"] == "idempotency_key_reused":  # generated cases reuse generated keys
        return
    assert case.operation.label in RULES_BEYOND_SCHEMA, text
    rules = {e["rule"] for e in error["details"]["errors"]}
    assert rules <= {"value_error", "unknown_cdn"}, text


async def _seed(app: Any) -> None:
    """A live pay-per-view event `final` and an account `v1`, so generated calls also find things."""
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://control"
    ) as c:
        r = await c.post(
            "/v1/events",
            json={
                "id": "final",
                "title": "Final",
                "starts_at": "2026-01-01T20:00:00Z",
                "ends_at": "2036-01-01T23:00:00Z",
                "policy": {"ppv_product": "ppv-final", "ppv_price_cents": 100},
            },
            headers=admin | {"Idempotency-Key": "seed-1"},
        )
        assert r.status_code == 201, r.text
        for i, step in enumerate(("scheduled", "rehearsal", "live")):
            r = await c.post(
                "/v1/events/final/transitions",
                json={"to": step},
                headers=admin | {"Idempotency-Key": f"seed-t{i}"},
            )
            assert r.status_code == 200, r.text
        r = await c.put("/v1/accounts/v1", json={}, headers=admin | {"Idempotency-Key": "seed-a"})
        assert r.status_code == 201, r.text


def _document() -> dict[str, Any]:
    """The served OpenAPI document (of an app on a throwaway database)."""
    with tempfile.TemporaryDirectory(prefix="mainevent-openapi-") as d:
        db = open_database(f"sqlite:///{d}/doc.db")
        try:
            app = create_app(build_services(make_settings(), db=db))

            async def fetch() -> dict[str, Any]:
                async with httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://control"
                ) as c:
                    doc: dict[str, Any] = (await c.get("/openapi.json")).json()
                    return doc

            return anyio.run(fetch)
        finally:
            db.dispose()


# The app under test is built per test (fresh SQLite file, seeded) by the fixture below; the
# schema's ASGI app forwards to it. (Schemathesis' own fixture loader does not run on pytest 9.)
_CURRENT: list[ASGIApp] = []


async def _forward(scope: Scope, receive: Receive, send: Send) -> None:
    await _CURRENT[-1](scope, receive, send)


schema = schemathesis.openapi.from_dict(_document())
schema.app = _forward


@pytest.fixture
def viewer_token(tmp_path: Path) -> Iterator[str]:
    """A seeded control plane on a fresh SQLite file behind the schema's app; yields a viewer JWT."""
    db = open_database(f"sqlite:///{tmp_path}/control.db")
    # Load shedding and store timeouts are tested on their own; here a busy machine (the test
    # thread and the app share the GIL) must not turn a generated request into a 503.
    services = build_services(make_settings(store_timeout_s=60.0), db=db)
    services.admission = AdmissionController(
        AdmissionPolicy(
            delay_target=(math.inf,) * 4,
            delay_full=(math.inf,) * 4,
            max_wait=(math.inf,) * 4,
            max_queued=(math.inf,) * 4,
        )
    )
    app = create_app(services)
    anyio.run(_seed, app)
    assert services.dev_idp is not None
    _CURRENT.append(app)
    try:
        yield services.dev_idp.mint("v1", ttl_s=3600)
    finally:
        _CURRENT.remove(app)
        db.dispose()


def _auth(case: Case, viewer_token: str) -> dict[str, str]:
    path = case.operation.path
    viewer = path.endswith("/playback") or path.startswith(VIEWER_PREFIXES)
    return {"Authorization": f"Bearer {viewer_token if viewer else ADMIN}"}


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_every_route_answers_generated_requests_within_its_schema(
    case: Case, viewer_token: str
) -> None:
    """No generated request (valid or not) gets a 500 or a response the OpenAPI document does not describe."""
    response = case.call_and_validate(
        headers=_auth(case, viewer_token), excluded_checks=[positive_data_acceptance]
    )
    if case.meta is not None and case.meta.generation.mode.is_positive:
        _accepted_or_refused_for_a_stated_reason(case, response.status_code, response.text)
