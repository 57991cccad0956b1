"""The SRT front door's sockets: a UDP relay from the public SRT port to ffmpeg's private listener.

One public UDP socket receives every caller's datagrams; each admitted peer address gets its own
UDP socket connected to the internal listener (so libsrt sees one peer per relay socket), and
datagrams are forwarded both ways untouched. Every decision is `SrtDoor`'s; this module supplies
the clock, the sockets and one housekeeping timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

from mainevent.media.ingest.srt_door import Addr, SrtDoor, format_peer

__all__ = ["SrtRelay"]

log = logging.getLogger(__name__)

EXPIRE_EVERY_S = 0.5
MAX_DATAGRAM = 65536


class _Public(asyncio.DatagramProtocol):
    def __init__(self, relay: SrtRelay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.relay._from_peer((str(addr[0]), int(addr[1])), data)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP from a caller that went away: the peer expires


class SrtRelay:
    """Forwards SRT datagrams between callers and the internal listener, as `door` decides."""

    def __init__(
        self,
        door: SrtDoor,
        *,
        clock: Callable[[], float],
        on_refused: Callable[[str, str, str], None],
        backend_host: str = "127.0.0.1",
    ) -> None:
        self.door = door
        self.clock = clock
        self.on_refused = on_refused  # (peer, reason, detail)
        self.backend_host = backend_host
        self.backend_port: int | None = None
        self._public: asyncio.DatagramTransport | None = None
        self._socks: dict[Addr, socket.socket] = {}
        self._timer: asyncio.TimerHandle | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on `host:port` (raises OSError); returns the bound port."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Public(self), local_addr=(host, port)
        )
        self._public = transport
        self._timer = loop.call_later(EXPIRE_EVERY_S, self._expire)
        bound: int = transport.get_extra_info("sockname")[1]
        return bound

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for addr in self.door.reset():
            self._close_sock(addr)
        if self._public is not None:
            self._public.close()
            self._public = None

    def set_backend(self, port: int) -> None:
        """A new internal listener on `port`: mappings to the old one are dropped."""
        self.backend_port = port
        for addr in self.door.reset():
            self._close_sock(addr)

    # -- datagrams -------------------------------------------------------------------------

    def _from_peer(self, addr: Addr, data: bytes) -> None:
        decision = self.door.from_peer(addr, data, self.clock())
        if decision.refusal is not None:
            self.on_refused(format_peer(addr), decision.refusal, _DETAILS[decision.refusal])
        if not decision.forward:
            return
        sock = self._socks.get(addr)
        if sock is None:
            if not decision.open or (sock := self._open(addr)) is None:
                return
        with contextlib.suppress(OSError):  # listener not up (ICMP refused): the caller retries
            sock.send(data)

    def _open(self, addr: Addr) -> socket.socket | None:
        if self.backend_port is None:
            self.door.close(addr)
            return None
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect((self.backend_host, self.backend_port))
        except OSError as exc:
            sock.close()
            self.door.close(addr)
            log.warning("SRT relay: cannot reach the internal listener: %s", exc)
            return None
        self._socks[addr] = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._from_listener, addr, sock)
        return sock

    def _from_listener(self, addr: Addr, sock: socket.socket) -> None:
        for _ in range(64):  # bounded per wakeup: other peers get their turn
            try:
                data = sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # ICMP port unreachable while the listener restarts
            refusal = self.door.from_listener(addr, data, self.clock())
            if refusal is not None:
                # libsrt accepted a caller that raced the live one: it gets nothing more.
                self.on_refused(format_peer(addr), refusal, _DETAILS[refusal])
                self._close_sock(addr)
                return
            if self._public is not None:
                self._public.sendto(data, addr)

    def _close_sock(self, addr: Addr) -> None:
        sock = self._socks.pop(addr, None)
        if sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()

    def _expire(self) -> None:
        for addr in self.door.expire(self.clock()):
            self._close_sock(addr)
        # Sockets of peers the door forgot for other reasons (e.g. closed on refusal).
        for addr in [a for a in self._socks if a not in self.door.peers]:
            self._close_sock(addr)
        self._timer = asyncio.get_running_loop().call_later(EXPIRE_EVERY_S, self._expire)


_DETAILS = {
    "rate_limited": "too many SRT handshakes from this address, dropped",
    "too_many_pending": "too many SRT callers not yet live at once, dropped",
    "second_publisher": "a publisher is already live on this role, handshake dropped",
}
