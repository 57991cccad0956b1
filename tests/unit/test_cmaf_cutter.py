"""The cutter: encoder fMP4 in, epoch-locked validated parts and segments out."""

from __future__ import annotations

import itertools
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mainevent.media.cmaf import (
    Cutter,
    CutterEvent,
    InitReady,
    PartReady,
    Sample,
    SegmentReady,
    SegmentRejected,
    StreamFailed,
    TrackDefaults,
    UnsupportedMedia,
    iter_boxes,
    parse_fragment,
)
from tests.unit.cmaf_media import (
    FIRST_MSN,
    ORIGIN_MS,
    PART_MS,
    SEGMENT_MS,
    EncodedMedia,
    as_non_sync,
    audio_cutter,
    build_stream,
    chunked,
    encode_media,
    parts_of,
    run_cutter,
    segments,
    split_stream,
    stream_samples,
    video_cutter,
)

VIDEO_D = 180_000  # 2 s at 90 kHz
AUDIO_D = 96_000  # 2 s at 48 kHz
GARBAGE = b"\x00\x00\x00\x20\xffjunk" + bytes(24)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> EncodedMedia:
    """Real transcoder-style ffmpeg output, encoded once for this module."""
    return encode_media(Path(tmp_path_factory.mktemp("cmaf-cutter")))


def fragments_joined(data: bytes, insert_after: int, extra: bytes) -> bytes:
    """The stream with `extra` bytes spliced in after fragment number `insert_after`."""
    init, pairs = split_stream(data)
    flat = [moof + mdat for moof, mdat in pairs]
    return init + b"".join(flat[: insert_after + 1]) + extra + b"".join(flat[insert_after + 1 :])


def rejections(events: list[CutterEvent]) -> list[tuple[int, str]]:
    """(msn, reason) of every rejected segment."""
    return [(e.msn, e.reason) for e in events if isinstance(e, SegmentRejected)]


