"""Steering manifests per session (HLS `application/vnd.apple.steering-list` and DASH-IF's JSON
equivalent): request → policy → response, with no I/O and no database. The session's state
travels in its RELOAD-URI, so any steering server can answer the next request.

    service = SteeringService(policy, regions=RegionTable(...), new_id=lambda: token_urlsafe(9))
    resp = service.manifest("hls", "final", query, client_ip, now)
    resp.status, resp.headers, resp.body

Statuses (SPEC.md §3): 200 with the manifest; 400 for a malformed state or pathway (named in
the message); 404 for an event this server does not steer; 410 once the event ended (players
stop steering and keep their pathway); 429 with Retry-After when one session asks faster than
`min_reload_interval_s` allows (after a burst of 5).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import quote, unquote_plus

from mainevent.common.ratelimit import KeyedRateLimiter
from mainevent.control.entitlement import RegionTable
from mainevent.control.steering.model import ANY, Decision, SessionState
from mainevent.control.steering.policy import SteeringPolicy

__all__ = ["HLS_STEERING_TYPE", "SteeringResponse", "SteeringService"]

HLS_STEERING_TYPE = "application/vnd.apple.steering-list"
_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")
_LABEL = re.compile(r"[A-Za-z0-9._*-]{1,64}")
_BURST = 5
_CACHE_MAX = 4096
"""Bound of the per-(event, kind) and per-priority-order response fragment caches."""


def _q(label: str) -> str:
    """A validated label in a query string: only `*` may need percent-encoding."""
    return quote(label, safe="") if "*" in label else label


def _params(query: str) -> dict[str, str]:
    """Query parameters, first occurrence wins, blank values kept (as `parse_qsl` would give
    them), with a fast path for the plain ASCII that steering URIs carry."""
    params: dict[str, str] = {}
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        if "%" in part or "+" in part:
            name, value = unquote_plus(name), unquote_plus(value)
        if name not in params:
            params[name] = value
    return params


@dataclass(frozen=True, slots=True)
class SteeringResponse:
    status: int
    body: bytes
    content_type: str
    retry_after: int | None = None
    decision: Decision | None = None


class SteeringRequestError(ValueError):
    """A steering request the server will not answer (400); the message says what to fix."""


def _error(
    status: int, reason: str, message: str, retry_after: int | None = None
) -> SteeringResponse:
    body = json.dumps({"error": {"reason": reason, "message": message}}).encode()
    return SteeringResponse(status, body, "application/json", retry_after)


class SteeringService:
    """See the module docstring."""

    def __init__(
        self,
        policy: SteeringPolicy,
        *,
        regions: RegionTable,
        new_id: Callable[[], str],
        events: Iterable[str] | None = None,
        min_reload_interval_s: float = 1.0,
        path_prefix: str = "/steering",
    ) -> None:
        self.policy = policy
        self.regions = regions
        self.new_id = new_id
        self.events: set[str] | None = None if events is None else set(events)
        """Events steered here (None: any event id)."""
        self.ended: set[str] = set()
        self.path_prefix = path_prefix.rstrip("/")
        rate = 1 / min_reload_interval_s if min_reload_interval_s > 0 else math.inf
        self._limits = (
            None if math.isinf(rate) else KeyedRateLimiter(rate, _BURST, max_keys=1_000_000)
        )
        self.counts: dict[tuple[str, int], int] = {}
        self._heads: dict[tuple[str, str], str] = {}
        self._tails: dict[tuple[str, ...], str] = {}
        self._labels: set[str] = {ANY}

    def end_event(self, event: str) -> None:
        """From now on the event's steering requests get 410 (players stop steering)."""
        self.ended.add(event)

    def manifest(
        self, kind: str, event: str, query: str, client: str | None, now: float
    ) -> SteeringResponse:
        resp = self._manifest(kind, event, query, client, now)
        key = (kind, resp.status)
        self.counts[key] = self.counts.get(key, 0) + 1
        return resp

    def _manifest(
        self, kind: str, event: str, query: str, client: str | None, now: float
    ) -> SteeringResponse:
        if kind not in ("hls", "dash"):
            return _error(404, "not_found", "steering manifests are /steering/<event>/hls or /dash")
        if event in self.ended:
            return _error(410, "event_ended", f"event {event!r} ended: steering stopped")
        if self.events is not None and event not in self.events:
            return _error(404, "event_not_found", f"event {event!r} is not steered here")
        try:
            state = self._state(kind, query, client)
        except SteeringRequestError as exc:
            return _error(400, "bad_steering_request", str(exc))
        if self._limits is not None:
            wait = self._limits.take(state.session_id, now)
            if wait > 0:
                return _error(
                    429,
                    "too_many_requests",
                    "this session asks for steering too often; retry after the Retry-After delay",
                    max(1, math.ceil(wait)),
                )
        d = self.policy.steer(state, now)
        st = d.state
        # Every value below passed a regex of unreserved characters (`_ID`, `_LABEL`, CDN
        # names), so it needs no JSON escaping and no percent-encoding, except `*` in labels.
        q = f"sid={st.session_id}&r={_q(st.region)}"
        if st.isp != ANY:
            q += f"&i={_q(st.isp)}"
        q += f"&p={st.pathway}"
        if st.home is not None:
            q += f"&h={st.home}"
        if st.moved_at is not None:
            q += f"&m={int(st.moved_at)}"
        body = f"{self._head(event, kind)}{q}{self._priority_json(d.priority)}".encode()
        content_type = HLS_STEERING_TYPE if kind == "hls" else "application/json"
        return SteeringResponse(200, body, content_type, decision=d)

    def _head(self, event: str, kind: str) -> str:
        """`{"VERSION": 1, "TTL": …, "RELOAD-URI": "<prefix>/<event>/<kind>?` (JSON-escaped)."""
        key = (event, kind)
        head = self._heads.get(key)
        if head is None:
            uri = json.dumps(f"{self.path_prefix}/{event}/{kind}?")[:-1]
            head = f'{{"VERSION": 1, "TTL": {json.dumps(self.policy.config.ttl_s)}, "RELOAD-URI": {uri}'
            if len(self._heads) < _CACHE_MAX:
                self._heads[key] = head
        return head

    def _priority_json(self, priority: tuple[str, ...]) -> str:
        """`", "PATHWAY-PRIORITY": [...]}` for this order (a handful of orders exist)."""
        tail = self._tails.get(priority)
        if tail is None:
            tail = f'", "PATHWAY-PRIORITY": {json.dumps(list(priority))}}}'
            if len(self._tails) < _CACHE_MAX:
                self._tails[priority] = tail
        return tail

    def _state(self, kind: str, query: str, client: str | None) -> SessionState:
        params = _params(query)
        cdns = self.policy.cdns
        sid = params.get("sid") or self.new_id()
        if _ID.fullmatch(sid) is None:
            raise SteeringRequestError(f"sid {sid!r} must be 1-128 of A-Z a-z 0-9 . _ ~ -")
        region = params.get("r") or self.regions.lookup(client) or "unknown"
        isp = params.get("i") or ANY
        labels = self._labels
        for label, value in (("r", region), ("i", isp)):
            if value in labels:
                continue
            if _LABEL.fullmatch(value) is None:
                raise SteeringRequestError(f"{label}={value!r} must be 1-64 of A-Z a-z 0-9 . _ -")
            if len(labels) < _CACHE_MAX:
                labels.add(value)  # regions and ISPs are few: checked once each
        pathway = params.get("p") or None
        home = params.get("h") or None
        for label, named in (("p", pathway), ("h", home)):
            if named is not None and named not in cdns:
                raise SteeringRequestError(
                    f"{label}={named!r} is not a pathway of this server ({', '.join(cdns)})"
                )
        # What the player says it is on wins over what we last told it (it may have
        # penalised a pathway that failed for it).
        current: str | None = params.get("_HLS_pathway") if kind == "hls" else None
        if kind == "dash":
            used = params.get("_DASH_pathway", "").strip('"').split(",")
            current = used[0] if len(used) == 1 else None
        if current and current in cdns:
            pathway = current
        moved_at: float | None = None
        if params.get("m"):
            try:
                moved_at = float(params["m"])
            except ValueError:
                raise SteeringRequestError(f"m={params['m']!r} must be epoch seconds") from None
            if not math.isfinite(moved_at):
                raise SteeringRequestError("m must be finite epoch seconds")
        return SessionState(sid, region, isp, pathway, home, moved_at)
