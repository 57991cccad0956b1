"""The control plane's one HTTP/1.1 framing core: plainly framed requests read without a parser,
responses written as uvicorn's httptools protocol writes them, and the keep-alive bookkeeping of
an answer given without uvicorn.

The admission front (``control/front.py``, with the lean playback answers) and the telemetry
collector's ingest front (``control/telemetry/front.py``) are both built on it, so a request is
framed the same way wherever it is answered. Whatever :func:`frame_head` is not sure of is left
to uvicorn's parser (see ``control/front.py`` for the list).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

__all__ = ["Head", "LeanAnswers", "frame_head", "frame_request", "render_response"]

_MAX_LINE = 8192
_MAX_HEAD = 16384
_MAX_BODY_DIGITS = 7  # < 10 MB: larger bodies are left to uvicorn
# HEAD is left to uvicorn: its answer must not carry the body.
_METHODS = frozenset({b"GET", b"POST", b"PUT", b"PATCH", b"DELETE"})
_TARGET = re.compile(rb"/[\x21-\x7e]*")
# Header lines as RFC 9110 has them (token ":" field-value without control characters), lowered:
# anything llhttp would refuse is not framed here either, so a front never answers a request
# the full parser would have rejected, nor frames one differently.
_HEAD = re.compile(rb"(?:\r\n[-!#$%&'*+.^_`|~0-9a-z]+:[\t\x20-\x7e\x80-\xff]*)*\r\n")
# Headers that frame the request or change the connection: Content-Length is read (once), a
# request with any of the others is left to uvicorn.
_SPECIAL = re.compile(rb"\r\n(content-length|transfer-encoding|expect|connection|upgrade):([^\r]*)")


@dataclass(frozen=True, slots=True)
class Head:
    """A plainly framed request head at ``data[start:]`` (its body may not be all there yet)."""

    method: str
    line_end: int
    """Offset of the CRLF ending the request line: ``data[line_end : body_start - 2]`` are the
    header lines as sent (not lowered)."""
    target: bytes
    """The request target as sent: path and query (``%`` never occurs in it)."""
    head: bytes
    """The header lines, lowered: ``b"\\r\\nname: value\\r\\n...\\r\\n"``."""
    body_start: int
    length: int
    """Content-Length (0 without one)."""

    @property
    def path(self) -> str:
        return self.target.partition(b"?")[0].decode("latin-1")

    @property
    def end(self) -> int:
        """The offset just past the body."""
        return self.body_start + self.length


def frame_head(data: bytes, start: int = 0, *, keep_alive_header: bool = False) -> Head | None:
    """The complete, plainly framed HTTP/1.1 request head at ``data[start:]``, else None.

    None when the head is incomplete or anything about its framing is unusual: the caller then
    hands the bytes to the full parser. The body need not be complete (see :attr:`Head.end`).
    With ``keep_alive_header`` one ``Connection: keep-alive`` (HTTP/1.1's default said aloud,
    as httpx and requests send it) is taken as plain too.
    """
    eol = data.find(b"\r\n", start, start + _MAX_LINE)
    if eol < 0:
        return None
    parts = data[start:eol].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1":
        return None
    method, target = parts[0], parts[1]
    if method not in _METHODS or b"%" in target or _TARGET.fullmatch(target) is None:
        return None
    end = data.find(b"\r\n\r\n", eol, start + _MAX_HEAD)
    if end < 0:
        return None
    head = data[eol : end + 2].lower()
    if _HEAD.fullmatch(head) is None:
        return None
    length = 0
    special = _SPECIAL.findall(head)
    if keep_alive_header and special:
        said = [s for s in special if s[0] == b"connection" and s[1].strip(b" \t") == b"keep-alive"]
        if len(said) == 1:
            special.remove(said[0])
    if special:
        if len(special) > 1 or special[0][0] != b"content-length":
            return None
        value = special[0][1].strip(b" \t")
        if not value.isdigit() or len(value) > _MAX_BODY_DIGITS:
            return None
        length = int(value)
    return Head(method.decode("ascii"), eol, target, head, end + 4, length)


def frame_request(data: bytes, start: int = 0) -> tuple[str, str, int] | None:
    """``(method, path, end)`` of the complete, plainly framed HTTP/1.1 request at ``data[start:]``.

    ``end`` is the offset just past its body. None when the request is incomplete or anything
    about its framing is unusual: the caller then hands the bytes to the full parser.
    """
    head = frame_head(data, start)
    if head is None or head.end > len(data):
        return None
    return head.method, head.path, head.end


def render_response(response: Response, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """``response`` as uvicorn's httptools protocol writes it on a keep-alive connection."""
    out = [STATUS_LINE[response.status_code]]
    for name, value in (*default_headers, *response.raw_headers):
        out += (name.lower(), b": ", value, b"\r\n")
    out += (b"\r\n", bytes(response.body))
    return b"".join(out)


class LeanAnswers(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus the bookkeeping of responses written without it."""

    _lean_at = 0.0  # loop.time() of the last answer given without uvicorn
    _in_message = False  # the parser is inside a request (its head or body is still coming)

    def _parser_owns_connection(self) -> bool:
        """Bytes must go to uvicorn's parser: it is inside a request, requests are pipelined
        or a response is unfinished, or writing is paused or the connection closing."""
        return (
            self._in_message
            or bool(self.pipeline)
            or (self.cycle is not None and not self.cycle.response_complete)
            or self.flow.write_paused
            or self.transport.is_closing()
        )

    def _answered_here(self) -> None:
        """Bookkeeping of a response written here: request count and keep-alive timeout.

        Instead of cancelling and re-arming uvicorn's keep-alive timer per request, the
        timer, when it fires, re-arms itself for what is left since the last answer.
        """
        self.server_state.total_requests += 1
        self._lean_at = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def timeout_keep_alive_handler(self) -> None:
        left = self._lean_at + self.timeout_keep_alive - self.loop.time()
        if left > 0 and not self.transport.is_closing():
            self.timeout_keep_alive_task = self.loop.call_later(
                left, self.timeout_keep_alive_handler
            )
            return
        super().timeout_keep_alive_handler()
