"""Sans-IO decisions of the SRT front door: which peer's datagrams reach the SRT listener.

The relay (`srt_relay.py`) sees every datagram with its peer address and asks `SrtDoor` what to
do with it. The door never reads SRT payloads beyond the 16-byte header: a data packet has the
top bit 0; a control packet has it set and a 15-bit type (0 handshake, 1 keepalive, 2 ACK, 5 shutdown).

* A peer is *live* once the listener sends it anything but a handshake (keepalive, ACK, data):
  libsrt answers a caller it refused with handshakes only, and talks that way only on a
  connection it accepted. The live slot is `IngestGuard`'s; should libsrt accept two callers that
  handshook at the same instant, the second is refused (`second_publisher`).
* A handshake from a new address is admitted through `IngestGuard.admit` (rate per host,
  not-yet-live peers at once); while a peer is live, any other peer's handshake is dropped and
  refused as `second_publisher`. Each refused address is counted once per attempt: it is
  remembered (and its datagrams dropped uncounted) until it has been quiet for `REFUSED_QUIET_S`.
* A libsrt refusal line names no caller: it is attributed to the peer whose handshake was
  forwarded most recently (`on_listener_refusal`). libsrt answers a handshake as it reads it, so
  with one caller at a time this is exact; two callers handshaking in the same instant can swap.
* Peers that stay silent, or pending too long, expire (`expire`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from mainevent.common.ratelimit import TokenBucket
from mainevent.media.ingest.guard import IngestGuard

__all__ = [
    "ACK",
    "HANDSHAKE",
    "KEEPALIVE",
    "SHUTDOWN",
    "Addr",
    "Decision",
    "SrtDoor",
    "control_type",
    "format_peer",
]

Addr = tuple[str, int]

HEADER_SIZE = 16
HANDSHAKE = 0
KEEPALIVE = 1
ACK = 2
SHUTDOWN = 5

# A caller retransmits its handshake every 250 ms for ~3 s: one refused attempt is one count.
REFUSED_QUIET_S = 2.0
REFUSED_MEMORY = 4096
# libsrt's default peer idle timeout: a live caller sends at least a keepalive a second.
LIVE_IDLE_S = 5.0
# Handshake datagrams one peer address may send (a caller needs ~2, plus retransmits).
HANDSHAKES_PER_S = 8.0
HANDSHAKE_BURST = 16


def control_type(packet: bytes) -> int | None:
    """The control type of an SRT packet; None for a data packet; -1 if it is too short for SRT."""
    if len(packet) < HEADER_SIZE:
        return -1
    if not packet[0] & 0x80:
        return None
    return ((packet[0] & 0x7F) << 8) | packet[1]


def format_peer(addr: Addr) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one datagram from a peer."""

    forward: bool
    open: bool = False  # open a relay socket for this peer first
    refusal: str | None = None  # count and log this refusal


@dataclass(slots=True)
class _Peer:
    created: float
    last_seen: float
    handshakes: TokenBucket
    state: str = "pending"  # pending | live | refused | ended
    ticket: int | None = None
    rate_counted: bool = False


_DROP = Decision(False)
_FORWARD = Decision(True)


