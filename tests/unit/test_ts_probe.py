"""The sans-IO MPEG-TS probe reads the venue clock and notices corruption."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from mainevent.media.ingest.ts import PACKET, TsProbe


def _packet(pid: int, payload: bytes, *, pusi: bool = False, cc: int = 0) -> bytes:
    head = bytes([0x47, (0x40 if pusi else 0) | (pid >> 8), pid & 0xFF, 0x10 | (cc & 0x0F)])
    body = payload[: PACKET - 4]
    return head + body + b"\xff" * (PACKET - 4 - len(body))


def _section(table_id: int, body: bytes) -> bytes:
    length = 5 + len(body) + 4
    return (
        b"\x00"
        + bytes([table_id, 0xB0 | (length >> 8), length & 0xFF])
        + b"\x00\x01\xc1\x00\x00"
        + body
        + b"\x00" * 4
    )


def _pes(pts: int, stream_id: int = 0xE0) -> bytes:
    p = bytes(
        [
            0x21 | ((pts >> 29) & 0x0E),
            (pts >> 22) & 0xFF,
            0x01 | ((pts >> 14) & 0xFE),
            (pts >> 7) & 0xFF,
            0x01 | ((pts << 1) & 0xFE),
        ]
    )
    return b"\x00\x00\x01" + bytes([stream_id]) + b"\x00\x00\x80\x80\x05" + p + b"\x00" * 20


def stream(video_pts: list[int], audio_pts: list[int]) -> bytes:
    pat = _packet(0, _section(0x00, struct.pack(">HH", 1, 0xE000 | 0x1000)), pusi=True)
    pmt_body = b"\xe1\x00\xf0\x00" + b"\x1b\xe1\x00\xf0\x00" + b"\x0f\xe1\x01\xf0\x00"
    pmt = _packet(0x1000, _section(0x02, pmt_body), pusi=True)
    out = [pat, pmt]
    for i, pts in enumerate(video_pts):
        out.append(_packet(0x100, _pes(pts), pusi=True, cc=i))
    for i, pts in enumerate(audio_pts):
        out.append(_packet(0x101, _pes(pts, 0xC0), pusi=True, cc=i))
    return b"".join(out)


def test_reads_venue_clock_and_counts_frames() -> None:
    """Video PTS (time of day) and frame counts come out of a plain TS stream."""
    tod = 71_838 * 90_000
    data = stream([tod + 3000 * i for i in range(10)], [tod - 1920])
    probe = TsProbe()
    events = probe.push(data)
    s = probe.statistics()
    assert s.video_frames == 10
    assert s.audio_pes == 1
    assert s.first_video_pts == tod
    assert s.last_video_pts == tod + 27000
    assert s.video_codec == "h264"
    assert s.audio_codec == "aac"
    assert [e.kind for e in events].count("video") == 10


@given(st.lists(st.integers(min_value=1, max_value=500), min_size=1, max_size=40))
def test_any_chunking_gives_the_same_result(cuts: list[int]) -> None:
    """However the network splits the bytes, the probe sees the same timestamps."""
    data = stream([90_000 * i for i in range(20)], [45_000 * i for i in range(5)])
    whole = TsProbe()
    expected = whole.push(data)
    probe = TsProbe()
    got = []
    i = 0
    for c in cuts:
        got += probe.push(data[i : i + c])
        i += c
    got += probe.push(data[i:])
    assert got == expected
    assert probe.statistics() == whole.statistics()


def test_garbage_is_counted_and_skipped() -> None:
    """Raw garbage between packets is a sync loss; packets after it are still read."""
    good = stream([1000, 4000], [])
    more = stream([7000, 10000], [])
    probe = TsProbe()
    probe.push(good + b"\x01\x02garbage-bytes" * 7 + more)
    s = probe.statistics()
    assert s.sync_losses >= 1
    assert s.last_video_pts == 10000


def test_continuity_errors_are_counted() -> None:
    """A lost TS packet (continuity counter jump) is counted."""
    data = stream([0, 3000, 6000], [])
    pkts = [data[i : i + PACKET] for i in range(0, len(data), PACKET)]
    probe = TsProbe()
    probe.push(b"".join(pkts[:3] + pkts[4:]))  # drop the second video packet
    assert probe.statistics().continuity_errors == 1


def test_pes_after_lost_or_damaged_packets_is_flagged() -> None:
    """A PES start after a continuity error, lost sync or an unreadable PES header is flagged
    `after_loss` (its timestamp jump is no A/V shift); clean ones are not."""
    data = stream([0, 3000, 6000, 9000, 12000], [])
    pkts = [data[i : i + PACKET] for i in range(0, len(data), PACKET)]
    damaged = bytearray(pkts[4])  # the third video packet: PES header destroyed
    damaged[4:] = b"\xaa" * (PACKET - 4)
    probe = TsProbe()
    events = probe.push(b"".join([*pkts[:4], bytes(damaged), *pkts[5:]]))
    assert [(e.pts, e.after_loss) for e in events] == [
        (0, False),
        (3000, False),
        (9000, True),
        (12000, False),
    ]
    probe = TsProbe()
    events = probe.push(b"".join(pkts[:3] + pkts[4:]))  # a lost packet (continuity error)
    assert [(e.pts, e.after_loss) for e in events] == [
        (0, False),
        (6000, True),
        (9000, False),
        (12000, False),
    ]