def reparse(data: bytes) -> list[tuple[int, list[Sample]]]:
    """(tfdt, samples) of every chunk in published bytes, read back with the fragment parser."""
    boxes = list(iter_boxes(data))
    assert [b.type for b in boxes] == ["moof", "mdat"] * (len(boxes) // 2)
    out = []
    for moof, mdat in zip(boxes[::2], boxes[1::2], strict=True):
        out.append(
            parse_fragment(
                data[moof.offset : moof.end], data[mdat.offset : mdat.end], TrackDefaults(1)
            )
        )
    return out


def test_video_segments_are_epoch_locked_and_made_of_their_parts(media: EncodedMedia) -> None:
    """Players get 2 s segments numbered by epoch time, each exactly its four LL-HLS parts."""
    events = run_cutter(video_cutter(), media.video)
    assert isinstance(events[0], InitReady)
    assert events[0].init.track.codec == "avc1.64001f"
    assert rejections(events) == []
    segs = segments(events)
    assert [s.msn for s in segs] == [FIRST_MSN, FIRST_MSN + 1, FIRST_MSN + 2]
    for i, seg in enumerate(segs):
        assert (seg.start, seg.duration, seg.timescale) == (seg.msn * VIDEO_D, VIDEO_D, 90000)
        assert seg.program_date_time_ms == ORIGIN_MS + i * SEGMENT_MS
        ready = [e.part for e in parts_of(events, seg.msn)]
        assert list(seg.parts) == ready
        assert [p.index for p in ready] == [0, 1, 2, 3]
        assert [p.independent for p in ready] == [True, False, False, False]
        assert [p.duration for p in ready] == [45_000] * 4
        assert [p.start for p in ready] == [seg.start + k * 45_000 for k in range(4)]
        assert seg.data == b"".join(p.data for p in ready)
        chunks = reparse(seg.data)
        assert [tfdt for tfdt, _ in chunks] == [p.start for p in ready]
        assert chunks[0][1][0].is_sync
    # Each part is announced before its segment, in order.
    order = [
        (e.part.msn, e.part.index) if isinstance(e, PartReady) else (e.segment.msn, 9)
        for e in events
        if isinstance(e, PartReady | SegmentReady)
    ]
    assert order == sorted(order)


def test_published_video_is_contiguous_and_keeps_every_frame(media: EncodedMedia) -> None:
    """Re-reading the published segments gives every encoded frame once, with no gap or overlap."""
    _, _, encoded = stream_samples(media.video)
    published = [
        s
        for seg in segments(run_cutter(video_cutter(), media.video))
        for _, c in reparse(seg.data)
        for s in c
    ]
    assert len(published) == len(encoded) == 180
    origin = FIRST_MSN * VIDEO_D
    assert [s.dts for s in published] == [s.dts + origin for s in encoded]
    assert [s.data for s in published] == [s.data for s in encoded]
    assert all(a.dts + a.duration == b.dts for a, b in itertools.pairwise(published))


def test_audio_segments_are_contiguous_and_within_one_frame_of_two_seconds(
    media: EncodedMedia,
) -> None:
    """Audio segments line up with video segment numbers; their lengths differ by < 1 AAC frame."""
    events = run_cutter(audio_cutter(min_msn=FIRST_MSN), media.audio)
    assert rejections(events) == []
    segs = segments(events)
    assert [s.msn for s in segs] == [FIRST_MSN, FIRST_MSN + 1, FIRST_MSN + 2]
    assert segs[0].start == FIRST_MSN * AUDIO_D  # AAC priming sits before the boundary
    for a, b in itertools.pairwise(segs):
        assert a.start + a.duration == b.start
    for seg in segs:
        assert abs(seg.duration - AUDIO_D) < 1024
        assert all(p.independent for p in seg.parts)
        assert sum(s.duration for _, c in reparse(seg.data) for s in c) == seg.duration
    assert sum(s.duration for s in segs) == 3 * AUDIO_D


def test_audio_priming_before_the_first_boundary_is_not_published(media: EncodedMedia) -> None:
    """The AAC priming frame's partial segment is rejected and none of its parts is listed."""
    events = run_cutter(audio_cutter(), media.audio)
    assert rejections(events) == [(FIRST_MSN - 1, "incomplete: run started mid-segment")]
    assert parts_of(events, FIRST_MSN - 1) == []
    assert [s.msn for s in segments(events)] == [FIRST_MSN, FIRST_MSN + 1, FIRST_MSN + 2]


@settings(max_examples=40, deadline=None)
@given(
    which=st.sampled_from(["video", "audio", "garbage"]),
    cuts=st.lists(st.integers(min_value=0, max_value=260_000), max_size=40),
)
def test_any_chunking_of_the_encoder_output_gives_the_same_events(
    media: EncodedMedia, which: str, cuts: list[int]
) -> None:
    """However the pipe delivers the encoder's bytes, viewers get the same parts and segments."""
    data = {
        "video": media.video,
        "audio": media.audio,
        "garbage": fragments_joined(media.video, 6, GARBAGE),
    }[which]
    make = audio_cutter if which == "audio" else video_cutter
    whole = make()
    expected = [*whole.push(data), *whole.finish()]
    cutter = make()
    got: list[CutterEvent] = []
    for piece in chunked(data, cuts):
        got.extend(cutter.push(piece))
    got.extend(cutter.finish())
    assert got == expected
    # Bytes pushed after a failure are not read, so only they may differ.
    assert replace(cutter.statistics(), bytes_in=0) == replace(whole.statistics(), bytes_in=0)


def test_garbage_mid_stream_rejects_the_segment_and_stops_the_cutter(media: EncodedMedia) -> None:
    """Corrupt encoder output never reaches players: the segment is dropped and the run ends."""
    cutter = video_cutter()
    events = run_cutter(cutter, fragments_joined(media.video, 5, GARBAGE), chunk=10_000)
    assert [s.msn for s in segments(events)] == [FIRST_MSN]
    assert [e.part.index for e in parts_of(events, FIRST_MSN + 1)] == [0, 1]
    ((msn, reason),) = rejections(events)
    assert msn == FIRST_MSN + 1
    assert reason.startswith("malformed: garbage at byte")
    assert isinstance(events[-1], StreamFailed)
    assert events[-1].reason in reason
    assert cutter.push(media.video) == []
    assert cutter.finish() == []
    stats = cutter.statistics()
    assert stats.failed
    assert (stats.segments_published, stats.parts_published) == (1, 6)
    assert dict(stats.rejected_by_reason) == {"malformed": 1}


@pytest.mark.parametrize("fragment", [6, 4], ids=["mid-segment", "first-of-segment"])
def test_truncated_fragment_rejects_its_segment(media: EncodedMedia, fragment: int) -> None:
    """A fragment whose mdat is shorter than its sample table says is never published."""
    init, pairs = split_stream(media.video)
    moof, mdat = pairs[fragment]
    short = (len(mdat) - 100).to_bytes(4, "big") + mdat[4:-100]
    stream = init + b"".join(m + d for m, d in pairs[:fragment]) + moof + short
    rest = b"".join(m + d for m, d in pairs[fragment + 1 :])
    events = run_cutter(video_cutter(), stream + rest)
    ((msn, reason),) = rejections(events)
    assert msn == FIRST_MSN + 1
    assert "outside the mdat payload" in reason
    assert isinstance(events[-1], StreamFailed)
    assert [s.msn for s in segments(events)] == [FIRST_MSN]


def test_missing_keyframe_rejects_only_that_segment(media: EncodedMedia) -> None:
    """A segment that does not start with a keyframe is dropped; the next good one plays."""
    init, _, samples = stream_samples(media.video)
    assert samples[60].is_sync
    samples[60] = as_non_sync(samples[60])
    events = run_cutter(video_cutter(), build_stream(init, samples))
    assert rejections(events) == [
        (
            FIRST_MSN + 1,
            f"no keyframe at segment start: sample at dts {(FIRST_MSN + 1) * VIDEO_D} "
            "is not a sync sample",
        )
    ]
    assert parts_of(events, FIRST_MSN + 1) == []
    assert [s.msn for s in segments(events)] == [FIRST_MSN, FIRST_MSN + 2]


def test_timestamp_gap_rejects_the_segment_with_the_gap(media: EncodedMedia) -> None:
    """A lost frame inside a segment drops that segment; playback resumes at the next boundary."""
    init, _, samples = stream_samples(media.video)
    lost = samples.pop(100)
    cutter = video_cutter()
    events = run_cutter(cutter, build_stream(init, samples))
    gap_at = lost.dts + lost.duration + FIRST_MSN * VIDEO_D
    assert rejections(events) == [
        (FIRST_MSN + 1, f"timestamp gap: 3000 ticks missing before the sample at dts {gap_at}")
    ]
    assert [e.part.index for e in parts_of(events, FIRST_MSN + 1)] == [0, 1]
    assert [s.msn for s in segments(events)] == [FIRST_MSN, FIRST_MSN + 2]
    assert dict(cutter.statistics().rejected_by_reason) == {"timestamp gap": 1}


def test_repeated_frame_rejects_the_segment_as_overlapping(media: EncodedMedia) -> None:
    """A frame sent twice (time going back) drops that segment; the next one plays."""
    init, _, samples = stream_samples(media.video)
    samples.insert(101, samples[100])
    events = run_cutter(video_cutter(), build_stream(init, samples))
    ((msn, reason),) = rejections(events)
    assert msn == FIRST_MSN + 1
    assert reason.startswith("timestamp overlap: ")
    assert reason.endswith("starts 3000 ticks too early")
    assert [s.msn for s in segments(events)] == [FIRST_MSN, FIRST_MSN + 2]


def test_parts_follow_the_part_target_not_the_encoder_fragments(media: EncodedMedia) -> None:
    """A 600 ms part target gives 600 ms parts although ffmpeg wrote 500 ms fragments."""
    cutter = Cutter(
        rendition="v180",
        segment_duration_ms=SEGMENT_MS,
        part_target_ms=600,
        origin_epoch_ms=ORIGIN_MS,
    )
    events = run_cutter(cutter, media.video)
    assert rejections(events) == []
    for seg in segments(events):
        assert [p.duration for p in seg.parts] == [54_000, 54_000, 54_000, 18_000]
        assert [len(samples) for _, samples in reparse(seg.data)] == [18, 18, 18, 6]
        assert seg.duration == VIDEO_D


def test_gap_across_a_boundary_rejects_both_partial_segments(media: EncodedMedia) -> None:
    """An outage spanning a boundary drops both broken segments, and only those."""
    init, _, samples = stream_samples(media.video)
    del samples[110:130]
    events = run_cutter(video_cutter(), build_stream(init, samples))
    reasons = dict(rejections(events))
    assert set(reasons) == {FIRST_MSN + 1, FIRST_MSN + 2}
    assert reasons[FIRST_MSN + 1].startswith("timestamp gap: 60000 ticks missing")
    assert reasons[FIRST_MSN + 2].endswith("segment starts 30000 ticks after its boundary")
    assert [s.msn for s in segments(events)] == [FIRST_MSN]


def test_nothing_is_emitted_below_min_msn(media: EncodedMedia) -> None:
    """Segments numbered before the run's first allowed msn are never announced."""
    events = run_cutter(video_cutter(min_msn=FIRST_MSN + 1), media.video)
    msns = {
        e.part.msn
        if isinstance(e, PartReady)
        else e.segment.msn
        if isinstance(e, SegmentReady)
        else e.msn
        for e in events
        if isinstance(e, PartReady | SegmentReady | SegmentRejected)
    }
    assert msns == {FIRST_MSN + 1, FIRST_MSN + 2}
    assert [s.msn for s in segments(events)] == [FIRST_MSN + 1, FIRST_MSN + 2]


def test_run_started_mid_segment_publishes_nothing_of_that_segment(media: EncodedMedia) -> None:
    """An encoder that starts half a second late does not produce a short first segment."""
    events = run_cutter(video_cutter(origin_epoch_ms=ORIGIN_MS + PART_MS), media.video)
    assert rejections(events)[0] == (FIRST_MSN, "incomplete: run started mid-segment")
    assert parts_of(events, FIRST_MSN) == []


def test_stream_ending_mid_segment_rejects_the_unfinished_segment(media: EncodedMedia) -> None:
    """When the encoder stops, the unfinished segment is not listed; its finished parts were."""
    init, pairs = split_stream(media.video)
    cutter = video_cutter()
    events = run_cutter(cutter, init + b"".join(m + d for m, d in pairs[:7]))
    assert [s.msn for s in segments(events)] == [FIRST_MSN]
    assert [e.part.index for e in parts_of(events, FIRST_MSN + 1)] == [0, 1, 2]
    assert rejections(events) == [(FIRST_MSN + 1, "incomplete: stream ended mid-segment")]
    assert cutter.push(media.video) == []


def test_second_init_section_fails_the_stream(media: EncodedMedia) -> None:
    """A restarted encoder writing a new header into the same pipe is refused."""
    init, _ = split_stream(media.video)
    events = run_cutter(video_cutter(), fragments_joined(media.video, 5, init))
    at = _offset_after(media.video, 5)
    assert rejections(events) == [
        (
            FIRST_MSN + 1,
            f"malformed: second init section ('ftyp' at byte {at}): "
            "a restarted encoder needs a new Cutter",
        )
    ]
    assert isinstance(events[-1], StreamFailed)


def _offset_after(data: bytes, fragment: int) -> int:
    init, pairs = split_stream(data)
    return len(init) + sum(len(m) + len(d) for m, d in pairs[: fragment + 1])


def test_oversized_part_is_rejected(media: EncodedMedia) -> None:
    """A part larger than the memory bound is dropped with its segment."""
    cutter = Cutter(
        rendition="v180",
        segment_duration_ms=SEGMENT_MS,
        part_target_ms=PART_MS,
        origin_epoch_ms=ORIGIN_MS,
        max_part_bytes=20_000,
    )
    events = run_cutter(cutter, media.video)
    assert rejections(events)[0] == (FIRST_MSN, "part too large: part 0 exceeds 20000 bytes")


def test_timing_that_is_not_whole_ticks_is_unsupported(media: EncodedMedia) -> None:
    """An encoder delay that cannot be expressed in the track's ticks is a configuration error."""
    cutter = Cutter(
        rendition="a128",
        segment_duration_ms=SEGMENT_MS,
        part_target_ms=PART_MS,
        origin_epoch_ms=ORIGIN_MS,
        encoder_delay=Fraction(1, 7),
    )
    with pytest.raises(UnsupportedMedia, match="not a whole number of ticks"):
        cutter.push(media.audio)
    assert cutter.push(media.audio) == []


def test_statistics_count_what_was_published(media: EncodedMedia) -> None:
    """Operators see how many segments, parts and bytes a rendition published."""
    cutter = video_cutter()
    events = run_cutter(cutter, media.video)
    stats = cutter.statistics()
    assert (stats.rendition, stats.bytes_in) == ("v180", len(media.video))
    assert (stats.segments_published, stats.parts_published, stats.segments_rejected) == (3, 12, 0)
    assert stats.bytes_published == sum(len(s.data) for s in segments(events))
    assert (stats.samples_dropped, stats.failed) == (0, False)
