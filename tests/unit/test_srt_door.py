"""Sans-IO decisions of the SRT front door: who reaches the listener, who is refused and counted."""

from __future__ import annotations

from typing import Any

from mainevent.media.ingest.guard import SRT_REASONS, IngestGuard, IngestLimits
from mainevent.media.ingest.srt_door import (
    ACK,
    HANDSHAKE,
    KEEPALIVE,
    REFUSED_QUIET_S,
    SHUTDOWN,
    Decision,
    SrtDoor,
    control_type,
)

A = ("127.0.0.1", 5000)
B = ("127.0.0.1", 5001)
C = ("10.0.0.9", 7000)


def control(kind: int) -> bytes:
    return bytes([0x80 | (kind >> 8), kind & 0xFF]) + bytes(14)


DATA = bytes([0x00, 0x00, 0x00, 0x01]) + bytes(1312)
HS = control(HANDSHAKE)


def door(**limits: Any) -> SrtDoor:
    limits_ = IngestLimits(**limits)
    return SrtDoor(IngestGuard(app="live", stream_key="k", limits=limits_, reasons=SRT_REASONS))


def go_live(d: SrtDoor, addr: tuple[str, int], now: float = 0.0) -> None:
    assert d.from_peer(addr, HS, now) == Decision(True, open=True)
    d.from_listener(addr, control(ACK), now)


def test_packet_classification() -> None:
    """Data packets have the top bit 0; control packets carry a 15-bit type; runts are invalid."""
    assert control_type(DATA) is None
    assert control_type(HS) == HANDSHAKE
    assert control_type(control(ACK)) == ACK
    assert control_type(control(SHUTDOWN)) == SHUTDOWN
    assert control_type(control(0x7FFF)) == 0x7FFF
    assert control_type(b"\x80\x00") == -1


def test_first_caller_goes_live_when_the_listener_acks_it() -> None:
    """A caller's handshake opens a mapping; the listener's ACK makes it the live publisher."""
    d = door()
    assert d.from_peer(A, HS, 0.0) == Decision(True, open=True)
    assert d.guard.pending == 1
    assert d.from_peer(A, HS, 0.1) == Decision(True)
    d.from_listener(A, control(HANDSHAKE), 0.1)  # the handshake answer is not acceptance
    assert d.guard.live_peer is None
    d.from_listener(A, control(KEEPALIVE), 0.2)  # accepted: before any data flows
    assert d.guard.live_peer == "127.0.0.1:5000"
    assert d.guard.pending == 0
    assert d.guard.accepted == 1
    assert d.from_peer(A, DATA, 0.3) == Decision(True)


def test_second_caller_is_refused_once_per_attempt() -> None:
    """While one caller is live, another's handshakes are dropped and counted once per attempt."""
    d = door()
    go_live(d, A)
    assert d.from_peer(B, HS, 1.0) == Decision(False, refusal="second_publisher")
    for i in range(10):  # the caller's retransmissions, while the live one sends on
        assert d.from_peer(B, HS, 1.0 + 0.25 * i) == Decision(False)
        assert d.from_peer(A, DATA, 1.0 + 0.25 * i) == Decision(True)
    assert d.guard.pending == 0
    assert d.expire(3.25 + REFUSED_QUIET_S + 0.1) == []
    assert d.from_peer(B, HS, 6.0) == Decision(False, refusal="second_publisher")


def test_callers_accepted_at_the_same_instant_only_one_goes_live() -> None:
    """Should libsrt accept two racing callers, the second is refused and forgotten."""
    d = door()
    d.from_peer(A, HS, 0.0)
    d.from_peer(B, HS, 0.0)
    assert d.from_listener(A, control(ACK), 0.1) is None
    assert d.from_listener(B, control(KEEPALIVE), 0.1) == "second_publisher"
    assert d.guard.live_peer == "127.0.0.1:5000"
    assert d.guard.pending == 0
    assert d.from_peer(B, DATA, 0.2) == Decision(False)


def test_unknown_peers_non_handshakes_and_runts_are_dropped_uncounted() -> None:
    """Data or garbage from an address that never handshook never reaches the listener."""
    d = door()
    assert d.from_peer(A, DATA, 0.0) == Decision(False)
    assert d.from_peer(A, control(ACK), 0.0) == Decision(False)
    assert d.from_peer(A, b"\x80", 0.0) == Decision(False)
    assert d.peers == {}


def test_new_peers_are_rate_limited_per_host_and_pending_is_capped() -> None:
    """New source ports from one host spend its attempt budget; callers not yet live are capped."""
    d = door(max_pending=3, attempts_per_second=1.0, attempts_burst=5)
    got = [d.from_peer(("127.0.0.1", 6000 + i), HS, 0.0).refusal for i in range(7)]
    assert got == [None, None, None, "too_many_pending", "too_many_pending"] + ["rate_limited"] * 2
    # Another host is not limited by this one's rate, only by the pending cap.
    assert d.from_peer(C, HS, 0.0).refusal == "too_many_pending"


def test_handshake_flood_from_one_address_is_limited_and_counted_once() -> None:
    """One address replaying handshakes is throttled and counted once, not per datagram."""
    d = door()
    decisions = [d.from_peer(A, HS, 0.0) for _ in range(100)]
    forwarded = sum(x.forward for x in decisions)
    assert 1 <= forwarded <= 16
    assert [x.refusal for x in decisions].count("rate_limited") == 1


def test_listener_refusal_is_attributed_to_the_last_handshake() -> None:
    """libsrt's refusal line names the peer whose handshake was forwarded last; it is not pending."""
    d = door()
    d.from_peer(A, HS, 0.0)
    d.from_peer(B, HS, 0.1)
    assert d.on_listener_refusal() == B
    assert d.guard.pending == 1
    assert d.from_peer(B, HS, 0.2) == Decision(False)  # refused: its mapping forwards nothing
    d.from_peer(A, HS, 0.3)
    assert d.on_listener_refusal() == A
    assert d.guard.pending == 0


def test_shutdown_and_silence_free_the_live_slot() -> None:
    """A caller's shutdown, or its silence, ends it; the next caller can go live."""
    d = door()
    go_live(d, A)
    d.from_peer(A, control(SHUTDOWN), 1.0)
    assert d.guard.live_peer is None
    go_live(d, B, 1.1)
    assert d.guard.live_peer == "127.0.0.1:5001"
    assert d.expire(6.05) == [A]  # ended, then idle
    assert d.expire(1.1 + d.live_idle_s + 0.1) == [B]
    assert d.guard.live_peer is None
    assert d.peers == {}


def test_pending_peers_expire_and_reset_forgets_everyone() -> None:
    """A caller that never goes live frees its pending slot; a new listener drops all mappings."""
    d = door(handshake_timeout_s=5.0)
    d.from_peer(A, HS, 0.0)
    for t in range(1, 6):  # keeps handshaking but is never accepted
        d.from_peer(A, HS, float(t))
    assert d.expire(5.5) == [A]
    assert d.guard.pending == 0
    go_live(d, B, 6.0)
    assert d.reset() == [B]
    assert d.guard.live_peer is None
    assert d.guard.pending == 0
