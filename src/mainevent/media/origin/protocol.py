"""The origin's HTTP/1.1 protocol: uvicorn's httptools protocol, answering media playlist GETs
itself.

An LL-HLS publication releases thousands of held blocking reloads at once. Through ASGI each
one costs a task wake-up, two `send` coroutines and header validation (≈ 35 µs, so 10,000 took
0.3-0.5 s). Here a held request is a callback on its connection (`Waiters.hold`): when the
publication lists what it waits for, the callback writes the response head — rendered once
for all requests the publication releases, plus its own `CMSD-Static: ht` — and the shared
body in one write, synchronously inside the publication; no task, no coroutine.

Only plain media playlist GETs take this path (after the token gate, as `_OriginApp` applies
it); the answers come from the same `Origin.playlist_request` / `held_playlist` the ASGI
endpoint uses. Everything else — other paths, HEAD, %-encoded paths, denied tokens, and any
request pipelined behind a pending response — goes to the ASGI app through uvicorn unchanged.
Playlist answers given here do not appear in uvicorn's access log (the origin runs without it);
they are counted in `mainevent_origin_requests_total` as before. When the server stops, a
held player is answered 503 + Retry-After at once instead of being kept until 3 × TD.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from mainevent.media.origin.app import (
    _PLAYLIST_PATH,
    PlaylistHold,
    RawResponse,
    _OriginApp,
    hidden,
)
from mainevent.media.origin.blocking import Hold, HoldLimitReached

__all__ = ["OriginProtocol", "origin_protocol"]

_CMSD = b"cmsd-static: ht="
_CLOSE = b"connection: close\r\n"


class _Pending:
    """Stands in for uvicorn's request cycle while a playlist answer is pending, so that a
    request pipelined behind it is queued (uvicorn starts it once this one is answered)."""

    response_complete = False
    disconnected = False
    keep_alive = True
    more_body = False

    class _Event:
        def set(self) -> None:
            pass

    message_event = _Event()


_PENDING: Any = _Pending()


class OriginProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the origin's media playlists answered in place.

    Bind it to an app with `origin_protocol(app)` and pass the result as uvicorn's `http`.
    """

    origin_app: ClassVar[_OriginApp]

    # The playlist request in progress on this connection (at most one: any later request
    # waits in uvicorn's pipeline until it is answered).
    _active = False
    _answered = False
    _message_done = False
    _keep_alive = True
    _hold: Hold | None = None
    _held: PlaylistHold | None = None
    _t0 = 0.0
    _idle: list[OriginProtocol] | None = None  # the keep-alive batch it idles in

    def on_headers_complete(self) -> None:
        if self._active:
            # Pipelined behind a pending playlist: uvicorn queues it behind `_PENDING`.
            self.cycle = _PENDING
        elif self._take():
            return
        super().on_headers_complete()

    def _take(self) -> bool:
        """Answer or hold the request if it is a plain media playlist GET on an idle
        connection; False leaves it to uvicorn and the ASGI app."""
        if (self.cycle is not None and not self.cycle.response_complete) or self.pipeline:
            return False
        parser = self.parser
        if parser.get_method() != b"GET" or self.expect_100_continue or parser.should_upgrade():
            return False
        url = httptools.parse_url(self.url)
        raw_path: bytes = url.path
        if b"%" in raw_path:
            return False
        path = raw_path.decode("latin-1")
        app = self.origin_app
        gate = app.gate
        if gate is not None and (
            path.startswith("/t/") or (gate.required and path.startswith("/live/"))
        ):
            check = gate.check(path, time.time())
            if not check.allowed:
                return False  # the ASGI app answers 403 with the reason
            path = check.path
        if app.origin.rehearsal and (path.startswith("/rehearsal/") or hidden(app.origin, path)):
            return False  # rehearsal paths and hidden events: the ASGI app decides
        m = _PLAYLIST_PATH.fullmatch(path)
        if m is None:
            return False
        self._active, self._answered, self._message_done = True, False, False
        self._keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
        origin = app.origin
        r = origin.playlist_request(m["event"], m["rendition"], url.query or b"")
        if not isinstance(r, PlaylistHold):
            self._answer(r)
            return True
        try:
            self._t0 = time.perf_counter()
            hold = r.event.hold_playlist(r.rendition, r.msn, r.part, r.hold_s, self._released)
        except HoldLimitReached:
            self._answer(origin.hold_refused(r.event))
            return True
        if hold is None:
            self._answer(origin.held_playlist(r, True, 0.0))
        else:
            self._hold, self._held = hold, r
        return True

    def _released(self, ok: bool) -> None:
        """The hold ended: from inside the publication that satisfied it (`ok`), or its timer.

        This runs once per held player inside the publication, so it does as little as it
        can: everything shared by the players of one release — the body, the head up to
        `CMSD-Static`, the clock — is prepared by the first of them (`_Release`).
        """
        h = self._held
        if h is None:
            return
        self._hold = self._held = None
        transport = self.transport
        if not ok or not self._keep_alive or transport.is_closing():
            if not transport.is_closing():
                held_s = time.perf_counter() - self._t0
                self._answer(self.origin_app.origin.held_playlist(h, ok, held_s))
            return
        key = (id(h.event), h.rendition, h.skip)
        releases = self.origin_app.releases
        rel = releases.get(key)
        if rel is None or rel.event is not h.event or rel.generation != h.event.waiters.generation:
            rel = releases[key] = _Release(self, h)
        ht = b"%d\r\n\r\n" % round((rel.now - self._t0) * 1000)
        transport.write(b"".join((rel.head, ht, rel.body)))
        self._answered = True
        rel.answered.append(self)  # its bookkeeping runs after the release (`_Release.after`)

    def _answer(self, r: RawResponse) -> None:
        status, body, headers = r
        out = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            out += (name, b": ", value, b"\r\n")
        for name, value in headers:
            out += (name, b": ", value, b"\r\n")
        if not self._keep_alive:
            out.append(_CLOSE)
        out += (b"\r\n", body)
        if not self.transport.is_closing():
            self.transport.write(b"".join(out))
        self._answered_now()

    def _answered_now(self) -> None:
        self._answered = True
        if not self._keep_alive:
            self.transport.close()
        if self._message_done:
            self._complete()

    def _complete(self) -> None:
        """Answered and fully read: the connection takes its next request (uvicorn's
        pipeline first), else it waits for one under the keep-alive timeout."""
        self._active = False
        if self.cycle is _PENDING:
            self.cycle = None  # type: ignore[assignment]  # as uvicorn starts it
        if self.pipeline:
            self.on_response_complete()
            return
        # uvicorn's on_response_complete, except that the keep-alive timer is shared by every
        # connection answered in the same loop iteration (a release answers thousands).
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        if self.flow.read_paused:
            self.flow.resume_reading()
        self._idle = _idle_batch(self.loop, self.timeout_keep_alive)
        self._idle.append(self)

    def data_received(self, data: bytes) -> None:
        self._idle = None
        super().data_received(data)

    def on_body(self, body: bytes) -> None:
        if self._active and not self._message_done:
            return  # a body on a playlist GET means nothing
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._active and not self._message_done:
            self._message_done = True
            if self._answered:
                self._complete()
            return
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._hold is not None:
            self._hold.cancel()  # the player went away: stop holding for it
            self._hold = self._held = None
        if self.cycle is _PENDING:
            self.cycle = None  # type: ignore[assignment]  # as uvicorn starts it
        super().connection_lost(exc)

    def shutdown(self) -> None:
        if self._hold is not None:
            # The origin is stopping: answer now rather than keep the player up to 3 × TD.
            hold, h = self._hold, self._held
            hold.cancel()
            self._hold = self._held = None
            self._keep_alive = False
            if h is not None:
                self._answer(self.origin_app.origin.hold_refused(h.event))
        elif self._active:
            self._keep_alive = False
            if self._answered:
                self.transport.close()
        else:
            super().shutdown()


