"""Playback tokens: EdgeAuth shape, rotation, tampering and the `/t/<token>/...` path form."""

from __future__ import annotations

import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mainevent.common.tokens import (
    TokenDenial,
    TokenError,
    TokenGate,
    TokenKey,
    TokenSigner,
    TokenVerifier,
    split_token_path,
)

K1 = "11" * 32
K2 = "22" * 32
NOW = 1_800_000_000

ids = st.from_regex(r"[A-Za-z0-9._:-]{1,40}", fullmatch=True)
events = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True)
renditions = st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True)


def _sign(
    acl: str = "/live/final/*", start: int = NOW - 10, expires: int = NOW + 600, kid: str = "k1"
) -> str:
    return TokenSigner({"k1": K1, "k2": K2}, kid=kid).sign(
        acl=acl, start=start, expires=expires, session_id="s1"
    )


def _replace(token: str, field: str, value: str) -> str:
    parts = token.split("~")
    return "~".join(f"{field}={value}" if p.startswith(f"{field}=") else p for p in parts)


def test_token_has_edgeauth_shape_and_hmac_over_fields() -> None:
    """A CDN configured with the same hex key computes the same HMAC over the `~`-joined fields."""
    token = _sign()
    body, _, mac = token.rpartition("~hmac=")
    assert body == f"st={NOW - 10}~exp={NOW + 600}~acl=/live/final/*~id=s1~kid=k1"
    assert mac == hmac.new(bytes.fromhex(K1), body.encode(), "sha256").hexdigest()


@given(
    event=events,
    session=ids,
    data=st.none() | ids,
    rendition=renditions,
    msn=st.integers(0, 10**10),
    ttl=st.integers(1, 10**6),
    age=st.integers(0, 10**6),
)
def test_signed_token_grants_every_path_under_its_event(
    event: str, session: str, data: str | None, rendition: str, msn: int, ttl: int, age: int
) -> None:
    """Any token we issue opens every playlist, init section and segment of its event while valid."""
    start = NOW - age
    token = TokenSigner({"k1": K1}).sign(
        acl=f"/live/{event}/*",
        start=start,
        expires=start + age + ttl,
        session_id=session,
        data=data,
    )
    check = TokenVerifier({"k1": K1}).verify(token, f"/live/{event}/{rendition}/{msn}.m4s", NOW)
    assert check.ok, check.reason
    assert check.claims is not None
    assert (check.claims.session_id, check.claims.data, check.claims.kid) == (session, data, "k1")
    path = f"/t/{token}/live/{event}/master.m3u8"
    assert split_token_path(path) == (token, f"/live/{event}/master.m3u8")


@given(event=events, other=events)
def test_token_for_one_event_never_opens_another(event: str, other: str) -> None:
    """A viewer cannot reuse an event's token to watch a different event."""
    token = TokenSigner({"k1": K1}).sign(acl=f"/live/{event}/*", start=NOW, expires=NOW + 60)
    check = TokenVerifier({"k1": K1}).verify(token, f"/live/{other}/master.m3u8", NOW)
    assert check.ok == (event == other)
    if not check.ok:
        assert check.reason is TokenDenial.ACL_MISMATCH


@given(position=st.integers(0, 10_000), char=st.sampled_from("0123456789abcdefxyz~=/"))
def test_any_single_character_change_is_refused(position: int, char: str) -> None:
    """Flipping any character of a token makes the origin refuse it (never grants more)."""
    token = _sign()
    i = position % len(token)
    tampered = token[:i] + char + token[i + 1 :]
    check = TokenVerifier({"k1": K1, "k2": K2}).verify(tampered, "/live/final/master.m3u8", NOW)
    assert check.ok == (tampered == token)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda t: _replace(t, "acl", "/live/*"), TokenDenial.BAD_SIGNATURE),
        (lambda t: _replace(t, "exp", str(NOW + 10**6)), TokenDenial.BAD_SIGNATURE),
        (lambda t: _replace(t, "hmac", "0" * 64), TokenDenial.BAD_SIGNATURE),
        (lambda t: _replace(t, "kid", "k9"), TokenDenial.UNKNOWN_KEY),
        (lambda t: _replace(t, "hmac", "zz"), TokenDenial.MALFORMED),
        (lambda t: t.replace("~kid=k1", ""), TokenDenial.MALFORMED),
        (lambda t: "exp=1~" + t, TokenDenial.MALFORMED),
        (lambda t: t.replace("acl=", "acx="), TokenDenial.MALFORMED),
        (lambda t: "", TokenDenial.MALFORMED),
    ],
    ids=[
        "changed-acl",
        "changed-exp",
        "forged-signature",
        "unknown-kid",
        "short-hmac",
        "no-kid",
        "duplicate-field",
        "unknown-field",
        "empty",
    ],
)
def test_tampered_tokens_are_refused_with_a_reason(mutate, reason: TokenDenial) -> None:  # type: ignore[no-untyped-def]
    """Tampering with the ACL, expiry, signature or key id is refused with a precise reason code."""
    check = TokenVerifier({"k1": K1, "k2": K2}).verify(
        mutate(_sign()), "/live/final/master.m3u8", NOW
    )
    assert (check.ok, check.reason) == (False, reason)


