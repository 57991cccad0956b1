"""Playback authorisation: rules, decision cache, breaker, sessions and token issue, in one service.

The HTTP layer (``app.py``) authenticates the viewer and hands over plain values; this service
takes ``now`` from its injected clock, asks the entitlement source only when the decision cache
has no fresh answer and the circuit breaker allows it, and fails open for known-good viewers.

Sessions, rate-limit buckets and decisions live in stores (embedded, or on Redis shared by every
worker: :class:`PlaybackStores`). When a shared store is down, new starts fail closed (503
``session_store_unavailable``, retryable) and refreshes of playing sessions fail open (their
token is proof enough; the grant says ``degraded``). Nothing turns into a 500.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mainevent.common.breaker import BreakerState, CircuitBreaker
from mainevent.common.ratelimit import MemoryRateLimitStore, RateLimitStore
from mainevent.common.shared import SharedStateUnavailable
from mainevent.common.tokens import TokenKey, TokenSigner, TokenVerifier
from mainevent.control.decisions import CachedDecision, DecisionStore, MemoryDecisionStore
from mainevent.control.entitlement import (
    DENIAL_STATUS,
    Denial,
    EventFacts,
    RegionTable,
    WindowDecision,
    check_entitlement,
    check_event_window,
    check_region,
)
from mainevent.control.errors import ControlError
from mainevent.control.lifecycle import EventStatus
from mainevent.control.schemas import (
    CdnChoice,
    DeviceInfo,
    PlaybackGrant,
    PlayerConfig,
    SteeringChoice,
)
from mainevent.control.sessions import MemorySessionStore, PlaybackSession, SessionStore
from mainevent.control.settings import ControlSettings
from mainevent.control.sources import EntitlementSource

__all__ = [
    "PlaybackService",
    "PlaybackStats",
    "PlaybackStores",
    "StartPlan",
    "deny",
    "memory_stores",
]

_ACL_EVENT = re.compile(r"(?:^|~)acl=/live/([a-z0-9][a-z0-9_-]{0,63})/\*(?:~|$)")
_MESSAGES: dict[Denial, str] = {
    Denial.EVENT_NOT_FOUND: "no such event",
    Denial.EVENT_NOT_PUBLISHED: "this event is not published yet",
    Denial.WAITING_ROOM_CLOSED: "the waiting room for this event is not open yet",
    Denial.EVENT_ENDED: "this event has ended",
    Denial.REGION_UNKNOWN: "your region could not be determined and this event is limited to some regions",
    Denial.REGION_NOT_ALLOWED: "this event is not available in your region",
    Denial.BLACKOUT: "this event is blacked out in your region",
    Denial.ACCOUNT_NOT_FOUND: "no account for this sign-in",
    Denial.AGE_UNKNOWN: "this event has an age limit and your date of birth is not known",
    Denial.AGE_RESTRICTED: "this event has an age limit you do not meet",
    Denial.SUBSCRIPTION_REQUIRED: "this event needs a subscription plan that includes it",
    Denial.SUBSCRIPTION_EXPIRED: "your subscription has expired",
    Denial.PURCHASE_REQUIRED: "this event must be purchased",
    Denial.CONCURRENT_STREAM_LIMIT: "too many streams are playing on this account; stop one and retry",
    Denial.SESSION_NOT_FOUND: "no such playback session (it expired); start playback again",
    Denial.SESSION_MISMATCH: "this playback session belongs to another account or event",
    Denial.RATE_LIMITED: "too many requests; retry later",
    Denial.ENTITLEMENT_UNAVAILABLE: "entitlement service temporarily unavailable; retry shortly",
    Denial.SESSION_STORE_UNAVAILABLE: "playback sessions are temporarily unavailable; retry shortly",
}
_RETRYABLE = {
    Denial.RATE_LIMITED,
    Denial.OVERLOADED,
    Denial.ENTITLEMENT_UNAVAILABLE,
    Denial.WAITING_ROOM_CLOSED,
    Denial.CONCURRENT_STREAM_LIMIT,
    Denial.SESSION_STORE_UNAVAILABLE,
}


def deny(
    reason: Denial, *, retry_after: float | None = None, message: str | None = None
) -> ControlError:
    """The error answered for a denial (status by reason)."""
    err = ControlError(
        reason.value,
        message or _MESSAGES.get(reason, reason.value),
        status=DENIAL_STATUS.get(reason, 403),
        retry_after=retry_after,
    )
    err.details = {"retryable": reason in _RETRYABLE}
    return err


@dataclass(slots=True)
class PlaybackStats:
    """Counters for /metrics and the benchmark."""

    grants: int = 0
    preauth_grants: int = 0
    refreshes: int = 0
    degraded_grants: int = 0
    store_lookups: int = 0
    store_failures: int = 0
    shared_state_failures: int = 0
    front_answered: int = 0
    """Admitted playback starts the HTTP front answered itself (``playback_front.py``)."""
    front_passed: int = 0
    """Admitted playback starts it handed on to the FastAPI route."""
    denials: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PlaybackStores:
    """Where the playback service keeps its shared state; ``embedded``: all in this process."""

    sessions: SessionStore
    decisions: DecisionStore
    account_limits: RateLimitStore
    address_limits: RateLimitStore
    embedded: bool
    close: Callable[[], Awaitable[None]] | None = None
    """Releases the stores' connections (Redis), if any."""