_batches: dict[asyncio.AbstractEventLoop, list[OriginProtocol]] = {}


def _idle_batch(loop: asyncio.AbstractEventLoop, timeout_s: float) -> list[OriginProtocol]:
    """The keep-alive batch of this loop iteration: one timer closes, `timeout_s` from now,
    the connections in it that are still idle then."""
    batch = _batches.get(loop)
    if batch is None:
        batch = _batches[loop] = []
        loop.call_soon(_batches.pop, loop, None)  # the batch ends with this iteration
        loop.call_later(timeout_s, _close_idle, batch)
    return batch


def _close_idle(batch: list[OriginProtocol]) -> None:
    for p in batch:
        if p._idle is batch and not p.transport.is_closing():
            p.transport.close()


class _Release:
    """What every player released by one publication of one playlist gets: the body and the
    response head up to the `CMSD-Static` value (status line, uvicorn's Date/Server headers,
    the origin's headers), rendered once, and the release time their `ht` is measured to.

    The connections' own bookkeeping (keep-alive, request counts, metrics) runs in `after`,
    once the whole release is on the wire.
    """

    __slots__ = ("answered", "body", "event", "generation", "head", "now", "origin")

    def __init__(self, p: OriginProtocol, h: PlaylistHold) -> None:
        self.generation = h.event.waiters.generation
        self.now = time.perf_counter()
        self.event = h.event
        self.origin = p.origin_app.origin
        _, self.body, headers = self.origin.held_playlist(h, True, 0.0)  # counts one answer
        out = [STATUS_LINE[200]]
        for name, value in [*p.server_state.default_headers, *headers]:
            if name != b"cmsd-static":
                out += (name, b": ", value, b"\r\n")
        out.append(_CMSD)
        self.head = b"".join(out)
        self.answered: list[OriginProtocol] = []
        p.loop.call_soon(self.after)

    def after(self) -> None:
        answered, self.answered = self.answered, []
        self.origin._count(self.event, "playlist", 200, len(answered) - 1)
        for p in answered:
            if p._message_done and p._active:
                p._complete()


def origin_protocol(app: Any) -> type[asyncio.Protocol]:
    """The origin's protocol class bound to `app` (from `create_app`), for uvicorn's `http`."""
    if not isinstance(app, _OriginApp):
        raise TypeError(f"origin_protocol needs the app create_app returns, not {app!r}")

    class _Bound(OriginProtocol):
        origin_app = app

    return _Bound
