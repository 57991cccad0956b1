"""Sans-IO MPEG-TS probe: follows PAT/PMT, reads PES timestamps, counts what a feed carries.

The ingest relays the contribution feed untouched to the transcoder and feeds the same bytes
here to learn the venue clock (the time of day in the PTS), frame rate, bitrate, audio/video
drift and corruption (lost sync, continuity errors), without decoding anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PACKET = 188
SYNC = 0x47
PTS_HZ = 90_000
_VIDEO_TYPES = {0x1B: "h264", 0x24: "hevc", 0x02: "mpeg2"}
_AUDIO_TYPES = {0x0F: "aac", 0x03: "mp3", 0x04: "mp3", 0x81: "ac3"}


@dataclass(frozen=True, slots=True)
class PesStart:
    """A PES packet began on an elementary stream (one video frame / audio frame group)."""

    kind: str  # "video" | "audio"
    pts: int  # 90 kHz ticks (time of day on a venue clock)
    offset: int = 0  # stream byte offset of the TS packet that starts this PES
    random_access: bool = False  # the packet's random_access_indicator (a keyframe starts here)
    dts: int | None = None  # decode time stamp when the PES carries one (B-frames), else = pts
    # Packets of this stream were lost or damaged since its previous PES start (continuity
    # error, lost sync, a start packet without a readable PES header): PES starts may be
    # missing before this one, so a timestamp jump here is no evidence of an A/V shift.
    after_loss: bool = False


@dataclass(slots=True)
class TsStatistics:
    """Running counters (a snapshot is taken with `TsProbe.statistics()`)."""

    packets: int = 0
    bytes: int = 0
    sync_losses: int = 0
    continuity_errors: int = 0
    video_frames: int = 0
    audio_pes: int = 0
    first_video_pts: int | None = None
    last_video_pts: int | None = None
    last_audio_pts: int | None = None
    video_codec: str | None = None
    audio_codec: str | None = None


@dataclass(slots=True)
class _Pid:
    kind: str
    cc: int = -1
    lossy: bool = False  # see PesStart.after_loss


@dataclass(slots=True)
class TsProbe:
    """Feed bytes in with `push`; returns the PES starts seen, keeps counters."""

    _buf: bytearray = field(default_factory=bytearray)
    _pmt_pids: set[int] = field(default_factory=set)
    _streams: dict[int, _Pid] = field(default_factory=dict)
    _stats: TsStatistics = field(default_factory=TsStatistics)
    _consumed: int = 0  # stream offset of _buf[0]
    _psi: dict[int, bytes] = field(default_factory=dict)  # last PAT / PMT packets by PID

    def push(self, data: bytes) -> list[PesStart]:
        """Consume bytes (any chunking); returns the PES starts they completed."""
        buf = self._buf
        buf += data
        out: list[PesStart] = []
        i = 0
        n = len(buf)
        while n - i >= PACKET:
            if buf[i] != SYNC:
                # Lost sync: skip to the next byte that starts two consecutive packets.
                self._stats.sync_losses += 1
                for s in self._streams.values():
                    s.lossy = True
                j = i + 1
                while j + PACKET < n and not (buf[j] == SYNC and buf[j + PACKET] == SYNC):
                    j += 1
                if j + PACKET >= n:
                    i = j
                    break
                i = j
                continue
            self._packet(memoryview(buf)[i : i + PACKET], out, self._consumed + i)
            i += PACKET
        del buf[:i]
        self._consumed += i
        return out

    def program_header(self) -> bytes:
        """The last PAT and PMT packets seen: prepend them when starting a decoder mid-stream."""
        return b"".join(self._psi[pid] for pid in sorted(self._psi))

    def statistics(self) -> TsStatistics:
        """A copy of the counters."""
        s = self._stats
        return TsStatistics(**{f: getattr(s, f) for f in s.__dataclass_fields__})

    def _packet(self, pkt: memoryview, out: list[PesStart], offset: int) -> None:
        st = self._stats
        st.packets += 1
        st.bytes += PACKET
        pusi = bool(pkt[1] & 0x40)
        pid = ((pkt[1] & 0x1F) << 8) | pkt[2]
        afc = (pkt[3] >> 4) & 0x3
        cc = pkt[3] & 0x0F
        off = 4
        if afc & 0x2:
            off += 1 + pkt[4]
        if not afc & 0x1 or off >= PACKET:
            return
        payload = pkt[off:]
        if pid == 0:
            if pusi:
                self._pat(payload)
                self._psi[pid] = bytes(pkt)
            return
        if pid in self._pmt_pids:
            if pusi:
                self._pmt(payload)
                self._psi[pid] = bytes(pkt)
            return
        stream = self._streams.get(pid)
        if stream is None:
            return
        if stream.cc >= 0 and cc != (stream.cc + 1) & 0x0F and cc != stream.cc:
            st.continuity_errors += 1
            stream.lossy = True
        stream.cc = cc
        if not pusi:
            return
        if len(payload) >= 14 and payload[0] == 0 and payload[1] == 0 and payload[2] == 1:
            if payload[7] & 0x80:
                pts = _timestamp(payload[9:14])
                dts = None
                if payload[7] & 0x40 and len(payload) >= 19:
                    dts = _timestamp(payload[14:19])
                rai = bool(afc & 0x2 and pkt[4] > 0 and pkt[5] & 0x40)
                out.append(PesStart(stream.kind, pts, offset, rai, dts, stream.lossy))
                stream.lossy = False
                if stream.kind == "video":
                    st.video_frames += 1
                    if st.first_video_pts is None:
                        st.first_video_pts = pts
                    st.last_video_pts = pts
                else:
                    st.audio_pes += 1
                    st.last_audio_pts = pts
        else:
            stream.lossy = True  # a PES began here but its header is unreadable (damaged)

    def _pat(self, payload: memoryview) -> None:
        sec = payload[1 + payload[0] :]
        if len(sec) < 8 or sec[0] != 0x00:
            return
        length = ((sec[1] & 0x0F) << 8) | sec[2]
        body = sec[8 : 3 + length - 4]
        for k in range(0, len(body) - 3, 4):
            program = (body[k] << 8) | body[k + 1]
            if program != 0:
                self._pmt_pids.add(((body[k + 2] & 0x1F) << 8) | body[k + 3])

    def _pmt(self, payload: memoryview) -> None:
        sec = payload[1 + payload[0] :]
        if len(sec) < 12 or sec[0] != 0x02:
            return
        length = ((sec[1] & 0x0F) << 8) | sec[2]
        info_len = ((sec[10] & 0x0F) << 8) | sec[11]
        k = 12 + info_len
        end = min(3 + length - 4, len(sec))
        while k + 5 <= end:
            stype = sec[k]
            pid = ((sec[k + 1] & 0x1F) << 8) | sec[k + 2]
            es_len = ((sec[k + 3] & 0x0F) << 8) | sec[k + 4]
            if stype in _VIDEO_TYPES and pid not in self._streams:
                self._streams[pid] = _Pid("video")
                self._stats.video_codec = _VIDEO_TYPES[stype]
            elif stype in _AUDIO_TYPES and pid not in self._streams:
                self._streams[pid] = _Pid("audio")
                self._stats.audio_codec = _AUDIO_TYPES[stype]
            k += 5 + es_len


def first_keyframe(events: list[PesStart], from_offset: int) -> PesStart | None:
    """The first video PES flagged random-access at or after stream offset `from_offset`."""
    return next(
        (e for e in events if e.kind == "video" and e.random_access and e.offset >= from_offset),
        None,
    )


@dataclass(slots=True)
class _Cadence:
    last: int | None = None
    step: int | None = None  # the stream's regular PTS increment (PES duration)
    base: int | None = None  # the smallest regular increment seen (one frame)
    offset: int = 0  # sum of unexpected jumps, 90 kHz ticks
    lost: int = 0  # forward skips of whole PES (lost PES starts), not counted as offset


_SKIP_TOLERANCE = 2  # ticks per PES: timestamp rounding (e.g. 44.1 kHz audio, 29.97 fps)


def _whole_pes(step: int, pes: int) -> bool:
    """`step` is a forward skip of two or more whole PES durations of `pes` ticks."""
    k = round(step / pes)
    return k >= 2 and abs(step - k * pes) <= _SKIP_TOLERANCE * k


@dataclass(slots=True)
class AvOffsetTracker:
    """Tracks how far audio timestamps moved against video since the feed connected.

    A muxer re-interleaves by timestamp, so a feed whose audio timestamps were shifted still
    arrives with audio and video PTS side by side; what betrays the shift is a jump in one
    stream's otherwise regular PTS cadence. Each unexpected jump (beyond the stream's regular
    increment) is added to that stream's offset; the A/V offset is audio minus video.

    Lost PES starts are no shift: a burst of garbage once left a primary "degraded" by a
    phantom offset until its feed reconnected. The ingest relay re-muxes the feed, so the loss
    shows only as the cadence skipping forward by whole PES durations; such a skip (within
    `_SKIP_TOLERANCE` ticks per PES), and any jump right after packets this probe saw lost or
    damaged (`after_loss`), re-anchors the stream instead. A shift of exactly a whole number of
    PES durations forward therefore goes unseen (ambiguous with loss from timestamps alone).
    """

    _video: _Cadence = field(default_factory=_Cadence)
    _audio: _Cadence = field(default_factory=_Cadence)

    def push(self, kind: str, pts: int, *, after_loss: bool = False) -> None:
        c = self._video if kind == "video" else self._audio
        if c.last is not None and after_loss:
            pass  # re-anchor on this PES: a skip after lost packets is no shift
        elif c.last is not None:
            step = pts - c.last
            if c.step is None:
                c.step = step if step > 0 else None
            elif step > 0 and abs(step - c.step) * 4 <= c.step:
                c.step = step  # follow small cadence changes (e.g. 1920/2048-tick audio PES)
            elif abs(step - c.step) > c.step:
                if _whole_pes(step, c.step) or (c.base is not None and _whole_pes(step, c.base)):
                    c.lost += 1  # PES starts lost on the way: the cadence skipped, no shift
                else:
                    c.offset += step - c.step  # a jump: timestamps moved by more than one PES
            if c.step is not None and (c.base is None or c.step < c.base):
                c.base = c.step
        c.last = pts

    @property
    def offset_s(self) -> float:
        """Audio minus video timestamp jumps, seconds (0 while in step)."""
        return (self._audio.offset - self._video.offset) / PTS_HZ

    @property
    def lost_pes(self) -> int:
        """Forward skips of whole PES seen on either stream (lost PES starts, not shifts)."""
        return self._audio.lost + self._video.lost


def _timestamp(p: memoryview | bytes) -> int:
    """A 33-bit PES timestamp from its 5 bytes."""
    return ((p[0] >> 1) & 0x07) << 30 | p[1] << 22 | (p[2] >> 1) << 15 | p[3] << 7 | p[4] >> 1
