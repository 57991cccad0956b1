"""Sans-IO policy of one ingest role: who may connect and publish, and the count of who was refused.

`IngestGuard` decides (connection-attempt rate per peer address, unauthenticated connections at
once, app and stream key compared in constant time, one live publisher per role unless the
operator armed a takeover) and counts every refusal by reason, so the gateway's log lines and the
`/metrics` counters say the same thing. Time comes in as `now` (monotonic seconds).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from mainevent.common.ratelimit import KeyedRateLimiter

__all__ = [
    "RTMP_REASONS",
    "SRT_REASONS",
    "Claim",
    "IngestGuard",
    "IngestLimits",
]

# Refusal reasons (the `reason` label of mainevent_ingest_refused_total).
RTMP_REASONS = (
    "wrong_key",  # publish with another stream key
    "wrong_app",  # connect to another application than `live`
    "malformed",  # not RTMP, or RTMP we do not accept (garbage, oversized, play, …)
    "incomplete",  # closed the connection before publishing
    "handshake_timeout",  # no valid publish within the handshake deadline
    "role_busy",  # right key, but a publisher is already live on this role
    "rate_limited",  # too many connection attempts from this address
    "too_many_pending",  # too many unauthenticated connections at once
    "ingest_unavailable",  # authenticated, but the internal listener never became ready
    "internal_error",  # a bug in the gateway (logged with a traceback)
)
SRT_REASONS = (
    "wrong_passphrase",  # libsrt: SRT_REJ_BADSECRET
    "passphrase_required",  # libsrt: SRT_REJ_UNSECURE, the listener has a passphrase
    "passphrase_unexpected",  # libsrt: SRT_REJ_UNSECURE, the listener has none
    "srt_rejected",  # any other libsrt handshake rejection
    "second_publisher",  # a handshake while another caller is live (dropped by the relay)
    "rate_limited",  # too many new SRT peers (or handshakes from one) from this address
    "too_many_pending",  # too many SRT callers not yet live at once
)

LOG_LINES_PER_S = 10


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """Limits on connection attempts to one ingest role."""

    max_pending: int = 8
    attempts_per_second: float = 2.0
    attempts_burst: int = 10
    handshake_timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to an authenticated publisher asking for the role."""

    ticket: int | None  # None: refused
    refusal: str | None = None
    displaced: int | None = None  # the live publisher this one takes over from


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class IngestGuard:
    """Admission, credentials, the live-publisher slot and refusal counts of one ingest role."""

    def __init__(
        self,
        *,
        app: str,
        stream_key: str,
        limits: IngestLimits = IngestLimits(),
        reasons: tuple[str, ...] = RTMP_REASONS,
    ) -> None:
        self.app = app
        self.stream_key = stream_key
        self.limits = limits
        self.refused: dict[str, int] = dict.fromkeys(reasons, 0)
        self.accepted = 0
        self.pending = 0
        self._rate = KeyedRateLimiter(limits.attempts_per_second, limits.attempts_burst, 10_000)
        self._tickets = 0
        self.live_ticket: int | None = None
        self.live_peer: str | None = None
        self.live_since: float | None = None
        self._takeover_until: float | None = None
        self._log_window = 0.0
        self._logged = 0
        self._suppressed = 0

    # -- connection attempts -------------------------------------------------------------------

    def admit(self, peer_host: str, now: float) -> str | None:
        """A new connection from `peer_host`: None admits it (it is pending), else the reason."""
        if self._rate.take(peer_host, now) > 0:
            return "rate_limited"
        if self.pending >= self.limits.max_pending:
            return "too_many_pending"
        self.pending += 1
        return None

    def leave_pending(self) -> None:
        """An admitted connection authenticated, was refused or went away."""
        self.pending = max(0, self.pending - 1)

    def check_app(self, app: str) -> str | None:
        """`connect` to `app`: None if it is ours."""
        return None if _same(_bare(app), self.app) else "wrong_app"

    def check_key(self, stream_name: str) -> str | None:
        """`publish` of `stream_name`: None if it carries our stream key."""
        return None if _same(_bare(stream_name), self.stream_key) else "wrong_key"

    # -- the live slot -------------------------------------------------------------------------

    def allow_takeover(self, now: float, within_s: float = 60.0) -> None:
        """Operator: the next authenticated publisher (within `within_s`) replaces the live one."""
        self._takeover_until = now + within_s

    def takeover_armed(self, now: float) -> bool:
        return self._takeover_until is not None and now <= self._takeover_until

    def claim(self, peer: str, now: float) -> Claim:
        """An authenticated publisher asks for the role."""
        displaced = None
        if self.live_ticket is not None:
            if not self.takeover_armed(now):
                return Claim(None, "role_busy")
            displaced = self.live_ticket
        self._takeover_until = None
        self._tickets += 1
        self.live_ticket, self.live_peer, self.live_since = self._tickets, peer, now
        return Claim(self._tickets, displaced=displaced)

    def went_live(self, ticket: int, now: float) -> None:
        """The claimed publisher's media now flows."""
        if ticket == self.live_ticket:
            self.accepted += 1
            self.live_since = now

    def release(self, ticket: int) -> None:
        """A publisher left (a displaced one no longer owns the slot)."""
        if ticket == self.live_ticket:
            self.live_ticket = self.live_peer = self.live_since = None

    # -- refusals ------------------------------------------------------------------------------

    def count_refusal(self, reason: str, now: float) -> tuple[bool, int]:
        """Count a refusal: (log this one?, lines suppressed since the last one logged).

        At most `LOG_LINES_PER_S` refusals a second are logged, so a flood cannot flood the log;
        every one is counted.
        """
        self.refused[reason] = self.refused.get(reason, 0) + 1
        if now - self._log_window >= 1.0:
            self._log_window, self._logged = now, 0
        if self._logged >= LOG_LINES_PER_S:
            self._suppressed += 1
            return False, 0
        self._logged += 1
        suppressed, self._suppressed = self._suppressed, 0
        return True, suppressed

    def status(self, now: float) -> dict[str, Any]:
        """JSON-able snapshot: live publisher, pending connections, refusals by reason."""
        return {
            "live_peer": self.live_peer,
            "live_for_s": None if self.live_since is None else round(now - self.live_since, 3),
            "pending": self.pending,
            "accepted": self.accepted,
            "refused": dict(self.refused),
            "takeover_armed": self.takeover_armed(now),
        }


def _bare(name: str) -> str:
    """`live` from `live/`, `key` from `key?param=…` (encoders append both)."""
    return name.split("?", 1)[0].rstrip("/")
