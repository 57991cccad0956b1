"""The venue feed relay hands on whole TS packets as soon as they are written."""

from __future__ import annotations

import asyncio
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from mainevent.media.encode.ffmpeg import (
    LOW_DELAY_TS,
    FeedSpec,
    IngestSpec,
    feed_command,
    ingest_command,
)
from mainevent.media.feed import TS_PACKET, _PacketReader, pusher_command


def _packets(n: int) -> bytes:
    return b"".join(bytes([0x47, i % 256]) + bytes(TS_PACKET - 2) for i in range(n))


@given(
    n=st.integers(min_value=0, max_value=40),
    cuts=st.lists(st.integers(min_value=1, max_value=3 * TS_PACKET), max_size=60),
    tail=st.integers(min_value=0, max_value=TS_PACKET - 1),
)
def test_relay_keeps_packet_alignment_whatever_the_pipe_hands_over(
    n: int, cuts: list[int], tail: int
) -> None:
    data = _packets(n) + b"\x47" * tail

    async def run() -> list[bytes]:
        src = asyncio.StreamReader()
        pos = 0
        for c in cuts:
            src.feed_data(data[pos : pos + c])
            pos += c
        src.feed_data(data[pos:])
        src.feed_eof()
        reader, out = _PacketReader(src, limit=2 * TS_PACKET), []
        while chunk := await reader.read():
            out.append(chunk)
        return out

    chunks = asyncio.run(run())
    assert all(len(c) % TS_PACKET == 0 and c for c in chunks)
    assert b"".join(chunks) == data[: n * TS_PACKET]  # the trailing partial packet is dropped


def test_one_packet_is_handed_on_without_waiting_for_more() -> None:
    async def run() -> bytes:
        src = asyncio.StreamReader()
        src.feed_data(_packets(1))  # no EOF: a relay that waited for a count would hang
        return await asyncio.wait_for(_PacketReader(src).read(), 1.0)

    assert asyncio.run(run()) == _packets(1)


def test_every_ts_hop_of_the_feed_writes_low_delay() -> None:
    spec = FeedSpec(url="srt://127.0.0.1:9000", start_epoch=Fraction(0))
    hops = [
        feed_command("ffmpeg", spec),
        pusher_command("ffmpeg", spec.url),
        ingest_command(
            "ffmpeg", IngestSpec(protocol="srt", host="127.0.0.1", port=9000, stream_key="k")
        ),
    ]
    for cmd in hops:
        joined = " ".join(cmd)
        assert " ".join(LOW_DELAY_TS) in joined, cmd
        assert "-max_interleave_delta 1" in joined
        assert "-omit_video_pes_length 0" in joined
