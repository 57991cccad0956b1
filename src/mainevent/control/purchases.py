"""Purchase flow: idempotent pay-per-view purchases through the payment-provider adapter.

A purchase row is inserted as ``pending`` under a unique (account, Idempotency-Key); only the
caller that created it (or that retakes one whose charge errored) calls the provider, inside the
purchase bulkhead, with the same idempotency key; concurrent retries wait for its outcome.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, Protocol

import anyio
from fastapi.responses import JSONResponse, Response

from mainevent.common.admission import Bulkhead
from mainevent.control.entitlement import Denial
from mainevent.control.errors import Conflict, ControlError, Unavailable
from mainevent.control.payments import PaymentDeclined, PaymentProvider
from mainevent.control.playback import PlaybackService, deny
from mainevent.control.store import ControlStore

__all__ = ["PurchaseContext", "run_purchase"]


class PurchaseContext(Protocol):
    """What the purchase flow uses (``ControlServices`` provides it)."""

    store: ControlStore
    playback: PlaybackService
    payments: PaymentProvider
    purchases: Bulkhead
    payment_timeout_s: float
    purchase_wait_s: float


async def _run_sync(fn: Callable[..., Any], *args: Any) -> Any:
    return await anyio.to_thread.run_sync(fn, *args)


async def run_purchase(svc: PurchaseContext, account: str, key: str, event_id: str) -> Response:
    """Buy ``event_id``'s pay-per-view product for ``account`` once per Idempotency-Key ``key``."""
    playback = svc.playback
    store = svc.store
    event = await playback.event(event_id, playback.clock())
    policy = event.policy
    if policy.ppv_product is None or policy.ppv_price_cents is None:
        raise Conflict("not_purchasable", f"event {event_id!r} has no pay-per-view product")
    if await _run_sync(store.load_viewer, account) is None:
        raise deny(Denial.ACCOUNT_NOT_FOUND)
    purchase, must_charge = await _run_sync(
        store.begin_purchase,
        account,
        key,
        event_id,
        policy.ppv_product,
        policy.ppv_price_cents,
        policy.currency,
    )
    if must_charge:
        if not svc.purchases.try_acquire():
            await _run_sync(store.finish_purchase, purchase.id, "error", None, "busy")
            raise Unavailable(
                "purchases_busy", "too many purchases in progress; retry shortly", retry_after=2
            )
        try:
            result = await asyncio.wait_for(
                svc.payments.charge(
                    idempotency_key=f"{account}:{key}",
                    account_id=account,
                    amount_cents=purchase.amount_cents,
                    currency=purchase.currency,
                    description=f"{policy.ppv_product} ({event_id})",
                ),
                svc.payment_timeout_s,
            )
        except PaymentDeclined:
            purchase = await _run_sync(
                store.finish_purchase, purchase.id, "failed", None, "payment_declined"
            )
        except Exception:
            purchase = await _run_sync(
                store.finish_purchase, purchase.id, "error", None, "payment_unavailable"
            )
        else:
            purchase = await _run_sync(
                store.finish_purchase, purchase.id, "paid", result.reference, None
            )
            await playback.invalidate_account(account)
        finally:
            svc.purchases.release()
        replayed = False
    else:
        replayed = True
        deadline = time.monotonic() + svc.purchase_wait_s
        while purchase.status == "pending" and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            purchase = await _run_sync(store.get_purchase, purchase.id)
    body = json.loads(purchase.model_dump_json())
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    if purchase.status == "paid":
        return JSONResponse(body, status_code=200 if replayed else 201, headers=headers)
    if purchase.status == "failed":
        raise ControlError(
            "payment_declined",
            "the payment was declined; use another payment method and a new Idempotency-Key",
            status=402,
        )
    if purchase.status == "pending":
        raise Conflict(
            "purchase_in_progress",
            "this purchase is still being processed; retry with the same key",
            retry_after=1,
        )
    raise Unavailable(
        "payment_unavailable",
        "the payment provider is unavailable; retry with the same Idempotency-Key",
        retry_after=2,
    )
