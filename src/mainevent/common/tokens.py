"""Playback tokens in the Akamai EdgeAuth shape, signed and verified without I/O.

A token looks like (SPEC.md §5, plus a key id for rotation)::

    st=1700000000~exp=1700003600~acl=/live/final/*~id=s-3f2a~data=acc-42~kid=k2025~hmac=<hex sha256>

The HMAC-SHA256 covers every field before ``~hmac=``, joined by ``~``, keyed with the hex-decoded
secret of key ``kid``. ACLs are ``!``-separated globs in which ``*`` matches anything (including
``/``), so ``/live/final/*`` covers the multivariant playlist, media playlists, init sections,
segments and parts of event ``final``.

Tokens travel in the path (``/t/<token>/live/...``) because relative URIs in playlists drop query
strings. ``acl`` contains slashes, so :func:`split_token_path` finds the token's end by its fixed
``~hmac=<64 hex>`` terminator rather than by the next ``/``; this works on percent-decoded paths
too. Times are wall-clock epoch seconds (the token is read by other machines), passed in as ``now``.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = [
    "DEV_TOKEN_KEY_HEX",
    "DEV_TOKEN_KID",
    "PathCheck",
    "TokenCheck",
    "TokenClaims",
    "TokenDenial",
    "TokenError",
    "TokenGate",
    "TokenKey",
    "TokenSigner",
    "TokenVerifier",
    "split_token_path",
]

TOKEN_PREFIX: Final = "/t/"

#: Development-only key shared by the control plane (signing) and the origin/edges (verifying) so a
#: one-machine stack works out of the box. It is public: production configures its own keys.
DEV_TOKEN_KID: Final = "dev"
DEV_TOKEN_KEY_HEX: Final = "6d61696e6576656e742d6465762d746f6b656e2d6b65792d6e6f742d736563726574"
_HMAC_HEX_LEN: Final = 64
_HMAC_MARK: Final = "~hmac="
# Values we sign must not contain the separators "~" and "=" nor characters that change meaning in
# a path; session ids and data are opaque tokens, ACLs are paths with "*" and "!".
_VALUE_RE: Final = re.compile(r"^[A-Za-z0-9._:,@+-]{1,256}$")
_ACL_RE: Final = re.compile(r"^/[A-Za-z0-9._/*!,@+-]{0,1023}$")
_KID_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_KNOWN_FIELDS: Final = frozenset({"st", "exp", "acl", "id", "data", "kid"})
_HEX: Final = frozenset("0123456789abcdef")


class TokenError(ValueError):
    """A token could not be signed: a key or a claim is invalid (the message says which)."""


class TokenDenial(StrEnum):
    """Why a token was refused; the value is the machine-readable reason sent with a 403."""

    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    ACL_MISMATCH = "acl_mismatch"
    UNKNOWN_KEY = "unknown_key"
    KEY_RETIRED = "key_retired"
    MISSING = "missing_token"


@dataclass(frozen=True, slots=True)
class TokenKey:
    """One signing secret. ``not_after`` (epoch seconds) ends its validity for verification."""

    kid: str
    secret: bytes
    not_after: float | None = None

    @classmethod
    def from_hex(cls, kid: str, hex_secret: str, not_after: float | None = None) -> TokenKey:
        """Build a key from its hex form (the EdgeAuth convention for configuring secrets)."""
        if not _KID_RE.match(kid):
            raise TokenError(f"key id {kid!r} must match {_KID_RE.pattern}")
        try:
            secret = bytes.fromhex(hex_secret)
        except ValueError:
            raise TokenError(f"key {kid!r}: secret is not hex") from None
        if len(secret) < 16:
            raise TokenError(f"key {kid!r}: secret must be at least 16 bytes (32 hex digits)")
        return cls(kid, secret, not_after)


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a token grants: the ACL globs, its validity window, session id and opaque data."""

    start: int
    expires: int
    acl: str
    kid: str
    session_id: str | None = None
    data: str | None = None


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """Outcome of one verification: ``ok`` with the claims, or the ``reason`` it was refused."""

    ok: bool
    reason: TokenDenial | None = None
    claims: TokenClaims | None = None


