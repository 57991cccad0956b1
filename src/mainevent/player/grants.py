"""A viewer's side of the playback API: get a grant, play it on fresh tokens, refresh, end.

`authorise()` asks `POST /v1/events/{id}/playback` until granted, `refresh()` renews a session's
token, and `play_granted()` plays the granted CDN (the grant's fallbacks after repeated
failures) while refreshing every few seconds, each media request carrying the newest token
(`CurrentToken`, as a player app's hls.js `xhrSetup` hook does). Every request's outcome is
handed to a `report` callback as an `ApiCall`. The load generator (`mainevent.sim.load.worker`)
and the e2e player swarm (`mainevent.testing.swarm`) play through it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from mainevent.common.tokens import TOKEN_PREFIX, split_token_path
from mainevent.player.report import PlaybackReport
from mainevent.player.session import PlayerConfig, play

__all__ = [
    "MAX_ATTEMPTS",
    "RETRYABLE",
    "ApiCall",
    "CurrentToken",
    "authorise",
    "end",
    "play_granted",
    "refresh",
]

MAX_ATTEMPTS = 12
"""Tries of one request (grant or refresh) before it has failed for good."""
RETRYABLE = frozenset({429, 502, 503, 504})
"""Answers worth asking again: rate-limited, shed or unavailable, and a load balancer's answer
for a worker that died under the request (the next try goes to another)."""
_MAX_WAIT_S = 10.0
_TRANSPORT_WAIT_S = 1.0

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
Report = Callable[["ApiCall"], None]


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One playback-API request as the viewer saw it."""

    kind: str
    """What was asked: `start` or `preauth` (a grant, named by the caller), or `refresh`."""
    status: int
    """The HTTP status; 0 when no answer came (`error` names the transport error)."""
    t: float
    """Epoch seconds when it was sent."""
    latency_s: float
    attempt: int
    """0 for the first try of a request, then 1, 2, ... for its retries."""
    final: bool
    """The request's last try: granted, refused for good, or out of tries."""
    reason: str = ""
    """The API's `error.reason` of a refusal."""
    error: str = ""
    degraded: bool = False
    """A 200 the API marked degraded (shared state or entitlement store unreachable)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CurrentToken:
    """The newest playback token of a session, put into the `/t/<token>/` of each media URL.

    Tokens travel in the path, so a playlist's relative URIs keep the token of the URL they
    were resolved against; without this, a player would keep sending the token it started with
    until the edges refuse it as expired.
    """

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, url: str) -> str:
        parts = urlsplit(url)
        token, rest = split_token_path(parts.path)
        if not token or token == self.token:
            return url
        return urlunsplit(parts._replace(path=f"{TOKEN_PREFIX}{self.token}{rest}"))


async def authorise(
    api: httpx.AsyncClient,
    event: str,
    device: Mapping[str, str],
    jwt: str,
    report: Report,
    *,
    kind: str = "start",
    clock: Clock = time.time,
    sleep: Sleep = asyncio.sleep,
) -> dict[str, Any] | None:
    """POST playback until granted (honouring Retry-After); the grant, or None if refused."""
    return await _ask(
        api,
        f"/v1/events/{event}/playback",
        {"device": dict(device)},
        jwt,
        kind,
        report,
        clock,
        sleep,
    )


async def refresh(
    api: httpx.AsyncClient,
    jwt: str,
    session_id: str,
    token: str,
    report: Report,
    *,
    clock: Clock = time.time,
    sleep: Sleep = asyncio.sleep,
) -> dict[str, Any] | None:
    """POST refresh until answered 200 (retrying as `authorise`); the new grant, or None."""
    return await _ask(
        api,
        f"/v1/sessions/{session_id}/refresh",
        {"token": token},
        jwt,
        "refresh",
        report,
        clock,
        sleep,
    )


async def play_granted(
    api: httpx.AsyncClient,
    media: httpx.AsyncClient,
    jwt: str,
    grant: Mapping[str, Any],
    report: Report,
    *,
    duration_s: float,
    refresh_every_s: float,
    config: PlayerConfig | None = None,
    clock: Clock = time.time,
    sleep: Sleep = asyncio.sleep,
) -> PlaybackReport:
    """Play `grant` for `duration_s`, refreshing its token every `refresh_every_s`.

    The grant's CDN first, its fallbacks after repeated failures; a refresh that fails for good
    leaves the current token in use and is tried again at the next period.
    """
    token = CurrentToken(grant["token"])

    async def refreshing() -> None:
        while True:
            await sleep(refresh_every_s)
            renewed = await refresh(
                api, jwt, grant["session_id"], token.token, report, clock=clock, sleep=sleep
            )
            if renewed is not None:
                token.token = renewed["token"]

    fallbacks: Sequence[str] = [f["manifest_url"] for f in grant.get("fallbacks", ())]
    async with asyncio.TaskGroup() as tg:
        refresher = tg.create_task(refreshing())
        try:
            return await play(
                grant["cdn"]["manifest_url"],
                duration_s=duration_s,
                client=media,
                fallback_urls=fallbacks,
                clock=clock,
                sleep=sleep,
                config=config,
                rewrite_url=token,
            )
        finally:
            refresher.cancel()


async def end(api: httpx.AsyncClient, jwt: str, grant: Mapping[str, Any]) -> None:
    """DELETE the session (frees its stream slot at once); best effort, once."""
    try:
        await api.delete(
            f"/v1/sessions/{grant['session_id']}", headers={"Authorization": f"Bearer {jwt}"}
        )
    except httpx.HTTPError:
        pass  # the slot is freed anyway when the session's heartbeats stop


async def _ask(
    api: httpx.AsyncClient,
    url: str,
    body: Mapping[str, Any],
    jwt: str,
    kind: str,
    report: Report,
    clock: Clock,
    sleep: Sleep,
) -> dict[str, Any] | None:
    headers = {"Authorization": f"Bearer {jwt}"}
    for attempt in range(MAX_ATTEMPTS):
        last = attempt == MAX_ATTEMPTS - 1
        sent = clock()
        try:
            r = await api.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            error = type(exc).__name__
            report(ApiCall(kind, 0, sent, clock() - sent, attempt, last, error=error))
            wait = _TRANSPORT_WAIT_S
        else:
            latency = clock() - sent
            if r.status_code == 200:
                grant: dict[str, Any] = r.json()
                degraded = bool(grant.get("degraded"))
                report(ApiCall(kind, 200, sent, latency, attempt, True, degraded=degraded))
                return grant
            retryable = r.status_code in RETRYABLE
            reason = _reason(r)
            report(
                ApiCall(kind, r.status_code, sent, latency, attempt, last or not retryable, reason)
            )
            if not retryable:
                return None
            wait = _retry_after(r)
        if not last:
            await sleep(min(wait, _MAX_WAIT_S))
    return None


def _reason(r: httpx.Response) -> str:
    try:
        return str(r.json()["error"]["reason"])
    except (ValueError, KeyError, TypeError):
        return ""


def _retry_after(r: httpx.Response) -> float:
    try:
        return max(0.0, float(r.headers.get("retry-after", "1") or 1))
    except ValueError:  # an HTTP date: not sent by this API
        return 1.0
