"""Sans-IO CMCD decoding: the structured-field dictionaries of CTA-5004 (v1) and CTA-5004-B (v2).

Parses exactly what hls.js 1.7 (through ``@svta/cml-cmcd``) puts on the wire: a query argument
``CMCD=<dict>`` or ``CMCD-*`` headers on media requests (request mode), and in event mode a
``POST`` with ``Content-Type: application/cmcd`` whose body is one dictionary per line, each
ending in ``\\n``. Values are RFC 8941 items: integers, decimals, strings, tokens, booleans
(``?0``; a bare key is true), and in v2 inner lists ``(2500 1200)`` for per-object keys such as
``br``, ``bl``, ``mtp``, ``nor``. Parameters on items (``;ot=v``) are read and dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from mainevent.common.cmcd import CmcdValue, encode_dict

__all__ = [
    "CMCD_KEYS",
    "CmcdError",
    "CmcdValue",
    "Decoded",
    "decode_body",
    "decode_dict",
    "decode_headers",
    "decode_query",
    "encode_dict",
    "first_number",
]


# Every key CTA-5004-B defines (the union cml-cmcd 2.3 knows: v1, request, response, event keys).
CMCD_KEYS = frozenset(
    "bl br bs cid d dl mtp nor nrr ot pr rtp sf sid st su tb v "  # v1
    "ab bg bsa bsd bsda cdn cs dfa ec lab lb ltc msd nr pb pt sn sta tab tbl tpb "  # v2 request
    "cmsdd cmsds rc smrt ttfb ttfbb ttlb url "  # v2 response-received
    "cen e h ts".split()  # v2 event
)


class CmcdError(ValueError):
    """A CMCD payload that is not a valid structured-field dictionary (message says where)."""


@dataclass(frozen=True, slots=True)
class Decoded:
    """One decoded dictionary: the known keys, and how many unknown or custom keys were dropped."""

    data: dict[str, CmcdValue]
    unknown_keys: int


def _key_char(c: str) -> bool:
    return c.islower() or c.isdigit() or c in "_-.*"


class _Parser:
    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> CmcdError:
        return CmcdError(f"{what} at character {self.pos + 1}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_ows(self) -> None:
        while self.peek() in (" ", "\t") and self.peek():
            self.pos += 1

    def key(self) -> str:
        start = self.pos
        c = self.peek()
        if not (c.islower() or c == "*"):
            raise self.fail("expected a key (lowercase letter)")
        while self.peek() and _key_char(self.peek()):
            self.pos += 1
        return self.text[start : self.pos]

    def bare_item(self) -> CmcdValue:
        c = self.peek()
        if c == '"':
            return self.string()
        if c == "?":
            self.pos += 1
            b = self.peek()
            if b not in ("0", "1"):
                raise self.fail("expected ?0 or ?1")
            self.pos += 1
            return b == "1"
        if c == "-" or c.isdigit():
            return self.number()
        if c.isalpha() or c == "*":
            start = self.pos
            while self.peek() and (self.peek().isalnum() or self.peek() in "_-.:%*/!#$&'+^`|~"):
                self.pos += 1
            return self.text[start : self.pos]
        raise self.fail("expected a value" if c else "value missing")

    def string(self) -> str:
        self.pos += 1
        out: list[str] = []
        while True:
            c = self.peek()
            if not c:
                raise self.fail("unterminated string")
            self.pos += 1
            if c == "\\":
                n = self.peek()
                if n not in ('"', "\\"):
                    raise self.fail("bad escape in string")
                out.append(n)
                self.pos += 1
            elif c == '"':
                return "".join(out)
            elif not (" " <= c <= "~"):
                raise self.fail("control or non-ASCII character in string")
            else:
                out.append(c)

    def number(self) -> int | float:
        start = self.pos
        if self.peek() == "-":
            self.pos += 1
        digits = 0
        dot = False
        while self.peek() and (self.peek().isdigit() or (self.peek() == "." and not dot)):
            if self.peek() == ".":
                dot = True
            else:
                digits += 1
            self.pos += 1
        raw = self.text[start : self.pos]
        if digits == 0 or raw.endswith(".") or digits > 18:
            raise self.fail(f"bad number {raw!r}")
        return float(raw) if dot else int(raw)

    def params(self) -> None:
        while self.peek() == ";":
            self.pos += 1
            self.skip_ows()
            self.key()
            if self.peek() == "=":
                self.pos += 1
                self.bare_item()

    def item_or_list(self) -> CmcdValue:
        if self.peek() == "(":
            self.pos += 1
            items: list[CmcdValue] = []
            while True:
                self.skip_ows()
                if self.peek() == ")":
                    self.pos += 1
                    self.params()
                    return tuple(items)
                if not self.peek():
                    raise self.fail("unterminated inner list")
                items.append(self.bare_item())
                self.params()
                if not self.peek():
                    raise self.fail("unterminated inner list")
                if self.peek() not in (" ", ")"):
                    raise self.fail("expected a space or ')' in inner list")
        value = self.bare_item()
        self.params()
        return value

    def dictionary(self) -> dict[str, CmcdValue]:
        out: dict[str, CmcdValue] = {}
        self.skip_ows()
        while self.pos < len(self.text):
            key = self.key()
            if self.peek() == "=":
                self.pos += 1
                out[key] = self.item_or_list()
            else:
                out[key] = True
                self.params()
            self.skip_ows()
            if self.pos >= len(self.text):
                break
            if self.peek() != ",":
                raise self.fail("expected ',' between keys")
            self.pos += 1
            self.skip_ows()
            if self.pos >= len(self.text):
                raise self.fail("trailing ','")
        return out


# Fast path for what players actually send (no parameters, no strings inside inner lists): one
# C-level regex validates the whole line and one ``findall`` splits it into members; Python
# only converts the values. Anything else, including every malformed input, goes through the
# full parser above, which also produces the precise error.
_STRING = r'"(?:[^"\\\x00-\x1f\x7f-\uffff]|\\["\\])*"'
_INNER = r'\([^()"]*\)'
_NUM = r"-?[0-9]{1,15}(?:\.[0-9]{1,3})?(?![0-9.])"
_TOKEN = r"[A-Za-z*][A-Za-z0-9_:%*/!#$&'+^`|~.-]*"
_KEY = r"[a-z*][a-z0-9_.*-]*"
_MEMBERS = re.compile(
    rf"({_KEY})(?:=(?:({_STRING})|({_INNER})|(\?[01])|({_NUM})|({_TOKEN})))?(?:,|$)"
)
"""One member per match: key, then the value as written in exactly one of five groups."""
_ONE = rf"{_KEY}(?:=(?:{_STRING}|{_INNER}|\?[01]|{_NUM}|{_TOKEN}))?"
_LINE = re.compile(rf"{_ONE}(?:,{_ONE})*")
"""A whole line of such members (validated once, before ``findall`` splits it)."""
_NUMBER = re.compile(r"-?[0-9]{1,15}(?:\.[0-9]{1,3})?")


def _fast(text: str) -> dict[str, CmcdValue] | None:
    if ";" in text or not text or _LINE.fullmatch(text) is None:
        return None
    out: dict[str, CmcdValue] = {}
    for key, string, inner, boolean, number, token in _MEMBERS.findall(text):
        if number:
            out[key] = float(number) if "." in number else int(number)
        elif token:
            out[key] = token
        elif string:
            v = string[1:-1]
            out[key] = v.replace("\\\\", "\\").replace('\\"', '"') if "\\" in v else v
        elif inner:
            items: list[CmcdValue] = []
            for part in inner[1:-1].split():
                if not _NUMBER.fullmatch(part):
                    return None
                items.append(float(part) if "." in part else int(part))
            out[key] = tuple(items)
        elif boolean:
            out[key] = boolean == "?1"
        else:
            out[key] = True
    return out


def decode_dict(text: str) -> Decoded:
    """One CMCD dictionary → known keys (unknown and custom ``x-y`` keys are dropped and counted)."""
    raw = _fast(text)
    if raw is None:
        raw = _Parser(text).dictionary()
    if CMCD_KEYS.issuperset(raw):
        return Decoded(raw, 0)
    data = {k: v for k, v in raw.items() if k in CMCD_KEYS}
    return Decoded(data, len(raw) - len(data))


def decode_query(value: str) -> Decoded:
    """The (already URL-decoded) value of a ``CMCD=`` query argument."""
    return decode_dict(value)


def decode_headers(headers: Mapping[str, str]) -> Decoded:
    """The ``CMCD-Object/Request/Session/Status`` headers merged into one dictionary."""
    parts = [v for k, v in headers.items() if k.lower().startswith("cmcd-")]
    return decode_dict(",".join(p for p in parts if p.strip()))


def decode_body(body: str, max_records: int) -> list[Decoded]:
    """An ``application/cmcd`` body: one dictionary per line; blank lines are skipped.

    Raises CmcdError naming the first bad line (nothing of a bad body is used).
    """
    out: list[Decoded] = []
    for n, line in enumerate(body.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if len(out) >= max_records:
            raise CmcdError(f"more than {max_records} records in one report")
        try:
            out.append(decode_dict(line))
        except CmcdError as exc:
            raise CmcdError(f"line {n}: {exc}") from None
    return out


def first_number(value: CmcdValue | None) -> float | None:
    """A numeric key's value, taking the first entry of a v2 inner list (``br=(2500)``)."""
    if isinstance(value, tuple):
        value = value[0] if value else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
