"""Payment-provider adapter: the Protocol the purchase flow calls, and a test double.

Real processors dedupe charges by an idempotency key; the purchase flow always sends the same key
for the same purchase, so a retried charge can never be taken twice, even across our own retries.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "ChargeResult",
    "FakePaymentProvider",
    "PaymentDeclined",
    "PaymentProvider",
    "PaymentUnavailable",
]


class PaymentDeclined(Exception):
    """The processor refused the charge (card declined...): final, not retryable."""


class PaymentUnavailable(Exception):
    """The processor could not be reached or failed: the outcome is unknown, retry with the same key."""


@dataclass(frozen=True, slots=True)
class ChargeResult:
    """A successful charge."""

    reference: str
    amount_cents: int
    currency: str


class PaymentProvider(Protocol):
    """What the purchase flow needs from a payment processor."""

    async def charge(
        self,
        *,
        idempotency_key: str,
        account_id: str,
        amount_cents: int,
        currency: str,
        description: str,
    ) -> ChargeResult:
        """Charge once per ``idempotency_key``; raise PaymentDeclined or PaymentUnavailable."""
        ...


@dataclass
class FakePaymentProvider:
    """Test double with configurable latency and failure rate; counts every call and every charge."""

    latency_s: float = 0.05
    failure_rate: float = 0.0
    declined_accounts: frozenset[str] = frozenset()
    rng: random.Random = field(default_factory=random.Random)
    calls: int = 0
    charges: dict[str, ChargeResult] = field(default_factory=dict)

    async def charge(
        self,
        *,
        idempotency_key: str,
        account_id: str,
        amount_cents: int,
        currency: str,
        description: str,
    ) -> ChargeResult:
        """Sleep ``latency_s``, then fail, decline, replay or take the charge."""
        self.calls += 1
        await asyncio.sleep(self.latency_s)
        if self.rng.random() < self.failure_rate:
            raise PaymentUnavailable("test double: provider unavailable")
        if account_id in self.declined_accounts:
            raise PaymentDeclined("test double: card declined")
        done = self.charges.get(idempotency_key)
        if done is None:
            done = ChargeResult(f"ch_{len(self.charges) + 1:08d}", amount_cents, currency)
            self.charges[idempotency_key] = done
        return done
