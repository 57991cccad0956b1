"""Who is calling: operators by API key (roles admin/operator/read-only), viewers by JWT.

The platform ships a development identity provider (HS256, shared secret) so a whole stack runs
on one machine; production points ``jwt_public_keys_pem`` at the real issuer's RS256/ES256 keys.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mainevent.control.entitlement import Denial
from mainevent.control.errors import ControlError, Forbidden, Unauthorized
from mainevent.control.settings import ApiKeySetting
from mainevent.control.store import Actor

__all__ = ["ROLE_RANK", "DevIdentityProvider", "OperatorAuth", "ViewerAuth", "hash_api_key"]

ROLE_RANK = {"read-only": 0, "operator": 1, "admin": 2}


def hash_api_key(key: str) -> str:
    """Hex SHA-256 of an API key, as configured in ``api_keys[].key_sha256``."""
    return hashlib.sha256(key.encode()).hexdigest()


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class OperatorAuth:
    """API keys by their hash; lookups are dictionary hits on the digest (no secret comparison)."""

    def __init__(self, keys: Iterable[ApiKeySetting]) -> None:
        self._by_hash = {k.key_sha256: Actor(k.name, k.role) for k in keys}
        self._actors = frozenset(self._by_hash.values())

    def knows(self, actor: Actor) -> bool:
        """Some configured key belongs to ``actor`` (same name and role)."""
        return actor in self._actors

    def authenticate(self, authorization: str | None, need: str) -> Actor:
        """The operator behind ``Authorization: Bearer <key>``, if it has at least role ``need``."""
        key = _bearer(authorization)
        if key is None:
            raise Unauthorized(
                "missing_credentials", "send the operator API key as `Authorization: Bearer <key>`"
            )
        actor = self._by_hash.get(hash_api_key(key))
        if actor is None:
            raise Unauthorized("invalid_credentials", "unknown API key")
        if ROLE_RANK[actor.role] < ROLE_RANK[need]:
            raise Forbidden(
                "insufficient_role",
                f"this needs role {need!r}; key {actor.name!r} has {actor.role!r}",
            )
        return actor


class ViewerAuth:
    """Verifies viewer JWTs (``iss``, ``aud``, ``exp``, ``sub``) and caches verified tokens.

    A viewer sends the same token with every request until it expires, and an RS256/ES256
    verification costs 50-150 us of CPU (most of a grant's budget in a join storm). So a verified
    token is remembered by its exact text with its subject and expiry: a later request with the
    same bytes is a dictionary hit, refused once the token has expired. The cache is a bounded
    LRU (``cache_size`` tokens, the least recently used forgotten first, which only costs a
    re-verification); tokens that fail verification are never cached.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        hs_secret: str | None,
        public_keys_pem: Iterable[str] = (),
        cache_size: int = 200_000,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self._hs_secret = hs_secret
        # By key type, not by guessing from the PEM text: a standard "BEGIN PUBLIC KEY" block
        # may hold either. An ES256 token is only tried against EC keys, RS256 against RSA keys.
        self._public: dict[str, list[Any]] = {"ES256": [], "RS256": []}
        for pem in public_keys_pem:
            key = serialization.load_pem_public_key(pem.encode())
            if isinstance(key, ec.EllipticCurvePublicKey):
                self._public["ES256"].append(key)
            elif isinstance(key, rsa.RSAPublicKey):
                self._public["RS256"].append(key)
            else:
                raise ValueError(f"unsupported viewer JWT key type {type(key).__name__}")
        self._cache: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._cache_size = cache_size

    def account(self, authorization: str | None, now: float) -> str:
        """The account id (``sub``) of a valid bearer token, else a 401 with the reason."""
        token = _bearer(authorization)
        if token is None:
            raise ControlError(
                Denial.MISSING_CREDENTIALS,
                "sign in: send the viewer token as `Authorization: Bearer <jwt>`",
                status=401,
            )
        cache = self._cache
        hit = cache.get(token)
        if hit is not None:
            if now < hit[1]:
                cache.move_to_end(token)
                return hit[0]
            # Kept (the LRU ages it out): asked again, the answer stays the same.
            raise ControlError(
                Denial.CREDENTIALS_EXPIRED, "the viewer token expired; sign in again", status=401
            )
        claims = self._decode(token)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise ControlError(
                Denial.INVALID_CREDENTIALS, "the viewer token has no subject", status=401
            )
        cache[token] = (sub, float(claims["exp"]))
        if len(cache) > self._cache_size:
            cache.popitem(last=False)
        return sub

    def cached(self) -> int:
        """How many verified tokens are remembered."""
        return len(self._cache)

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
            alg = header.get("alg")
            if alg == "HS256" and self._hs_secret is not None:
                keys: list[Any] = [self._hs_secret]
            elif alg in ("RS256", "ES256") and self._public[alg]:
                keys = list(self._public[alg])
            else:
                raise jwt.InvalidAlgorithmError(f"algorithm {alg!r} not accepted")
            last: Exception | None = None
            for key in keys:
                try:
                    claims: dict[str, Any] = jwt.decode(
                        token,
                        key,
                        algorithms=[alg],
                        audience=self.audience,
                        issuer=self.issuer,
                        options={"require": ["exp", "sub", "iss", "aud"]},
                        leeway=5,
                    )
                    return claims
                except jwt.InvalidSignatureError as exc:
                    last = exc
            raise last or jwt.InvalidSignatureError("no key")
        except jwt.ExpiredSignatureError:
            raise ControlError(
                Denial.CREDENTIALS_EXPIRED, "the viewer token expired; sign in again", status=401
            ) from None
        except jwt.PyJWTError as exc:
            raise ControlError(
                Denial.INVALID_CREDENTIALS, f"invalid viewer token: {exc}", status=401
            ) from None


class DevIdentityProvider:
    """Mints HS256 viewer JWTs for development, tests and the load generator."""

    def __init__(self, *, secret: str, issuer: str, audience: str) -> None:
        self._secret = secret
        self.issuer = issuer
        self.audience = audience

    def mint(self, sub: str, *, ttl_s: int = 3600, now: float | None = None) -> str:
        """A signed token for account ``sub``."""
        t = int(time.time() if now is None else now)
        claims = {"sub": sub, "iss": self.issuer, "aud": self.audience, "iat": t, "exp": t + ttl_s}
        return jwt.encode(claims, self._secret, algorithm="HS256")
