"""Purchases: idempotent under concurrent retries, payment failures, bulkhead isolation (SQLite + PostgreSQL)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import anyio
import httpx
import pytest
from sqlalchemy import update

from mainevent.control.db import Purchase
from tests.control.conftest import Harness

pytestmark = pytest.mark.anyio

PPV = {"policy": {"ppv_product": "ppv-final", "ppv_price_cents": 1999, "currency": "EUR"}}


async def _buy(h: Harness, account: str, key: str, event_id: str = "final") -> httpx.Response:
    return await h.client.post(
        "/v1/purchases",
        json={"event_id": event_id},
        headers=h.viewer(account) | {"Idempotency-Key": key},
    )


async def test_concurrent_retries_charge_exactly_once(harness: Harness) -> None:
    """Ten simultaneous retries of one purchase charge the card once and all see the same purchase."""
    harness.payments.latency_s = 0.05
    await harness.event("final", "live", **PPV)
    await harness.account("v1")
    responses: list[httpx.Response] = []

    async def one() -> None:
        responses.append(await _buy(harness, "v1", "buy-1"))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(one)
    assert harness.payments.calls == 1
    assert len(harness.payments.charges) == 1
    assert {r.status_code for r in responses} <= {200, 201}, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.status_code == 201 for r in responses) == 1
    assert all(r.json()["status"] == "paid" and r.json()["amount_cents"] == 1999 for r in responses)
    assert (await harness.play("v1")).status_code == 200  # the purchase unlocked playback at once


async def test_purchase_then_play_and_replay_later(harness: Harness) -> None:
    """A viewer refused with purchase_required buys, then plays; a later retry of the purchase is a replay."""
    await harness.event("final", "live", **PPV)
    await harness.account("v1")
    assert (await harness.play("v1")).json()["error"]["reason"] == "purchase_required"
    assert (await _buy(harness, "v1", "k")).status_code == 201
    assert (await harness.play("v1")).status_code == 200
    again = await _buy(harness, "v1", "k")
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    other = await _buy(harness, "v1", "k", event_id="semi")
    assert other.status_code in (404, 422)
    assert harness.payments.calls == 1


async def test_declined_and_unavailable_payments(harness: Harness) -> None:
    """A declined card answers 402 (final); a provider outage answers 503 and a retry with the same key charges once."""
    await harness.event("final", "live", **PPV)
    await harness.account("v1")
    await harness.account("broke")
    harness.payments.declined_accounts = frozenset({"broke"})
    r = await _buy(harness, "broke", "k1")
    assert (r.status_code, r.json()["error"]["reason"]) == (402, "payment_declined")
    harness.payments.failure_rate = 1.0
    r = await _buy(harness, "v1", "k2")
    assert (r.status_code, r.json()["error"]["reason"]) == (
        503,
        "payment_unavailable",
    )
    assert "retry-after" in r.headers
    harness.payments.failure_rate = 0.0
    r = await _buy(harness, "v1", "k2")
    assert r.status_code == 201
    assert len(harness.payments.charges) == 1


async def test_purchase_rules(harness: Harness) -> None:
    """No key → 400; events without a product → 409; unknown accounts → 403."""
    await harness.event("final", "live", **PPV)
    await harness.event("free", "live")
    r = await harness.client.post(
        "/v1/purchases", json={"event_id": "final"}, headers=harness.viewer("v1")
    )
    assert r.json()["error"]["reason"] == "idempotency_key_required"
    assert (await _buy(harness, "v1", "k")).json()["error"]["reason"] == "account_not_found"
    await harness.account("v1")
    assert (await _buy(harness, "v1", "k", event_id="free")).json()["error"][
        "reason"
    ] == "not_purchasable"


async def test_slow_payment_provider_does_not_slow_playback(harness: Harness) -> None:
    """With the payment provider hanging and the purchase bulkhead full, playback starts stay fast."""
    harness.payments.latency_s = 2.0
    harness.services.purchases.limit = 2
    await harness.event("final", "live", **PPV)
    for i in range(6):
        await harness.account(f"b{i}")
    await harness.account("viewer")
    results: list[int] = []

    async def buy(i: int) -> None:
        results.append((await _buy(harness, f"b{i}", f"k{i}")).status_code)

    async with anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(buy, i)
        await anyio.sleep(0.1)
        t0 = time.monotonic()
        r = await harness.client.post(
            "/v1/events/final/playback",
            json={"device": {"id": "d"}},
            headers=harness.viewer("viewer"),
        )
        elapsed = time.monotonic() - t0
    assert r.json()["error"]["reason"] == "purchase_required"
    assert elapsed < 0.5
    assert sorted(results).count(503) == 4
    assert harness.payments.calls == 2


async def test_purchase_left_pending_by_a_crash_is_retaken_and_charged_once(
    harness: Harness,
) -> None:
    """If the process died mid-charge, a retry with the same key after a while completes it, charging once."""
    await harness.event("final", "live", **PPV)
    await harness.account("v1")
    store = harness.services.store
    purchase, first = store.begin_purchase("v1", "k", "final", "ppv-final", 1999, "EUR")
    assert first  # ... and then the process "crashed" before charging
    harness.services.purchase_wait_s = 0.1
    r = await _buy(harness, "v1", "k")
    assert r.status_code == 409  # still pending, and recent: someone may be charging it right now
    assert r.json()["error"]["reason"] == "purchase_in_progress"
    with store.db.write.begin() as s:
        s.execute(
            update(Purchase)
            .where(Purchase.id == purchase.id)
            .values(updated_at=datetime(2000, 1, 1, tzinfo=UTC))
        )
    r = await _buy(harness, "v1", "k")
    assert r.status_code == 201
    assert r.json()["status"] == "paid"
    assert harness.payments.calls == 1