def test_expiry_and_start_are_enforced() -> None:
    """An expired token and a pre-authorised token used before the start are both refused."""
    verifier = TokenVerifier({"k1": K1})
    assert (
        verifier.verify(_sign(expires=NOW), "/live/final/a.m4s", NOW).reason is TokenDenial.EXPIRED
    )
    early = _sign(start=NOW + 60, expires=NOW + 600)
    assert verifier.verify(early, "/live/final/a.m4s", NOW).reason is TokenDenial.NOT_YET_VALID
    assert verifier.verify(early, "/live/final/a.m4s", NOW + 60).ok
    assert (
        TokenVerifier({"k1": K1}, leeway=5).verify(_sign(expires=NOW - 3), "/live/final/a", NOW).ok
    )


def test_rotation_accepts_old_and_new_keys_until_the_old_one_is_retired() -> None:
    """During rotation tokens signed with either key play; after retirement old ones say key_retired."""
    old, new = _sign(kid="k1"), _sign(kid="k2")
    both = TokenVerifier({"k1": K1, "k2": K2})
    assert both.verify(old, "/live/final/x", NOW).ok
    assert both.verify(new, "/live/final/x", NOW).ok
    retired = TokenVerifier({"k2": K2}, retired={"k1"})
    assert retired.verify(old, "/live/final/x", NOW).reason is TokenDenial.KEY_RETIRED
    assert retired.verify(new, "/live/final/x", NOW).ok
    expiring = TokenVerifier({"k1": TokenKey.from_hex("k1", K1, not_after=NOW - 1), "k2": K2})
    assert expiring.verify(old, "/live/final/x", NOW).reason is TokenDenial.KEY_RETIRED


def test_path_traversal_out_of_the_acl_is_refused() -> None:
    """`..` segments cannot escape the event prefix the token was issued for."""
    verifier = TokenVerifier({"k1": K1})
    assert (
        verifier.verify(_sign(), "/live/final/../other/master.m3u8", NOW).reason
        is TokenDenial.ACL_MISMATCH
    )


def test_multiple_acls_and_inner_wildcards() -> None:
    """`!`-separated ACLs and `*` in the middle match like EdgeAuth globs."""
    token = TokenSigner({"k1": K1}).sign(
        acl="/live/a/*!/live/b/*/init.mp4", start=NOW, expires=NOW + 9
    )
    verifier = TokenVerifier({"k1": K1})
    assert verifier.verify(token, "/live/a/x", NOW).ok
    assert verifier.verify(token, "/live/b/v720/init.mp4", NOW).ok
    assert not verifier.verify(token, "/live/b/v720/1.m4s", NOW).ok


def test_split_token_path_edge_cases() -> None:
    """Paths without a token pass through; a broken `/t/` path is flagged for a 403, not served."""
    assert split_token_path("/live/final/master.m3u8") == (None, "/live/final/master.m3u8")
    assert split_token_path("/t/garbage/live/final/master.m3u8") == (
        "",
        "/t/garbage/live/final/master.m3u8",
    )
    token = _sign()
    assert split_token_path(f"/t/{token}") == (token, "/")
    assert split_token_path(f"/t/{token}x/live") == ("", f"/t/{token}x/live")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"acl": "live/x/*"},
        {"acl": "/live/x/*~exp=9"},
        {"session_id": "a~b"},
        {"data": "x/y"},
        {"start": NOW, "expires": NOW},
    ],
)
def test_signer_refuses_values_that_would_break_the_format(kwargs: dict[str, object]) -> None:
    """Claims containing separators are rejected at issue time rather than producing bad tokens."""
    args: dict[str, object] = {"acl": "/live/x/*", "start": NOW, "expires": NOW + 1} | kwargs
    with pytest.raises(TokenError):
        TokenSigner({"k1": K1}).sign(**args)  # type: ignore[arg-type]


def test_bad_key_configuration_is_reported() -> None:
    """Short or non-hex secrets and unknown signing key ids are configuration errors."""
    with pytest.raises(TokenError, match="hex"):
        TokenKey.from_hex("k1", "nothex")
    with pytest.raises(TokenError, match="16 bytes"):
        TokenKey.from_hex("k1", "00ff")
    with pytest.raises(TokenError, match="not among"):
        TokenSigner({"k1": K1}, kid="k2")


def test_token_gate_for_origins_and_edges() -> None:
    """The origin serves tokenised paths without the token, and refuses protected paths without one."""
    gate = TokenGate(TokenVerifier({"k1": K1}))
    token = _sign()
    ok = gate.check(f"/t/{token}/live/final/v720/42.m4s", NOW)
    assert ok.allowed
    assert ok.path == "/live/final/v720/42.m4s"
    assert ok.claims is not None
    assert ok.claims.session_id == "s1"
    assert gate.check("/live/final/master.m3u8", NOW).reason is TokenDenial.MISSING
    assert gate.check("/healthz", NOW).allowed
    assert gate.check("/t/nonsense/live/final/master.m3u8", NOW).reason is TokenDenial.MALFORMED
    assert gate.check(f"/t/{token}/live/other/master.m3u8", NOW).reason is TokenDenial.ACL_MISMATCH
    assert (
        gate.check(f"/t/{token}/live/final/master.m3u8", NOW + 10**6).reason is TokenDenial.EXPIRED
    )
    assert (
        TokenGate(gate.verifier, require_all=True).check("/healthz", NOW).reason
        is TokenDenial.MISSING
    )
