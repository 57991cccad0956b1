"""The ingest gateway's policy: limits, credentials, the live slot, refusal counts and SRT logs."""

from __future__ import annotations

from typing import Any

import pytest

from mainevent.media.encode.ffmpeg import IngestSpec, srt_refusal_reason
from mainevent.media.ingest.guard import RTMP_REASONS, IngestGuard, IngestLimits


def guard(**limits: Any) -> IngestGuard:
    return IngestGuard(app="live", stream_key="s3cret-key", limits=IngestLimits(**limits))


def test_attempts_are_rate_limited_per_peer_address() -> None:
    """One address gets a burst, then the refill rate; another address is not affected."""
    g = guard(attempts_per_second=2.0, attempts_burst=3, max_pending=100)
    assert [g.admit("10.0.0.1", 0.0) for _ in range(4)] == [None, None, None, "rate_limited"]
    assert g.admit("10.0.0.2", 0.0) is None
    assert g.admit("10.0.0.1", 0.5) is None  # one token back after 0.5 s at 2/s
    assert g.admit("10.0.0.1", 0.5) == "rate_limited"


def test_unauthenticated_connections_are_capped() -> None:
    """Beyond max_pending handshakes at once, new connections are refused until one leaves."""
    g = guard(max_pending=2)
    assert g.admit("a", 0.0) is None
    assert g.admit("b", 0.0) is None
    assert g.admit("c", 0.0) == "too_many_pending"
    assert g.status(0.0)["pending"] == 2
    g.leave_pending()
    assert g.admit("c", 0.0) is None


def test_credentials() -> None:
    """App and key must match exactly; encoders' trailing slash and ?params are tolerated."""
    g = guard()
    assert g.check_app("live") is None
    assert g.check_app("live/") is None
    assert g.check_app("live?vhost=x") is None
    assert g.check_app("Live") == "wrong_app"
    assert g.check_app("") == "wrong_app"
    assert g.check_key("s3cret-key") is None
    assert g.check_key("s3cret-key?bw=6000") is None
    for wrong in ("s3cret-ke", "s3cret-key2", "S3CRET-KEY", "", "s3cret-key/x", "é"):
        assert g.check_key(wrong) == "wrong_key", wrong


def test_second_publisher_is_refused_unless_the_operator_arms_a_takeover() -> None:
    """The live role is held until released; an armed takeover displaces it once, then expires."""
    g = guard()
    first = g.claim("127.0.0.1:1000", 0.0)
    assert first.ticket is not None
    assert first.displaced is None
    g.went_live(first.ticket, 0.5)
    assert g.claim("127.0.0.1:2000", 1.0).refusal == "role_busy"
    g.allow_takeover(2.0, within_s=10.0)
    assert g.status(3.0)["takeover_armed"]
    second = g.claim("127.0.0.1:3000", 3.0)
    assert second.ticket is not None
    assert second.displaced == first.ticket
    assert g.claim("127.0.0.1:4000", 3.0).refusal == "role_busy"  # one takeover per arming
    g.release(first.ticket)  # the displaced publisher leaving does not free the role
    assert g.status(4.0)["live_peer"] == "127.0.0.1:3000"
    g.release(second.ticket)
    assert g.status(4.0)["live_peer"] is None
    g.allow_takeover(5.0, within_s=1.0)
    assert not g.status(7.0)["takeover_armed"]


def test_every_refusal_is_counted_but_log_lines_are_capped() -> None:
    """A flood is counted in full; at most 10 lines a second are logged, the rest summarised."""
    g = guard()
    decisions = [g.count_refusal("rate_limited", 100.0 + i / 1000) for i in range(200)]
    assert sum(log for log, _ in decisions) == 10
    assert g.refused["rate_limited"] == 200
    assert set(g.refused) == set(RTMP_REASONS)
    log, suppressed = g.count_refusal("wrong_key", 101.5)
    assert (log, suppressed) == (True, 190)


# Lines the listener printed in real runs (ffmpeg 9.0.2, libsrt), one refused caller each.
WRONG_PASSPHRASE = (
    "22:37:46.516412/SRT:RcvQ:w1!W:SRT.cn: processConnectRequest: rsp(REJECT): 1010 - "
    "Incorrect passphrase"
)
NO_PASSPHRASE = (
    "22:37:45.478722/SRT:RcvQ:w1!W:SRT.cn: processConnectRequest: rsp(REJECT): 1011 - "
    "Password required or unexpected"
)
NOT_A_REFUSAL = [
    "22:37:46.516075/SRT:RcvQ:w1!W:SRT.cn: KMREQ/rcv: (snd) Rx process failure - BADSECRET",
    "22:37:46.516404/SRT:RcvQ:w1!W:SRT.cn: @1026636663:newConnection: connection rejected due "
    "to: INTERNAL REJECTION - ERROR:BADSECRET",
    "[in#0/mpegts @ 0x55f2937cad00] Error during demuxing: Input/output error",
]


@pytest.mark.parametrize(
    ("line", "passphrase_set", "reason"),
    [
        (WRONG_PASSPHRASE, True, "wrong_passphrase"),
        (NO_PASSPHRASE, True, "passphrase_required"),
        (NO_PASSPHRASE, False, "passphrase_unexpected"),
        ("x: processConnectRequest: rsp(REJECT): 1005 - Backlog exceeded", True, "srt_rejected"),
    ],
)
def test_libsrt_refusals_are_recognised(line: str, passphrase_set: bool, reason: str) -> None:
    """Each refused SRT caller prints one `rsp(REJECT)` line: it maps to a refusal reason."""
    found = srt_refusal_reason(line, passphrase_set=passphrase_set)
    assert found is not None
    assert found[0] == reason


@pytest.mark.parametrize("line", NOT_A_REFUSAL)
def test_other_listener_lines_are_not_refusals(line: str) -> None:
    """The other lines of the same refusal (and ffmpeg's own) are not counted again."""
    assert srt_refusal_reason(line, passphrase_set=True) is None


def test_srt_listener_enforces_the_passphrase() -> None:
    """With a passphrase the listener enforces encryption: no caller gets in without it."""
    spec = IngestSpec("srt", "127.0.0.1", 9000, "key", "correct-horse")
    assert "enforced_encryption=1" in spec.listen_url
    assert "passphrase=correct-horse" in spec.listen_url
    assert "passphrase" not in IngestSpec("srt", "127.0.0.1", 9000, "key").listen_url


def test_srt_latency_is_the_configured_one_on_both_ends() -> None:
    """`ingest.srt_latency_ms` reaches the listener and the URL handed to venue encoders."""
    from mainevent.commands.stack import ingest_spec
    from mainevent.config import ConfigError, load_settings

    settings = load_settings(overrides={"ingest": {"srt_latency_ms": 300}})
    spec = ingest_spec(settings, 9000)
    assert "latency=300000&" in spec.listen_url
    assert "latency=300000&" in spec.publish_url
    assert "latency=120000&" in IngestSpec("srt", "127.0.0.1", 9000, "key").listen_url
    with pytest.raises(ConfigError, match="srt_latency_ms"):
        load_settings(overrides={"ingest": {"srt_latency_ms": 5}})