class SrtDoor:
    """The peers of one SRT ingest role, their state, and the decision for each datagram."""

    def __init__(
        self,
        guard: IngestGuard,
        *,
        live_idle_s: float = LIVE_IDLE_S,
        handshakes_per_s: float = HANDSHAKES_PER_S,
        handshake_burst: int = HANDSHAKE_BURST,
    ) -> None:
        self.guard = guard
        self.live_idle_s = live_idle_s
        self.pending_s = guard.limits.handshake_timeout_s
        self._hs_rate = handshakes_per_s
        self._hs_burst = handshake_burst
        self.peers: dict[Addr, _Peer] = {}
        self._refused: OrderedDict[Addr, float] = OrderedDict()
        self._last_handshake: Addr | None = None

    def live_peer(self) -> Addr | None:
        return next((a for a, p in self.peers.items() if p.state == "live"), None)

    # -- datagrams -----------------------------------------------------------------------------

    def from_peer(self, addr: Addr, packet: bytes, now: float) -> Decision:
        """A datagram from `addr` to the public port."""
        kind = control_type(packet)
        if kind == -1:
            return _DROP
        peer = self.peers.get(addr)
        if peer is None:
            return self._new_peer(addr, kind, now)
        peer.last_seen = now
        if peer.state == "refused":
            return _DROP
        if kind == HANDSHAKE:
            if peer.handshakes.take(now) > 0:
                if peer.rate_counted:
                    return _DROP
                peer.rate_counted = True
                return Decision(False, refusal="rate_limited")
            if peer.state != "live" and self.live_peer() is not None:
                self._leave_pending(peer)
                peer.state = "refused"
                return Decision(False, refusal="second_publisher")
            self._last_handshake = addr
        elif kind == SHUTDOWN:
            self._end_live(peer)
        return _FORWARD

    def _new_peer(self, addr: Addr, kind: int | None, now: float) -> Decision:
        if addr in self._refused:
            self._refused[addr] = now
            self._refused.move_to_end(addr)
            return _DROP
        if kind != HANDSHAKE:
            return _DROP  # not a connection attempt: libsrt would ignore it too
        refusal = self.guard.admit(addr[0], now)
        if refusal is None and self.live_peer() is not None:
            self.guard.leave_pending()
            refusal = "second_publisher"
        if refusal is not None:
            self._remember_refused(addr, now)
            return Decision(False, refusal=refusal)
        bucket = TokenBucket(self._hs_rate, self._hs_burst)
        bucket.take(now)
        self.peers[addr] = _Peer(now, now, bucket)
        self._last_handshake = addr
        return Decision(True, open=True)

    def from_listener(self, addr: Addr, packet: bytes, now: float) -> str | None:
        """A datagram from the listener towards `addr`: a refusal to count, if any.

        The relay forwards the datagram as it is unless `addr` was refused here.
        """
        peer = self.peers.get(addr)
        if peer is None:
            return None
        kind = control_type(packet)
        if kind == SHUTDOWN:
            self._end_live(peer)
        elif kind not in (HANDSHAKE, -1) and peer.state == "pending":
            claim = self.guard.claim(format_peer(addr), now)
            self._leave_pending(peer)
            if claim.ticket is None:
                peer.state = "refused"
                return "second_publisher"
            peer.state, peer.ticket = "live", claim.ticket
            self.guard.went_live(claim.ticket, now)
        return None

    def on_listener_refusal(self) -> Addr | None:
        """libsrt refused a handshake: the peer it is attributed to (see the module docstring)."""
        addr = self._last_handshake
        peer = self.peers.get(addr) if addr is not None else None
        if peer is not None and peer.state == "pending":
            self._leave_pending(peer)
            peer.state = "refused"
        return addr

    # -- housekeeping --------------------------------------------------------------------------

    def expire(self, now: float) -> list[Addr]:
        """Forget silent peers and pending ones that never went live; returns those to close."""
        gone = []
        for addr, peer in self.peers.items():
            idle = now - peer.last_seen
            if peer.state == "live":
                if idle > self.live_idle_s:
                    gone.append(addr)
            elif idle > self.pending_s or (
                peer.state == "pending" and now - peer.created > self.pending_s
            ):
                gone.append(addr)
        for addr in gone:
            self.close(addr)
        while self._refused:
            addr, seen = next(iter(self._refused.items()))
            if now - seen <= REFUSED_QUIET_S:
                break
            del self._refused[addr]
        return gone

    def close(self, addr: Addr) -> None:
        """Forget `addr` (its relay socket is closed), releasing what it held."""
        peer = self.peers.pop(addr, None)
        if peer is None:
            return
        self._leave_pending(peer)
        self._end_live(peer)
        if self._last_handshake == addr:
            self._last_handshake = None

    def reset(self) -> list[Addr]:
        """A new listener: every peer mapping is stale; returns those to close."""
        gone = list(self.peers)
        for addr in gone:
            self.close(addr)
        return gone

    def _leave_pending(self, peer: _Peer) -> None:
        if peer.state == "pending":
            peer.state = "ended"
            self.guard.leave_pending()

    def _end_live(self, peer: _Peer) -> None:
        if peer.state == "live" and peer.ticket is not None:
            self.guard.release(peer.ticket)
            peer.state, peer.ticket = "ended", None

    def _remember_refused(self, addr: Addr, now: float) -> None:
        self._refused[addr] = now
        self._refused.move_to_end(addr)
        while len(self._refused) > REFUSED_MEMORY:
            self._refused.popitem(last=False)
