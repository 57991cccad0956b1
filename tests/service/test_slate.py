"""The slate: encoded through the event's ladder, re-stamped per segment number, listed between
EXT-X-DISCONTINUITY tags; and EXT-X-GAP as the alternative for total input loss."""

from __future__ import annotations

from pathlib import Path

import pytest

from mainevent.media.cmaf import CmafError
from mainevent.media.cmaf.boxes import find_boxes
from mainevent.media.cmaf.fragment import read_base_dts
from mainevent.media.encode.ffmpeg import LadderSpec, RungSpec, find_ffmpeg
from mainevent.media.manifest import parse_media_playlist
from mainevent.media.origin.live import LiveEvent, RenditionSpec
from mainevent.media.redundancy.slate import encode_slate, restamp, slate_period
from mainevent.media.store import LocalSegmentStore

pytestmark = pytest.mark.anyio

LADDER = LadderSpec(
    rungs=(RungSpec("v180", 320, 180, 300),),
    audio_id="a128",
    audio_bitrate_kbps=128,
    fps=30,
    segment_duration_ms=2000,
    part_target_ms=500,
    preset="ultrafast",
    threads=1,
)


def test_slate_period_lines_aac_frames_up_with_segments() -> None:
    assert slate_period(2000) == 4  # 4 × 96,000 samples = 375 AAC frames
    assert slate_period(6000) == 4
    assert slate_period(1000) == 8  # 48,000 samples = 46.875 frames
    assert slate_period(64_000) == 1  # 3,000 whole frames


async def test_slate_segments_cover_their_epoch_interval(tmp_path: Path) -> None:
    slate = await encode_slate(find_ffmpeg(), LADDER)
    assert set(slate) == {"v180", "a128"}
    video, audio = slate["v180"], slate["a128"]
    assert video.init.track.codec.startswith("avc1.")
    assert audio.init.track.codec == "mp4a.40.2"
    for msn in (897_737_445, 897_737_446, 897_737_448):
        seg, parts = video.at(msn)
        assert seg.msn == msn
        assert seg.start == msn * 2 * 90_000  # video cuts exactly on the boundary
        assert seg.duration == 2 * 90_000
        assert b"".join(parts) == seg.data
        moofs = find_boxes(seg.data, "moof")
        track = video.init.track.track_id
        dts = [read_base_dts(seg.data[m.offset : m.end], track) for m in moofs]
        assert dts[0] == seg.start
        assert dts == sorted(dts)
        assert len(dts) == len(parts)
        a, _ = audio.at(msn)
        # Audio starts at the first AAC frame at or after the boundary, like live segments.
        assert msn * 96_000 <= a.start < msn * 96_000 + 1024
    # Consecutive audio slate segments are contiguous.
    a1, _ = audio.at(897_737_445)
    a2, _ = audio.at(897_737_446)
    assert a1.start + a1.duration == a2.start


def test_restamp_refuses_malformed_boxes() -> None:
    with pytest.raises(CmafError):
        restamp(b"\x00\x00\x00\x30moof\x00", 5)  # size overruns the data


async def test_slate_and_gap_in_the_playlist(tmp_path: Path) -> None:
    slate = await encode_slate(find_ffmpeg(), LADDER)
    ev = LiveEvent(
        event_id="final",
        renditions=[
            RenditionSpec("v180", "video", 300, 320, 180),
            RenditionSpec("a128", "audio", 128),
        ],
        store=LocalSegmentStore(tmp_path),
        segment_duration_ms=2000,
        window_segments=10,
        fps=30,
    )
    v = slate["v180"]
    # Stand-in "live" media: the slate's own segments published as ordinary segments.
    await ev.on_init("v180", v.init)
    for msn in (100, 101):
        await ev.on_segment("v180", v.at(msn)[0])
    for msn in (102, 103):
        seg, parts = v.at(msn)
        await ev.on_segment("v180", seg, slate_parts=parts)
    await ev.on_segment("v180", v.at(104)[0])
    assert ev.publish_gap("v180", 106)  # 105 and 106 are gaps
    assert not ev.publish_gap("v180", 106)
    pl = parse_media_playlist(ev.playlist("v180") or "")
    flags = [(s.discontinuity, s.gap) for s in pl.segments]
    assert pl.media_sequence == 100
    assert flags == [
        (False, False),
        (False, False),
        (True, False),  # slate begins
        (False, False),
        (True, False),  # live media returns
        (False, True),
        (False, True),
    ]
    # Slate parts are stored like live parts (LL-HLS part requests find them).
    assert await ev.store.read("final", "v180", "102.0.m4s") == v.at(102)[1][0]
