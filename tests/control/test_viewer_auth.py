"""Viewer JWTs: ES256 verified once per token, then remembered until expiry in a bounded LRU."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mainevent.control.auth import ViewerAuth
from mainevent.control.errors import ControlError


def _issuer() -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return key, pem


def _mint(key: ec.EllipticCurvePrivateKey, sub: str, exp: float) -> str:
    claims = {"sub": sub, "iss": "idp", "aud": "me", "exp": int(exp)}
    return jwt.encode(claims, key, algorithm="ES256")


def _reason(exc: pytest.ExceptionInfo[ControlError]) -> str:
    return str(exc.value.reason)


def test_es256_tokens_are_verified_once_and_remembered_until_expiry() -> None:
    """A verified token is accepted again from memory; at its expiry it is refused, and stays so."""
    key, pem = _issuer()
    auth = ViewerAuth(issuer="idp", audience="me", hs_secret=None, public_keys_pem=[pem])
    now = time.time()
    token = _mint(key, "acc-1", now + 3600)
    assert auth.account(f"Bearer {token}", now) == "acc-1"
    assert auth.cached() == 1
    # Without the issuer's key nothing new verifies, but the remembered token still does:
    # proof that the second call did not verify the signature again.
    auth._public = {"ES256": [], "RS256": []}
    assert auth.account(f"Bearer {token}", now + 10) == "acc-1"
    with pytest.raises(ControlError) as exc:
        auth.account(f"Bearer {_mint(key, 'acc-2', now + 3600)}", now)
    assert _reason(exc) == "invalid_credentials"
    for _ in range(2):  # expired: refused, and asked again the answer does not change
        with pytest.raises(ControlError) as exc:
            auth.account(f"Bearer {token}", now + 3600)
        assert _reason(exc) == "credentials_expired"


def test_forged_tokens_are_refused_and_not_remembered() -> None:
    """A token signed by another key is refused every time and never enters the cache."""
    _key, pem = _issuer()
    other, _ = _issuer()
    auth = ViewerAuth(issuer="idp", audience="me", hs_secret=None, public_keys_pem=[pem])
    forged = _mint(other, "acc-1", time.time() + 3600)
    for _ in range(2):
        with pytest.raises(ControlError) as exc:
            auth.account(f"Bearer {forged}", time.time())
        assert _reason(exc) == "invalid_credentials"
    assert auth.cached() == 0


def test_the_cache_is_bounded_and_forgets_the_least_recently_used() -> None:
    """Beyond its size the cache drops the token used longest ago; recently used ones stay."""
    secret = "s" * 32
    auth = ViewerAuth(issuer="idp", audience="me", hs_secret=secret, cache_size=3)
    now = time.time()
    tokens = [
        jwt.encode(
            {"sub": f"a{i}", "iss": "idp", "aud": "me", "exp": int(now) + 3600},
            secret,
            algorithm="HS256",
        )
        for i in range(4)
    ]
    for t in tokens[:3]:
        auth.account(f"Bearer {t}", now)
    auth.account(f"Bearer {tokens[0]}", now)  # a0 is now the most recently used
    auth.account(f"Bearer {tokens[3]}", now)  # evicts a1
    assert auth.cached() == 3
    auth._hs_secret = None  # from here on only remembered tokens are accepted
    assert auth.account(f"Bearer {tokens[0]}", now) == "a0"
    assert auth.account(f"Bearer {tokens[3]}", now) == "a3"
    with pytest.raises(ControlError):
        auth.account(f"Bearer {tokens[1]}", now)