def _coerce_key(kid: str, key: TokenKey | bytes | str) -> TokenKey:
    if isinstance(key, TokenKey):
        if key.kid != kid:
            raise TokenError(f"key registered as {kid!r} carries kid {key.kid!r}")
        return key
    if isinstance(key, bytes):
        if not _KID_RE.match(kid):
            raise TokenError(f"key id {kid!r} must match {_KID_RE.pattern}")
        return TokenKey(kid, key)
    return TokenKey.from_hex(kid, key)


class TokenSigner:
    """Issues tokens with the key ``kid`` (by default the first of ``keys``)."""

    __slots__ = ("_key",)

    def __init__(self, keys: Mapping[str, TokenKey | bytes | str], kid: str | None = None) -> None:
        if not keys:
            raise TokenError("a signer needs at least one key")
        chosen = kid if kid is not None else next(iter(keys))
        if chosen not in keys:
            raise TokenError(f"signing key {chosen!r} is not among the configured keys")
        self._key = _coerce_key(chosen, keys[chosen])

    @property
    def kid(self) -> str:
        """Id of the key new tokens are signed with."""
        return self._key.kid

    def sign(
        self,
        *,
        acl: str | Iterable[str],
        start: int,
        expires: int,
        session_id: str | None = None,
        data: str | None = None,
    ) -> str:
        """The token string granting ``acl`` from ``start`` until ``expires`` (epoch seconds)."""
        acl_text = acl if isinstance(acl, str) else "!".join(acl)
        if not _ACL_RE.match(acl_text):
            raise TokenError(
                f"acl {acl_text!r} must be absolute path globs matching {_ACL_RE.pattern}"
            )
        if expires <= start:
            raise TokenError("expires must be after start")
        if start < 0:
            raise TokenError("start must be an epoch time")
        parts = [f"st={int(start)}", f"exp={int(expires)}", f"acl={acl_text}"]
        for name, value in (("id", session_id), ("data", data)):
            if value is not None:
                if not _VALUE_RE.match(value):
                    raise TokenError(f"{name} {value!r} must match {_VALUE_RE.pattern}")
                parts.append(f"{name}={value}")
        parts.append(f"kid={self._key.kid}")
        body = "~".join(parts)
        mac = hmac.digest(self._key.secret, body.encode("ascii"), "sha256").hex()
        return f"{body}{_HMAC_MARK}{mac}"


def _acl_matches(acl: str, path: str) -> bool:
    for pattern in acl.split("!"):
        star = pattern.find("*")
        if star < 0:
            if path == pattern:
                return True
        elif star == len(pattern) - 1:
            if path.startswith(pattern[:-1]):
                return True
        elif _glob(pattern).match(path):
            return True
    return False


_GLOB_CACHE: dict[str, re.Pattern[str]] = {}


def _glob(pattern: str) -> re.Pattern[str]:
    compiled = _GLOB_CACHE.get(pattern)
    if compiled is None:
        compiled = re.compile(".*".join(re.escape(p) for p in pattern.split("*")) + r"\Z", re.S)
        if len(_GLOB_CACHE) < 1024:
            _GLOB_CACHE[pattern] = compiled
    return compiled


_MALFORMED: Final = TokenCheck(False, TokenDenial.MALFORMED)


