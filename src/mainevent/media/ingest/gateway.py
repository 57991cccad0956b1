"""The ingest gateway of one pipeline: the public front door in front of its ffmpeg listener.

RTMP: an asyncio TCP server on the public ingest address speaks RTMP itself up to the client's
`publish` (sans-IO `ServerSession`), checks app and stream key and the limits (`IngestGuard`), and
only then hands the connection to the internal ffmpeg listener on a private loopback port: after
its own handshake with the listener it replays the client's bytes, then copies client → ffmpeg.
ffmpeg's answers are read and dropped (the client already had the gateway's), and the gateway
acknowledges the client's bytes itself. A refused attempt never reaches ffmpeg. The gateway
connects to each new internal listener as soon as it is up ("parks" on it): ffmpeg accepts one
connection, so nothing else on the machine can reach the listener around the gateway.

SRT: a UDP relay (`SrtRelay`, decisions in the sans-IO `SrtDoor`) owns the public port and
forwards each admitted caller's datagrams, untouched, to ffmpeg's libsrt listener on a private
loopback port. The relay knows every datagram's peer: it drops a second caller's handshakes while
one is live, limits handshake floods per address and callers not yet live, and names the peer of
each refusal. libsrt checks the passphrase and prints each refusal on the listener's stderr,
which `on_listener_log` counts, attributed to the peer whose handshake the relay forwarded last.
ffmpeg's listener does not check the streamid: see `SRT_LIMITS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

from mainevent.media.encode.ffmpeg import RTMP_APP, IngestSpec, srt_refusal_reason
from mainevent.media.ingest.guard import RTMP_REASONS, SRT_REASONS, IngestGuard, IngestLimits
from mainevent.media.ingest.rtmp import (
    HANDSHAKE_SIZE,
    WINDOW_ACK_SIZE,
    ConnectRequested,
    PublishRequested,
    RtmpError,
    ServerSession,
    acknowledgement,
    client_handshake,
    client_handshake_finish,
)
from mainevent.media.ingest.srt_door import SrtDoor, format_peer
from mainevent.media.ingest.srt_relay import SrtRelay

__all__ = ["SRT_LIMITS", "GatewayError", "IngestGateway"]

log = logging.getLogger(__name__)

BACKEND_HOST = "127.0.0.1"
# An authenticated publisher waits this long for the internal listener, which restarts after the
# previous feed ended (the transcoder flushes first, up to ~8 s).
BACKEND_WAIT_S = 15.0
BACKEND_HANDSHAKE_S = 5.0
CONNECT_RETRY_S = 0.05
# A live publisher silent this long is dropped (a dead peer never sends FIN).
SPLICE_IDLE_S = 15.0
FLUSH_S = 1.0
ACCEPT_BACKLOG = 256

SRT_LIMITS = (
    "ffmpeg's SRT listener does not compare the caller's streamid: only the passphrase protects it",
    "libsrt names no caller in its refusals: each is attributed to the peer whose handshake the "
    "relay forwarded last (two callers handshaking in the same instant can be swapped)",
)


class GatewayError(RuntimeError):
    """The gateway cannot run (e.g. its public port is taken); the message says what to do."""


class _Refused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class _Backend:
    """One connection to the internal ffmpeg listener, handshaken and waiting for a publisher."""

    port: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    closed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(slots=True)
class _Live:
    ticket: int
    peer: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    stop_reason: str = ""


def _free_loopback_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((BACKEND_HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _peer(writer: asyncio.StreamWriter) -> tuple[str, str]:
    """(host, "host:port") of the client."""
    name = writer.get_extra_info("peername")
    if not isinstance(name, tuple) or len(name) < 2:
        return "unknown", "unknown"
    host = str(name[0])
    return host, (f"[{host}]:{name[1]}" if ":" in host else f"{host}:{name[1]}")


class IngestGateway:
    """Authenticates, limits and counts the contribution connections of one pipeline."""

    def __init__(
        self, name: str, spec: IngestSpec, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.spec = spec
        self.clock = clock
        self.rtmp = spec.protocol == "rtmp"
        self.guard = IngestGuard(
            app=RTMP_APP,
            stream_key=spec.stream_key,
            limits=IngestLimits(
                max_pending=spec.max_pending_connections,
                attempts_per_second=spec.attempts_per_second,
                attempts_burst=spec.attempts_burst,
                handshake_timeout_s=spec.handshake_timeout_s,
            ),
            reasons=RTMP_REASONS if self.rtmp else SRT_REASONS,
        )
        self.port: int | None = None
        self.listening = asyncio.Event()
        self._backend_port: int | None = None
        self._backend_wanted = asyncio.Event()
        self._parked: _Backend | None = None
        self._parked_changed = asyncio.Event()
        self._live: dict[int, _Live] = {}
        self._accepting = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.srt_relay = SrtRelay(
            SrtDoor(self.guard), clock=clock, on_refused=self._refused, backend_host=BACKEND_HOST
        )

    # -- pipeline-facing ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Serve the public ingest port (RTMP server or SRT relay) while the block runs."""
        if not self.rtmp:
            if not self.spec.passphrase:
                log.warning(
                    "%s: SRT ingest without a passphrase accepts any caller "
                    "(ffmpeg's listener does not check the streamid): set ingest.passphrase",
                    self.name,
                )
            try:
                self.port = await self.srt_relay.start(self.spec.host, self.spec.port)
            except OSError as exc:
                raise GatewayError(
                    f"{self.name}: the SRT ingest cannot listen on "
                    f"{self.spec.host}:{self.spec.port}: {exc.strerror or exc} "
                    "(choose another ingest.port, or 0 for any free port)"
                ) from None
            self.listening.set()
            try:
                yield
            finally:
                self.srt_relay.close()
                self.listening.clear()
            return
        try:
            server = await asyncio.start_server(
                self._on_client, self.spec.host, self.spec.port, backlog=ACCEPT_BACKLOG
            )
        except OSError as exc:
            raise GatewayError(
                f"{self.name}: the ingest cannot listen on {self.spec.host}:{self.spec.port}: "
                f"{exc.strerror or exc} (choose another ingest.port, or 0 for any free port)"
            ) from None
        self.port = server.sockets[0].getsockname()[1]
        self.listening.set()
        self._accepting = True
        self._spawn(self._park_loop())
        try:
            yield
        finally:
            # The gateway owns its tasks (connections, parking) and ends them with the block; a
            # TaskGroup here would wrap the pipeline's own errors in ExceptionGroups.
            self._accepting = False
            server.close()
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()
            self.listening.clear()

    def listener_spec(self) -> IngestSpec:
        """Where the next ffmpeg listener must listen: a fresh private loopback port."""
        if not self.rtmp:
            port = _free_loopback_port(socket.SOCK_DGRAM)
            self.srt_relay.set_backend(port)
            return replace(self.spec, host=BACKEND_HOST, port=port)
        self._backend_port = _free_loopback_port()
        self._backend_wanted.set()
        return replace(self.spec, host=BACKEND_HOST, port=self._backend_port)

    def on_listener_log(self, line: str) -> None:
        """A line of the ffmpeg listener's stderr: counts libsrt's refusals, with the peer."""
        if self.rtmp:
            return
        found = srt_refusal_reason(line, passphrase_set=bool(self.spec.passphrase))
        if found is not None:
            reason, detail = found
            addr = self.srt_relay.door.on_listener_refusal()
            peer = "(unknown peer)" if addr is None else format_peer(addr)
            self._refused(peer, reason, f"SRT caller: {detail}")

    def allow_takeover(self, within_s: float = 60.0) -> None:
        """Operator: the next publisher with the right key (within `within_s`) replaces the live one."""
        self.guard.allow_takeover(self.clock(), within_s)
        log.warning(
            "%s: takeover armed for %.0f s: the next authenticated publisher replaces %s",
            self.name,
            within_s,
            self.guard.live_peer or "nobody (no publisher is live)",
        )

    def status(self) -> dict[str, Any]:
        """Publisher, pending connections and refusals by reason (JSON-able)."""
        st: dict[str, Any] = {
            "protocol": self.spec.protocol,
            "listen": f"{self.spec.host}:{self.spec.port if self.port is None else self.port}",
            **self.guard.status(self.clock()),
        }
        if self.rtmp:
            st["listener_ready"] = self._parked is not None
        else:
            st["limits"] = list(SRT_LIMITS)
        return st

    # -- connections -------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%s: ingest gateway task failed", self.name, exc_info=exc)

    def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._accepting:
            writer.transport.abort()
            return
        self._spawn(self._handle(reader, writer))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, peer = _peer(writer)
        refusal = self.guard.admit(host, self.clock())
        if refusal is not None:
            writer.transport.abort()  # nothing read, nothing answered
            self._refused(peer, refusal, "closed at once")
            return
        ticket: int | None = None
        timeout = self.guard.limits.handshake_timeout_s
        try:
            session = ServerSession(os.urandom(HANDSHAKE_SIZE - 8))
            try:
                async with asyncio.timeout(timeout):
                    app = await self._authenticate(session, reader, writer)
            finally:
                self.guard.leave_pending()
            claim = self.guard.claim(peer, self.clock())
            if claim.ticket is None:
                session.reject_publish("another publisher is live on this ingest")
                await _flush(session, writer)
                raise _Refused("role_busy", "a publisher is already live on this role")
            ticket = claim.ticket
            if claim.displaced is not None:
                await self._stop_live(claim.displaced, f"taken over by {peer} (operator)")
            await self._publish(session, reader, writer, peer, ticket, app)
        except _Refused as r:
            self._refused(peer, r.reason, r.detail)
        except TimeoutError as exc:
            if ticket is None:
                self._refused(peer, "handshake_timeout", f"no valid publish within {timeout:g} s")
            else:
                log.info("%s: RTMP publisher %s: connection lost: %s", self.name, peer, exc)
        except RtmpError as exc:
            self._refused(peer, "malformed", str(exc))
        except OSError as exc:  # incl. ConnectionError, IncompleteReadError is EOFError
            if ticket is None:
                self._refused(peer, "incomplete", f"connection lost: {exc}")
            else:
                log.info("%s: RTMP publisher %s: connection lost: %s", self.name, peer, exc)
        except Exception:
            # A gateway bug must not take the pipeline (and the live publisher) down with it.
            log.exception("%s: ingest gateway error on the connection from %s", self.name, peer)
            self._refused(peer, "internal_error", "see the traceback above")
        finally:
            if ticket is not None:
                self.guard.release(ticket)
            writer.transport.abort()

    async def _authenticate(
        self, session: ServerSession, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> str:
        """Speak RTMP until an acceptable `publish`; returns the app. Raises on refusal."""
        app = ""
        while True:
            event = session.next_event()
            if out := session.data_to_send():
                writer.write(out)
                await writer.drain()
            if event is None:
                data = await reader.read(65536)
                if not data:
                    raise _Refused("incomplete", "closed the connection before publishing")
                session.receive_data(data)
            elif isinstance(event, ConnectRequested):
                if (reason := self.guard.check_app(event.app)) is not None:
                    session.reject_connect(f"unknown application {event.app[:64]!r}")
                    await _flush(session, writer)
                    raise _Refused(reason, f"app {event.app[:64]!r}")
                app = event.app
                session.accept_connect()
            elif isinstance(event, PublishRequested):
                if (reason := self.guard.check_key(event.stream_name)) is not None:
                    # The key itself is never logged: a near miss would leak most of it.
                    session.reject_publish("stream key rejected")
                    await _flush(session, writer)
                    raise _Refused(reason, "stream key rejected")
                return app

    async def _publish(
        self,
        session: ServerSession,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: str,
        ticket: int,
        app: str,
    ) -> None:
        backend = await self._take_backend()
        if backend is None:
            session.reject_publish("the ingest is not ready, try again", "NetStream.Publish.Failed")
            await _flush(session, writer)
            raise _Refused("ingest_unavailable", f"no internal listener within {BACKEND_WAIT_S} s")
        live = _Live(ticket, peer)
        self._live[ticket] = live
        try:
            backend.writer.write(session.replay)
            await backend.writer.drain()
            session.accept_publish()
            writer.write(session.data_to_send())
            await writer.drain()
            self.guard.went_live(ticket, self.clock())
            log.info("%s: RTMP publisher %s is live (app %s)", self.name, peer, app)
            why = await self._splice(session, reader, writer, backend, live)
            log.info("%s: RTMP publisher %s left: %s", self.name, peer, why)
        finally:
            backend.writer.close()  # ffmpeg sees the end of the feed and exits
            live.done.set()
            self._live.pop(ticket, None)

    async def _splice(
        self,
        session: ServerSession,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        backend: _Backend,
        live: _Live,
    ) -> str:
        """Copy the client's media to ffmpeg until one side ends; returns why it ended."""

        async def pump() -> str:
            received = acked = session.bytes_received
            while True:
                try:
                    async with asyncio.timeout(SPLICE_IDLE_S):
                        data = await reader.read(1 << 16)
                except TimeoutError:
                    return f"no data for {SPLICE_IDLE_S:g} s"
                if not data:
                    return "the publisher closed the connection"
                backend.writer.write(data)
                await backend.writer.drain()
                received += len(data)
                if received - acked >= WINDOW_ACK_SIZE:
                    writer.write(acknowledgement(received))
                    acked = received

        pump_task = asyncio.create_task(pump())
        closed_task = asyncio.create_task(backend.closed.wait())
        stop_task = asyncio.create_task(live.stop.wait())
        try:
            await asyncio.wait(
                (pump_task, closed_task, stop_task), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (pump_task, closed_task, stop_task):
                task.cancel()
            await asyncio.gather(closed_task, stop_task, return_exceptions=True)
            # (No suppress: a cancellation of this task while waiting must propagate.)
            await asyncio.wait((pump_task,))
        if pump_task.done() and not pump_task.cancelled():
            return pump_task.result()  # raises the pump's OSError, if any
        if live.stop.is_set():
            return live.stop_reason
        return "the internal listener closed"

    async def _stop_live(self, ticket: int, why: str) -> None:
        live = self._live.get(ticket)
        if live is None:
            return
        log.warning("%s: ending live publisher %s: %s", self.name, live.peer, why)
        live.stop_reason = why
        live.stop.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await live.done.wait()

    def _refused(self, peer: str, reason: str, detail: str) -> None:
        log_it, suppressed = self.guard.count_refusal(reason, self.clock())
        if log_it:
            more = f" ({suppressed} more refusals not logged)" if suppressed else ""
            log.warning(
                "%s: ingest refused %s from %s: %s%s", self.name, reason, peer, detail, more
            )

    # -- the internal listener ---------------------------------------------------------------

    async def _take_backend(self) -> _Backend | None:
        try:
            async with asyncio.timeout(BACKEND_WAIT_S):
                while True:
                    backend = self._parked
                    if backend is not None and not backend.closed.is_set():
                        self._parked = None
                        return backend
                    self._parked_changed.clear()
                    await self._parked_changed.wait()
        except TimeoutError:
            return None

    async def _park_loop(self) -> None:
        while True:
            await self._backend_wanted.wait()
            self._backend_wanted.clear()
            port = self._backend_port
            assert port is not None
            backend = await self._connect_backend(port)
            if backend is None:
                continue
            self._parked = backend
            self._parked_changed.set()
            self._spawn(self._drain(backend))

    async def _connect_backend(self, port: int) -> _Backend | None:
        """Connect (retrying while ffmpeg starts) and handshake; None if the port was replaced."""
        while self._backend_port == port:
            try:
                reader, writer = await asyncio.open_connection(BACKEND_HOST, port)
            except OSError:
                await asyncio.sleep(CONNECT_RETRY_S)
                continue
            try:
                async with asyncio.timeout(BACKEND_HANDSHAKE_S):
                    writer.write(client_handshake(os.urandom(HANDSHAKE_SIZE - 8)))
                    s0s1s2 = await reader.readexactly(1 + 2 * HANDSHAKE_SIZE)
                    writer.write(client_handshake_finish(s0s1s2))
                    await writer.drain()
            except (OSError, EOFError, TimeoutError, RtmpError) as exc:
                # ffmpeg accepts one connection: this listener is spent; the pipeline restarts it.
                log.warning("%s: internal RTMP listener on port %d: %s", self.name, port, exc)
                writer.transport.abort()
                return None
            return _Backend(port, reader, writer)
        return None

    async def _drain(self, backend: _Backend) -> None:
        """Read and drop what ffmpeg says (answers to replayed commands, acknowledgements)."""
        try:
            while await backend.reader.read(1 << 16):
                pass
        except OSError:
            pass
        finally:
            backend.closed.set()
            if self._parked is backend:
                self._parked = None
            backend.writer.transport.abort()


async def _flush(session: ServerSession, writer: asyncio.StreamWriter) -> None:
    """Send the session's last words (a refusal) without waiting on a client that does not read."""
    if out := session.data_to_send():
        writer.write(out)
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(FLUSH_S):
                await writer.drain()
