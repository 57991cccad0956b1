"""A viewer's side of the playback API (`mainevent.player.grants`), in process: the retries of a
grant or refresh, and a granted player playing on refreshed tokens past its first one's expiry.

The API is a small stand-in here (its real answers are tested in tests/control); the media come
from the synthetic live origin of `test_player_session`, behind the real token check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from mainevent.common.tokens import TokenGate, TokenSigner, TokenVerifier
from mainevent.player import PlayerConfig
from mainevent.player.grants import (
    MAX_ATTEMPTS,
    ApiCall,
    CurrentToken,
    authorise,
    end,
    play_granted,
)
from tests.service.test_player_session import SEG_S, LiveOrigin, ScaledClock

KEY = "00112233445566778899aabbccddeeff"
DEVICE = {"id": "tv-1"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # play() uses asyncio.TaskGroup


# -- retries ---------------------------------------------------------------------------------------


class Waits:
    """A sleep that only records how long it was asked to wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def scripted(*answers: httpx.Response | type[httpx.HTTPError]) -> httpx.AsyncClient:
    """An API client whose requests get `answers` in turn (an exception class is raised)."""
    queue: Iterator[httpx.Response | type[httpx.HTTPError]] = iter(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        answer = next(queue)
        if isinstance(answer, type):
            raise answer("no answer", request=request)
        return answer

    return httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://api")


def refused(status: int, reason: str, retry_after: str | None = None) -> httpx.Response:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return httpx.Response(status, json={"error": {"reason": reason}}, headers=headers)


GRANT = {"session_id": "s-1", "token": "t", "degraded": False}


async def ask(api: httpx.AsyncClient) -> tuple[dict[str, Any] | None, list[ApiCall], list[float]]:
    calls: list[ApiCall] = []
    sleep = Waits()
    async with api:
        grant = await authorise(api, "final", DEVICE, "jwt", calls.append, sleep=sleep)
    return grant, calls, sleep.waits


@pytest.mark.anyio
async def test_grant_waits_out_rate_limit_shedding_and_a_dead_worker() -> None:
    """429 and 503 are asked again after their Retry-After, a 502 or no answer after 1 s."""
    grant, calls, waits = await ask(
        scripted(
            refused(429, "rate_limited", "3"),
            refused(503, "overloaded", "2"),
            refused(502, ""),
            httpx.ConnectError,
            httpx.Response(200, json=GRANT),
        )
    )
    assert grant == GRANT
    assert waits == [3.0, 2.0, 1.0, 1.0]
    assert [(c.status, c.attempt, c.final) for c in calls] == [
        (429, 0, False),
        (503, 1, False),
        (502, 2, False),
        (0, 3, False),
        (200, 4, True),
    ]
    assert (calls[0].reason, calls[3].error) == ("rate_limited", "ConnectError")


@pytest.mark.anyio
async def test_grant_refused_for_good_is_not_asked_again() -> None:
    """A refusal that no retry changes (403) ends the request at once, marked final."""
    grant, calls, waits = await ask(scripted(refused(403, "concurrent_stream_limit")))
    assert grant is None
    assert waits == []
    assert [(c.status, c.reason, c.final) for c in calls] == [
        (403, "concurrent_stream_limit", True)
    ]


@pytest.mark.anyio
async def test_grant_gives_up_after_its_tries_and_caps_long_waits() -> None:
    """MAX_ATTEMPTS unavailable answers: None, only the last one final, no wait over 10 s."""
    grant, calls, waits = await ask(
        scripted(*(refused(503, "overloaded", "60") for _ in range(MAX_ATTEMPTS)))
    )
    assert grant is None
    assert [c.final for c in calls] == [False] * (MAX_ATTEMPTS - 1) + [True]
    assert waits == [10.0] * (MAX_ATTEMPTS - 1)


@pytest.mark.anyio
async def test_degraded_grant_is_reported_degraded() -> None:
    """A 200 the API marks degraded (its shared state is down) is recorded as such."""
    _grant, calls, _waits = await ask(
        scripted(httpx.Response(200, json=GRANT | {"degraded": True}))
    )
    assert [(c.status, c.degraded) for c in calls] == [(200, True)]


def test_current_token_replaces_the_token_in_the_path_only() -> None:
    """Media URLs get the newest token; URLs without one are left alone."""
    signer = TokenSigner({"k1": KEY})
    old, new = (signer.sign(acl="/live/demo/*", start=1, expires=e) for e in (100, 200))
    rewrite = CurrentToken(new)
    url = f"http://edge/t/{old}/live/demo/v360/7.m4s?CMCD=x"
    assert rewrite(url) == f"http://edge/t/{new}/live/demo/v360/7.m4s?CMCD=x"
    assert rewrite("http://edge/live/demo/v360/7.m4s") == "http://edge/live/demo/v360/7.m4s"


# -- playing on refreshed tokens -------------------------------------------------------------------

TTL_S = 4 * SEG_S
"""Token lifetime in the scaled clock's seconds: shorter than the play time below."""


class FakePlaybackApi:
    """Grants and refreshes as the playback API answers them: tokens signed for `TTL_S`."""

    def __init__(self, clock: ScaledClock) -> None:
        self.clock = clock
        self.signer = TokenSigner({"k1": KEY})
        self.refreshed_with: list[str] = []
        self.ended: list[str] = []
        self.app = Starlette(
            routes=[
                Route("/v1/events/demo/playback", self.start, methods=["POST"]),
                Route("/v1/sessions/{sid}/refresh", self.refresh, methods=["POST"]),
                Route("/v1/sessions/{sid}", self.end, methods=["DELETE"]),
            ]
        )

    def _grant(self) -> dict[str, Any]:
        now = int(self.clock())
        token = self.signer.sign(acl="/live/demo/*", start=now - 30, expires=now + TTL_S)
        cdn = {"name": "cdn-a", "manifest_url": f"http://cdn-a/t/{token}/live/demo/master.m3u8"}
        return {"session_id": "s-1", "token": token, "cdn": cdn, "fallbacks": [], "degraded": False}

    async def start(self, request: Request) -> Response:
        return JSONResponse(self._grant())

    async def refresh(self, request: Request) -> Response:
        self.refreshed_with.append((await request.json())["token"])
        return JSONResponse(self._grant())

    async def end(self, request: Request) -> Response:
        self.ended.append(request.path_params["sid"])
        return Response(status_code=204)


class Gated:
    """The origin behind the edges' token check (ASGI): refused paths get 403 with the reason."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Any], clock: ScaledClock) -> None:
        self.app = app
        self.clock = clock
        self.gate = TokenGate(TokenVerifier({"k1": KEY}))
        self.denied: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        check = self.gate.check(scope["path"], self.clock())
        if not check.allowed:
            self.denied.append(str(check.reason))
            await PlainTextResponse(str(check.reason), status_code=403)(scope, receive, send)
            return
        await self.app(dict(scope, path=check.path, raw_path=check.path.encode()), receive, send)


@pytest.mark.anyio
async def test_granted_player_plays_past_its_first_tokens_expiry_on_refreshed_ones() -> None:
    """Three token lifetimes of play with no stall and no refusal: every media request carried
    the newest token (the first one is refused by then), and the session is ended."""
    clock = ScaledClock()
    api, media = FakePlaybackApi(clock), Gated(LiveOrigin(clock).app, clock)
    calls: list[ApiCall] = []
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url="http://api") as c,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=media)) as m,
    ):
        grant = await authorise(c, "demo", DEVICE, "jwt", calls.append, sleep=clock.sleep)
        assert grant is not None
        report = await play_granted(
            c,
            m,
            "jwt",
            grant,
            calls.append,
            duration_s=3 * TTL_S,
            refresh_every_s=TTL_S / 4,
            config=PlayerConfig(),
            clock=clock,
            sleep=clock.sleep,
        )
        await end(c, "jwt", grant)
        first = await m.get(grant["cdn"]["manifest_url"])
    assert (first.status_code, first.text) == (403, "expired")
    assert api.ended == [grant["session_id"]]
    assert report.fatal is None
    assert report.http_errors == {}
    assert media.denied == ["expired"]  # that last request only
    assert report.stalls == 0
    assert report.played_s == pytest.approx(3 * TTL_S, abs=0.5)
    refreshes = [c for c in calls if c.kind == "refresh"]
    assert len(refreshes) >= 10
    assert all(c.status == 200 and c.final for c in refreshes)
    # Each refresh presented the token the previous one returned.
    assert api.refreshed_with[0] == grant["token"]
    assert len(set(api.refreshed_with)) == len(api.refreshed_with)
