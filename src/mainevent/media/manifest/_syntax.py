"""Lexical layer of HLS playlists (rfc8216bis §4.2): attribute lists and typed values.

Values are exact: decimals become integer microseconds, dates integer epoch milliseconds.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from fractions import Fraction

from mainevent.media.manifest.errors import PlaylistError

_NAME = re.compile(r"[A-Z0-9-]+")
_INTEGER = re.compile(r"[0-9]{1,20}")
_DECIMAL = re.compile(r"([0-9]+)(?:\.([0-9]*))?|\.([0-9]+)")
_RESOLUTION = re.compile(r"([0-9]{1,9})x([0-9]{1,9})")
_HEX = re.compile(r"0[xX][0-9A-Fa-f]+")
_DATE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(Z|z|[+-][0-9]{2}(?::?[0-9]{2})?)"
)
_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)
MIN_DATE_MS = (datetime(1, 1, 1) - _EPOCH) // _MS
MAX_DATE_MS = (datetime(9999, 12, 31, 23, 59, 59, 999000) - _EPOCH) // _MS
_UNQUOTED_FORBIDDEN = frozenset('" \t')

# An attribute value as written: (text without quotes, was it a quoted-string).
RawValue = tuple[str, bool]


def format_us(us: int) -> str:
    """Microseconds as decimal seconds: 6 decimals at most, trailing zeros trimmed to 3."""
    seconds, frac = divmod(us, 1_000_000)
    if frac == 0:
        return f"{seconds}.000"
    digits = f"{frac:06d}".rstrip("0")
    return f"{seconds}.{digits:0<3}"


def format_date(ms: int) -> str:
    """Epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`."""
    d = _EPOCH + timedelta(milliseconds=ms)
    return (
        f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}"
        f".{d.microsecond // 1000:03d}Z"
    )


def format_frame_rate(rate: Fraction) -> str:
    """A frame rate with exactly 3 decimals, rounded half up (30000/1001 → 29.970)."""
    millis = math.floor(rate * 1000 + Fraction(1, 2))
    return f"{millis // 1000}.{millis % 1000:03d}"


def parse_integer(text: str, what: str, line: int) -> int:
    """A decimal-integer (0 … 2^64-1)."""
    if not _INTEGER.fullmatch(text) or int(text) >= 2**64:
        raise PlaylistError(f"{what} must be a decimal integer, got {text!r}", line)
    return int(text)


def parse_us(text: str, what: str, line: int) -> int:
    """A decimal-floating-point number of seconds as microseconds (rounded half up)."""
    m = _DECIMAL.fullmatch(text)
    if m is None:
        raise PlaylistError(f"{what} must be a non-negative decimal number, got {text!r}", line)
    whole, frac = (m[1], m[2] or "") if m[1] is not None else ("0", m[3])
    frac = frac.ljust(7, "0")
    return int(whole) * 1_000_000 + int(frac[:6]) + (frac[6] >= "5")


def parse_date(text: str, what: str, line: int) -> int:
    """An ISO 8601 date-time with a zone, as epoch milliseconds (rounded half up)."""
    m = _DATE.fullmatch(text)
    if m is None:
        raise PlaylistError(f"{what} must be an ISO 8601 date-time with zone, got {text!r}", line)
    try:
        local = datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6]))
    except ValueError as exc:
        raise PlaylistError(f"{what} is not a valid date-time ({exc}): {text!r}", line) from None
    us = (local - _EPOCH) // timedelta(microseconds=1)
    frac = (m[7] or "").ljust(7, "0")
    us += int(frac[:6]) + (frac[6] >= "5")
    zone = m[8]
    if zone not in ("Z", "z"):
        hours, minutes = int(zone[1:3]), int(zone[-2:]) if len(zone) > 3 else 0
        offset_us = (hours * 3600 + minutes * 60) * 1_000_000
        us += -offset_us if zone[0] == "+" else offset_us
    return (us + 500) // 1000


def parse_frame_rate(text: str, what: str, line: int) -> Fraction:
    if _DECIMAL.fullmatch(text) is None:
        raise PlaylistError(f"{what} must be a non-negative decimal number, got {text!r}", line)
    return Fraction(text if not text.endswith(".") else text[:-1])


def parse_attribute_list(text: str, tag: str, line: int) -> dict[str, RawValue]:
    """Split `NAME=VALUE,NAME="quoted, with commas",...`; names must be unique."""
    attrs: dict[str, RawValue] = {}
    i, n = 0, len(text)
    if n == 0:
        raise PlaylistError(f"{tag} has an empty attribute list", line)
    while True:
        eq = text.find("=", i)
        if eq < 0:
            raise PlaylistError(f"{tag}: expected NAME=VALUE at {text[i:]!r}", line)
        name = text[i:eq]
        if _NAME.fullmatch(name) is None:
            raise PlaylistError(f"{tag}: invalid attribute name {name!r}", line)
        if text.startswith('"', eq + 1):
            close = text.find('"', eq + 2)
            if close < 0:
                raise PlaylistError(f"{tag}: unterminated quoted string in {name}", line)
            value, quoted, i = text[eq + 2 : close], True, close + 1
        else:
            comma = text.find(",", eq + 1)
            end = n if comma < 0 else comma
            value, quoted, i = text[eq + 1 : end], False, end
            if not value:
                raise PlaylistError(f"{tag}: attribute {name} has no value", line)
            if not _UNQUOTED_FORBIDDEN.isdisjoint(value):
                raise PlaylistError(
                    f"{tag}: unquoted value of {name} contains '\"' or blanks: {value!r}", line
                )
        if name in attrs:
            raise PlaylistError(f"{tag}: attribute {name} appears twice", line)
        attrs[name] = (value, quoted)
        if i == n:
            return attrs
        if text[i] != ",":
            raise PlaylistError(
                f"{tag}: expected ',' after attribute {name}, got {text[i:]!r}", line
            )
        i += 1
        if i == n:
            raise PlaylistError(f"{tag}: trailing ',' in attribute list", line)


class Attributes:
    """Typed access to one tag's attribute list; errors name the tag, attribute and line."""

    __slots__ = ("line", "tag", "values")

    def __init__(self, text: str, tag: str, line: int) -> None:
        self.tag = tag
        self.line = line
        self.values = parse_attribute_list(text, tag, line)

    def _raw(self, name: str, quoted: bool) -> str | None:
        raw = self.values.get(name)
        if raw is None:
            return None
        if raw[1] != quoted:
            kind = "a quoted string" if quoted else "unquoted"
            raise PlaylistError(f"{self.tag}: {name} must be {kind}", self.line)
        return raw[0]

    def _missing(self, name: str) -> PlaylistError:
        return PlaylistError(f"{self.tag}: missing required attribute {name}", self.line)

    def quoted(self, name: str) -> str | None:
        return self._raw(name, True)

    def required_quoted(self, name: str) -> str:
        value = self._raw(name, True)
        if value is None:
            raise self._missing(name)
        return value

    def enum(self, name: str, allowed: tuple[str, ...]) -> str | None:
        value = self._raw(name, False)
        if value is not None and value not in allowed:
            raise PlaylistError(
                f"{self.tag}: {name} must be one of {', '.join(allowed)}, got {value!r}", self.line
            )
        return value

    def yes(self, name: str) -> bool:
        return self.enum(name, ("YES", "NO")) == "YES"

    def integer(self, name: str) -> int | None:
        value = self._raw(name, False)
        return None if value is None else parse_integer(value, f"{self.tag} {name}", self.line)

    def required_integer(self, name: str) -> int:
        value = self.integer(name)
        if value is None:
            raise self._missing(name)
        return value

    def us(self, name: str) -> int | None:
        value = self._raw(name, False)
        return None if value is None else parse_us(value, f"{self.tag} {name}", self.line)

    def required_us(self, name: str) -> int:
        value = self.us(name)
        if value is None:
            raise self._missing(name)
        return value

    def required_signed_us(self, name: str) -> int:
        """A signed-decimal-floating-point number of seconds (e.g. TIME-OFFSET) in µs."""
        value = self._raw(name, False)
        if value is None:
            raise self._missing(name)
        negative = value.startswith("-")
        us = parse_us(value[1:] if negative else value, f"{self.tag} {name}", self.line)
        return -us if negative else us

    def date(self, name: str) -> int | None:
        value = self._raw(name, True)
        return None if value is None else parse_date(value, f"{self.tag} {name}", self.line)

    def resolution(self, name: str) -> tuple[int, int] | None:
        value = self._raw(name, False)
        if value is None:
            return None
        m = _RESOLUTION.fullmatch(value)
        if m is None:
            raise PlaylistError(
                f"{self.tag}: {name} must be WIDTHxHEIGHT, got {value!r}", self.line
            )
        return int(m[1]), int(m[2])

    def frame_rate(self, name: str) -> Fraction | None:
        value = self._raw(name, False)
        return None if value is None else parse_frame_rate(value, f"{self.tag} {name}", self.line)

    def client_attributes(self) -> tuple[tuple[str, str], ...]:
        """`X-` attributes as written (quoted strings keep their quotes)."""
        out = []
        for name, (value, quoted) in self.values.items():
            if name.startswith("X-"):
                if (
                    not quoted
                    and _HEX.fullmatch(value) is None
                    and _DECIMAL.fullmatch(value) is None
                ):
                    raise PlaylistError(
                        f"{self.tag}: {name} must be a quoted string, hexadecimal or decimal",
                        self.line,
                    )
                out.append((name, f'"{value}"' if quoted else value))
        return tuple(out)


def is_client_value(value: str) -> bool:
    """Whether `value` is a valid written `X-` attribute value (quoted, hex or decimal)."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return is_quotable(value[1:-1])
    return _HEX.fullmatch(value) is not None or _DECIMAL.fullmatch(value) is not None


def is_quotable(value: str) -> bool:
    """Whether `value` can be written as a quoted-string (no '"', CR or LF)."""
    return '"' not in value and "\n" not in value and "\r" not in value
