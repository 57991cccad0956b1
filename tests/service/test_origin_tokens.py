"""Playback tokens at the origin: /t/<token>/live/... checked without a database, then stripped."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mainevent.common.tokens import TokenSigner
from mainevent.media.origin.app import create_app
from tests.service.test_origin import Clock, make_event, publish

pytestmark = pytest.mark.anyio

KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
OTHER = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"


def token(acl: str = "/live/final/*", *, kid: str = "k1", key: str = KEY, ttl: float = 600) -> str:
    now = time.time()
    return TokenSigner({kid: key}, kid).sign(
        acl=acl, start=int(now + min(ttl, 0)) - 120, expires=int(now + ttl), session_id="s1"
    )


async def client_for(tmp_path: Path, *, required: bool) -> AsyncIterator[httpx.AsyncClient]:
    ev = make_event(tmp_path, Clock())
    await publish(ev, range(900_000_000, 900_000_004))
    app = create_app({"final": ev}, token_keys={"k1": KEY}, require_token=required)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o") as c:
        yield c


@pytest.fixture
async def strict(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for c in client_for(tmp_path, required=True):
        yield c


async def test_valid_token_serves_everything_under_the_event(strict: httpx.AsyncClient) -> None:
    """One token covers master, media playlists, init sections and segments of its event."""
    t = token()
    for path in (
        "master.m3u8",
        "v360/index.m3u8",
        "v360/init.mp4",
        "v360/900000003.m4s",
        "a128/index.m3u8",
    ):
        r = await strict.get(f"/t/{t}/live/final/{path}")
        assert r.status_code == 200, (path, r.text)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: token(acl="/live/other/*"), "acl_mismatch"),
        (lambda: token(ttl=-60), "expired"),
        (lambda: token(kid="k9"), "unknown_key"),
        (lambda: token(key=OTHER), "bad_signature"),
        (lambda: token().replace("exp=", "exp=9"), "bad_signature"),
        (lambda: "garbage", "malformed"),
    ],
)
async def test_bad_tokens_are_403_with_a_reason(
    strict: httpx.AsyncClient, make: object, reason: str
) -> None:
    """Tampered, expired, foreign-key or out-of-scope tokens get 403 with a machine-readable reason."""
    assert callable(make)
    r = await strict.get(f"/t/{make()}/live/final/v360/index.m3u8")
    assert r.status_code == 403
    assert r.json()["reason"] == reason
    assert r.headers["x-token-denied"] == reason


async def test_required_token_refuses_bare_paths(strict: httpx.AsyncClient) -> None:
    """With tokens required, /live/... without one is 403 missing_token; health stays open."""
    r = await strict.get("/live/final/master.m3u8")
    assert r.status_code == 403
    assert r.json()["reason"] == "missing_token"
    assert (await strict.get("/healthz")).status_code == 200


async def test_optional_mode_still_checks_presented_tokens(tmp_path: Path) -> None:
    """Without the requirement bare paths play, but a presented bad token is still refused."""
    async for c in client_for(tmp_path, required=False):
        assert (await c.get("/live/final/master.m3u8")).status_code == 200
        assert (
            await c.get(f"/t/{token(acl='/live/x/*')}/live/final/master.m3u8")
        ).status_code == 403
        assert (await c.get(f"/t/{token()}/live/final/master.m3u8")).status_code == 200