class TokenVerifier:
    """Checks tokens against a set of keys by id; no database, no clock of its own.

    ``retired`` names key ids that must no longer be accepted (rotation finished) while still
    being recognised, so the reason is ``key_retired`` rather than ``unknown_key``.
    ``leeway`` seconds of clock skew are tolerated on ``st`` and ``exp``.
    """

    __slots__ = ("_keys", "_leeway", "_retired")

    def __init__(
        self,
        keys: Mapping[str, TokenKey | bytes | str],
        *,
        retired: Iterable[str] = (),
        leeway: float = 0.0,
    ) -> None:
        self._keys = {kid: _coerce_key(kid, key) for kid, key in keys.items()}
        self._retired = frozenset(retired)
        self._leeway = leeway

    @property
    def kids(self) -> frozenset[str]:
        """Ids of the keys this verifier knows (active or past their ``not_after``)."""
        return frozenset(self._keys)

    def verify(self, token: str, path: str, now: float, *, check_time: bool = True) -> TokenCheck:
        """Whether ``token`` grants ``path`` at epoch time ``now``; constant-time MAC compare.

        ``check_time=False`` skips ``st``/``exp`` (the playback API uses it to accept a token
        being refreshed shortly after it expired); keys past their ``not_after`` still fail.
        """
        cut = token.rfind(_HMAC_MARK)
        if cut <= 0:
            return _MALFORMED
        mac = token[cut + len(_HMAC_MARK) :]
        if len(mac) != _HMAC_HEX_LEN or not _HEX.issuperset(mac):
            return _MALFORMED
        body = token[:cut]
        fields: dict[str, str] = {}
        for item in body.split("~"):
            name, eq, value = item.partition("=")
            if not eq or name not in _KNOWN_FIELDS or name in fields:
                return _MALFORMED
            fields[name] = value
        kid = fields.get("kid")
        exp_text = fields.get("exp")
        acl = fields.get("acl")
        if kid is None or exp_text is None or acl is None or not acl:
            return _MALFORMED
        st_text = fields.get("st", "0")
        if not (exp_text.isdigit() and st_text.isdigit()):
            return _MALFORMED
        key = self._keys.get(kid)
        if key is None:
            if kid in self._retired:
                return TokenCheck(False, TokenDenial.KEY_RETIRED)
            return TokenCheck(False, TokenDenial.UNKNOWN_KEY)
        if kid in self._retired or (key.not_after is not None and now > key.not_after):
            return TokenCheck(False, TokenDenial.KEY_RETIRED)
        try:
            message = body.encode("ascii")
        except UnicodeEncodeError:
            return _MALFORMED
        expected = hmac.digest(key.secret, message, "sha256").hex()
        if not hmac.compare_digest(expected, mac):
            return TokenCheck(False, TokenDenial.BAD_SIGNATURE)
        start = int(st_text)
        expires = int(exp_text)
        if check_time:
            if now >= expires + self._leeway:
                return TokenCheck(False, TokenDenial.EXPIRED)
            if now < start - self._leeway:
                return TokenCheck(False, TokenDenial.NOT_YET_VALID)
        if "/../" in path or path.endswith("/..") or not _acl_matches(acl, path):
            return TokenCheck(False, TokenDenial.ACL_MISMATCH)
        return TokenCheck(
            True, None, TokenClaims(start, expires, acl, kid, fields.get("id"), fields.get("data"))
        )


def split_token_path(path: str) -> tuple[str | None, str]:
    """Split ``/t/<token>/live/...`` into ``(token, "/live/...")``; other paths give ``(None, path)``.

    A path that starts with ``/t/`` but has no well-formed token end gives ``("", path)`` so the
    caller can answer 403 ``malformed`` instead of serving the unprotected path.
    """
    if not path.startswith(TOKEN_PREFIX):
        return None, path
    mark = path.find(_HMAC_MARK, len(TOKEN_PREFIX))
    if mark < 0:
        return "", path
    end = mark + len(_HMAC_MARK) + _HMAC_HEX_LEN
    if len(path) < end or (len(path) > end and path[end] != "/"):
        return "", path
    token = path[len(TOKEN_PREFIX) : end]
    rest = path[end:] or "/"
    return token, rest


@dataclass(frozen=True, slots=True)
class PathCheck:
    """What an origin or edge should do with a request path.

    ``allowed``: serve ``path`` (the token already stripped: never part of a cache key);
    otherwise answer 403 with ``reason``.
    """

    allowed: bool
    path: str
    reason: TokenDenial | None = None
    claims: TokenClaims | None = None


class TokenGate:
    """The token check of the origin and edges, for any request path (no I/O, no database).

    Paths under ``protected`` prefixes must come as ``/t/<token>/...``; other paths pass unless
    ``require_all``. Paths carrying a token are always checked, whatever they point at.
    """

    __slots__ = ("_protected", "_require_all", "verifier")

    def __init__(
        self,
        verifier: TokenVerifier,
        *,
        protected: Iterable[str] = ("/live/",),
        require_all: bool = False,
    ) -> None:
        self.verifier = verifier
        self._protected = tuple(protected)
        self._require_all = require_all

    def check(self, path: str, now: float) -> PathCheck:
        """Decide for ``path`` at epoch time ``now``."""
        token, rest = split_token_path(path)
        if token is None:
            if self._require_all or rest.startswith(self._protected):
                return PathCheck(False, rest, TokenDenial.MISSING)
            return PathCheck(True, rest)
        if not token:
            return PathCheck(False, rest, TokenDenial.MALFORMED)
        result = self.verifier.verify(token, rest, now)
        if not result.ok:
            return PathCheck(False, rest, result.reason)
        return PathCheck(True, rest, None, result.claims)