def memory_stores(settings: ControlSettings) -> PlaybackStores:
    """The embedded stores (one worker): sans-IO cores in this process's memory."""
    return PlaybackStores(
        sessions=MemorySessionStore(settings.session_ttl_s),
        decisions=MemoryDecisionStore(settings.decision_ttl_s, settings.known_good_ttl_s),
        account_limits=MemoryRateLimitStore(settings.account_rate, settings.account_burst),
        address_limits=MemoryRateLimitStore(settings.address_rate, settings.address_burst),
        embedded=True,
    )


@dataclass(frozen=True, slots=True)
class StartPlan:
    """A new start that :meth:`PlaybackService.cached_start` found decidable without the store."""

    event: EventFacts
    window: WindowDecision


class PlaybackService:
    """Decides playback requests; every collaborator is injected (and fakeable)."""

    def __init__(
        self,
        settings: ControlSettings,
        source: EntitlementSource,
        *,
        clock: Callable[[], float] = time.time,
        stores: PlaybackStores | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.clock = clock
        keys = {k.kid: k.secret_hex for k in settings.token_keys}
        self.signer = TokenSigner(keys, kid=settings.signing_kid)
        self.verifier = TokenVerifier(
            {
                k.kid: TokenKey.from_hex(k.kid, k.secret_hex, k.not_after)
                for k in settings.token_keys
            },
            retired=settings.retired_kids,
        )
        self.regions = RegionTable((r.cidr, r.region) for r in settings.regions)
        self.stores = stores or memory_stores(settings)
        self._close = self.stores.close
        self.sessions = self.stores.sessions
        self.decisions = self.stores.decisions
        self.breaker = CircuitBreaker(
            failure_threshold=settings.breaker_failures,
            slow_call_s=settings.store_timeout_s,
            open_s=settings.breaker_open_s,
        )
        self.account_limits = self.stores.account_limits
        self.address_limits = self.stores.address_limits
        self.stats = PlaybackStats()
        self._events: dict[str, tuple[EventFacts | None, float]] = {}
        self.event_ttl_s = 1.0

    async def aclose(self) -> None:
        """Release the stores' connections (once; later calls do nothing)."""
        close, self._close = self._close, None
        if close is not None:
            await close()

    # -- helpers ----------------------------------------------------------------------------------

    def _deny(self, reason: Denial, **kw: float | str | None) -> ControlError:
        self.stats.denials[reason.value] = self.stats.denials.get(reason.value, 0) + 1
        return deny(reason, **kw)  # type: ignore[arg-type]

    def _unavailable(self) -> ControlError:
        self.stats.shared_state_failures += 1
        return self._deny(Denial.SESSION_STORE_UNAVAILABLE, retry_after=1.0)

    async def rate_limit(
        self, account_id: str | None, address: str | None, now: float, *, refresh: bool = False
    ) -> None:
        """Token buckets per account and per address; refreshes skip the address bucket (big NATs).

        Buckets unreachable (shared store down): a refresh goes on, anything else is refused
        with a retryable 503.
        """
        try:
            if address is not None and not refresh and account_id is not None:
                # Both buckets in one round trip on Redis; the account's only if the address's allowed.
                refused, wait = await self.address_limits.take_in_turn(
                    address, self.account_limits, account_id, now
                )
                if refused is not None:
                    raise self._deny(Denial.RATE_LIMITED, retry_after=wait)
                return
            if address is not None and not refresh:
                wait = await self.address_limits.take(address, now)
                if wait > 0:
                    raise self._deny(Denial.RATE_LIMITED, retry_after=wait)
            if account_id is not None:
                wait = await self.account_limits.take(account_id, now)
                if wait > 0:
                    raise self._deny(Denial.RATE_LIMITED, retry_after=wait)
        except SharedStateUnavailable:
            if not refresh:
                raise self._unavailable() from None
            self.stats.shared_state_failures += 1

    def region_of(
        self, peer: str | None, forwarded_for: str | None, edge_region: str | None
    ) -> tuple[str | None, str | None]:
        """(client address, region): trusted edges may set both by header, others by peer address."""
        if (
            peer is not None
            and self.settings.trusted_edges
            and self.regions.contains(peer, self.settings.trusted_edges)
        ):
            address = forwarded_for.split(",")[0].strip() if forwarded_for else peer
            if edge_region:
                return address, edge_region
            return address, self.regions.lookup(address)
        return peer, self.regions.lookup(peer)

    async def event(self, event_id: str, now: float) -> EventFacts:
        """Event snapshot, cached for ``event_ttl_s`` (stale copy kept if the store fails)."""
        cached = self._events.get(event_id)
        if cached is not None and now - cached[1] < self.event_ttl_s:
            facts = cached[0]
        else:
            try:
                # asyncio.timeout, unlike wait_for on 3.11, runs the lookup in this task: an
                # inline (SQLite) lookup then costs no trip through a busy event loop.
                async with asyncio.timeout(self.settings.store_timeout_s * 4):
                    facts = await self.source.event(event_id)
                self._events[event_id] = (facts, now)
            except Exception:
                if cached is None:
                    raise self._deny(Denial.ENTITLEMENT_UNAVAILABLE, retry_after=1.0) from None
                facts = cached[0]
        if facts is None:
            raise self._deny(Denial.EVENT_NOT_FOUND)
        return facts

    def invalidate_event(self, event_id: str) -> None:
        """An operator changed the event: re-read it on next use."""
        self._events.pop(event_id, None)

    async def invalidate_account(self, account_id: str) -> None:
        """A purchase or plan change: re-ask the store for this account.

        With the shared store down this is lost; its decisions are not read meanwhile (a miss),
        and a cached denial outlives a Redis restart by at most ``decision_ttl_s``.
        """
        try:
            await self.decisions.invalidate_account(account_id)
        except SharedStateUnavailable:
            self.stats.shared_state_failures += 1

    async def _cached_decision(
        self, account_id: str, event_id: str, now: float
    ) -> CachedDecision | None:
        try:
            return await self.decisions.get(account_id, event_id, now)
        except SharedStateUnavailable:  # ask the entitlement store instead
            self.stats.shared_state_failures += 1
            return None

    async def _known_good(self, account_id: str, event_id: str, now: float, *, put: bool) -> bool:
        """Read (``put=False``) or record (``put=True``) a known-good decision; False if unreachable."""
        try:
            if put:
                await self.decisions.mark_known_good(account_id, event_id, now)
                return True
            return await self.decisions.known_good(account_id, event_id, now)
        except SharedStateUnavailable:
            self.stats.shared_state_failures += 1
            return False

    async def _entitled(
        self, account_id: str, event: EventFacts, now: float, *, proven: bool
    ) -> bool:
        """True if entitled, False if granted by fail-open (degraded); raises a denial otherwise.

        ``proven``: the caller holds a valid playback token for this event (a prior positive decision).
        """
        cached = await self._cached_decision(account_id, event.id, now)
        if cached is not None:
            if cached.denial is not None:
                raise self._deny(cached.denial)
            return True
        if self.breaker.allow(now):
            self.stats.store_lookups += 1
            t0 = time.monotonic()
            try:
                async with asyncio.timeout(self.settings.store_timeout_s):
                    viewer = await self.source.viewer(account_id)
            except Exception:
                self.stats.store_failures += 1
                self.breaker.record(now, False)
            else:
                self.breaker.record(now, True, time.monotonic() - t0)
                denial = check_entitlement(
                    event.policy, viewer, now, datetime.fromtimestamp(now, UTC).date()
                )
                try:
                    await self.decisions.put(account_id, event.id, denial, now)
                except SharedStateUnavailable:
                    self.stats.shared_state_failures += 1
                if denial is not None:
                    raise self._deny(denial)
                return True
        if self.settings.fail_open_known_good and (
            proven or await self._known_good(account_id, event.id, now, put=False)
        ):
            self.stats.degraded_grants += 1
            return False
        retry = self.settings.breaker_open_s if self.breaker.state is BreakerState.OPEN else 1.0
        raise self._deny(Denial.ENTITLEMENT_UNAVAILABLE, retry_after=retry)

    def _grant(
        self,
        session: PlaybackSession,
        event: EventFacts,
        window: WindowDecision,
        now: float,
        degraded: bool,
        account_id: str,
    ) -> PlaybackGrant:
        ttl = self.settings.token_ttl_s
        start = (
            int(window.valid_from) if window.preauth else int(now) - 30
        )  # tolerate origin clock skew
        expires = int(window.valid_from) + ttl
        token = self.signer.sign(
            acl=f"/live/{event.id}/*",
            start=start,
            expires=expires,
            session_id=session.id,
            data=hashlib.sha256(account_id.encode()).hexdigest()[:16],
        )
        path = f"/t/{token}/live/{event.id}/master.m3u8"
        # Built without validation (model_construct: ~10 us less per grant): every value is ours
        # and of the declared type, so the JSON is the same as from validated models.
        cdns = [
            CdnChoice.model_construct(name=c, manifest_url=self.settings.cdns.get(c, "") + path)
            for c in event.cdns
        ]
        refresh_at = expires - min(300, ttl // 5)
        pathway = cdns[0].name
        steer = f"{self.settings.steering.public_url.rstrip('/')}/{event.id}"
        query = f"?sid={session.id}&p={pathway}"
        return PlaybackGrant.model_construct(
            session_id=session.id,
            token=token,
            valid_from=start,
            expires_at=expires,
            manifest_url=cdns[0].manifest_url,
            cdn=cdns[0],
            fallbacks=cdns[1:],
            waiting_room=bool(window.preauth),
            degraded=bool(degraded),
            player=PlayerConfig.model_construct(
                low_latency=event.latency_mode == "low",
                segment_duration_ms=int(event.segment_duration_ms),
                dvr_window_s=int(event.dvr_window_s),
                heartbeat_interval_s=float(self.settings.heartbeat_interval_s),
                refresh_at=refresh_at,
            ),
            steering=SteeringChoice.model_construct(
                pathway=pathway,
                url=f"{steer}/hls{query}",
                dash_url=f"{steer}/dash{query}",
                manifest_url=f"{cdns[0].manifest_url}?pathway={pathway}",
            ),
        )

    # -- operations -------------------------------------------------------------------------------

    async def authorise(
        self, account_id: str, event_id: str, device: DeviceInfo, region: str | None
    ) -> PlaybackGrant:
        """A new playback start (or a waiting-room pre-authorisation)."""
        now = self.clock()
        event = await self.event(event_id, now)
        window = check_event_window(event, now, self.settings.preauth_window_s)
        if isinstance(window, Denial):
            retry = None
            if window is Denial.WAITING_ROOM_CLOSED and event.starts_at is not None:
                retry = max(1.0, event.starts_at - self.settings.preauth_window_s - now)
            raise self._deny(window, retry_after=retry)
        denial = check_region(event, region, now)
        if denial is not None:
            raise self._deny(denial)
        entitled = await self._entitled(account_id, event, now, proven=False)
        return await self.open_session(
            account_id, StartPlan(event, window), device, now, degraded=not entitled
        )

    async def cached_start(
        self, account_id: str, event_id: str, region: str | None, now: float
    ) -> StartPlan | None:
        """The plan of a new start that :meth:`authorise` would grant without awaiting anything.

        That is: a fresh event snapshot, the window and region open, and a cached positive
        decision. None otherwise (ask :meth:`authorise`). Changes nothing, counts nothing.
        """
        cached = self._events.get(event_id)
        if cached is None or cached[0] is None or now - cached[1] >= self.event_ttl_s:
            return None
        event = cached[0]
        window = check_event_window(event, now, self.settings.preauth_window_s)
        if isinstance(window, Denial) or check_region(event, region, now) is not None:
            return None
        decision = await self._cached_decision(account_id, event.id, now)
        if decision is None or decision.denial is not None:
            return None
        return StartPlan(event, window)

    async def open_session(
        self,
        account_id: str,
        plan: StartPlan,
        device: DeviceInfo,
        now: float,
        *,
        degraded: bool = False,
    ) -> PlaybackGrant:
        """Open the session of an entitled new start (stream limit permitting) and grant it."""
        event, window = plan.event, plan.window
        try:
            session = await self.sessions.start(
                session_id="s-" + secrets.token_hex(12),
                account_id=account_id,
                event_id=event.id,
                device_id=device.id,
                now=now,
                limit=event.policy.max_streams,
                until=window.valid_from + self.settings.session_ttl_s,
            )
        except SharedStateUnavailable:  # fail closed: the stream limit cannot be checked
            raise self._unavailable() from None
        if session is None:
            raise self._deny(
                Denial.CONCURRENT_STREAM_LIMIT, retry_after=self.settings.session_ttl_s
            )
        await self._known_good(account_id, event.id, now, put=True)
        self.stats.grants += 1
        self.stats.preauth_grants += window.preauth
        return self._grant(session, event, window, now, degraded, account_id)

    async def refresh(self, account_id: str, session_id: str, token: str) -> PlaybackGrant:
        """A new token for a playing (or pre-authorised) session, proven by its current token.

        Load and entitlement-store outages never deny it: the token is itself a prior positive
        decision. Only facts that really changed (event ended, region, entitlement revoked and
        the store saying so) do.
        """
        now = self.clock()
        match = _ACL_EVENT.search(token)
        if match is None:
            raise self._deny(
                Denial.SESSION_MISMATCH, message="not a playback token of this platform"
            )
        event_id = match.group(1)
        check = self.verifier.verify(token, f"/live/{event_id}/master.m3u8", now, check_time=False)
        if not check.ok or check.claims is None:
            reason = check.reason.value if check.reason else "invalid"
            raise self._deny(
                Denial.SESSION_MISMATCH, message=f"the playback token is not valid ({reason})"
            )
        claims = check.claims
        if now > claims.expires + 3600:
            raise self._deny(
                Denial.SESSION_NOT_FOUND,
                message="the playback token expired over an hour ago; start playback again",
            )
        owner = hashlib.sha256(account_id.encode()).hexdigest()[:16]
        if claims.session_id != session_id or claims.data != owner:
            raise self._deny(Denial.SESSION_MISMATCH)
        try:
            event = await self.event(event_id, now)
        except ControlError as exc:
            if (
                exc.reason != Denial.ENTITLEMENT_UNAVAILABLE
                or not self.settings.fail_open_known_good
            ):
                raise
            # Store down and no snapshot (e.g. this process restarted): the valid token is proof
            # enough to keep a playing viewer going on defaults until the store is back.
            event = EventFacts(
                event_id,
                EventStatus.LIVE,
                float(claims.start),
                None,
                cdns=tuple(self.settings.cdns) or ("origin",),
            )
        window = check_event_window(event, now, math.inf)
        if isinstance(window, Denial):
            raise self._deny(window)
        entitled = await self._entitled(account_id, event, now, proven=True)
        restored = PlaybackSession(
            session_id, account_id, event_id, "restored", now + self.settings.session_ttl_s
        )
        try:
            session = await self.sessions.get(session_id, now)
            if session is None:
                session = await self.sessions.restore(restored, now)
            else:
                session = await self.sessions.heartbeat(session_id, now) or session
        except SharedStateUnavailable:  # fail open: the token proves this viewer was playing
            self.stats.shared_state_failures += 1
            session, entitled = restored, False
        await self._known_good(account_id, event.id, now, put=True)
        self.stats.refreshes += 1
        return self._grant(session, event, window, now, not entitled, account_id)

    async def heartbeat(self, account_id: str, session_id: str) -> float:
        """Keep a session counted as playing; returns its new expiry (503 if the store is down)."""
        now = self.clock()
        try:
            s = await self.sessions.get(session_id, now)
            if s is None:
                raise self._deny(Denial.SESSION_NOT_FOUND)
            if s.account_id != account_id:
                raise self._deny(Denial.SESSION_MISMATCH)
            s = await self.sessions.heartbeat(session_id, now) or s
        except SharedStateUnavailable:
            raise self._unavailable() from None
        return s.expires_at

    async def end(self, account_id: str, session_id: str) -> None:
        """The player stopped: free its stream slot.

        Another account's session is answered as if it did not exist (404, nothing deleted), so
        session ids cannot be probed.
        """
        try:
            s = await self.sessions.get(session_id, self.clock())
            if s is None or s.account_id != account_id:
                raise self._deny(Denial.SESSION_NOT_FOUND)
            await self.sessions.end(session_id)
        except SharedStateUnavailable:
            raise self._unavailable() from None
