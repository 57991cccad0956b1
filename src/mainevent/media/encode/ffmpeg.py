"""The one place that knows ffmpeg: locating the binary and building its command lines.

Everything else sees our own dataclasses (`FeedSpec`, `IngestSpec`, `LadderSpec`). Timing model
(see ARCHITECTURE.md, "Epoch-locked time"): the contribution feed carries the venue's time of
day in its MPEG-TS timestamps (epoch seconds do not fit 33-bit PTS); the transcoder keeps those
timestamps (`-copyts`), snaps video to the epoch frame grid starting at a chosen segment
boundary T (`fps=start_time=T`), pins audio to the same instant (`aresample first_pts`), and
encodes with a fixed GOP of one segment, so every keyframe lands on an epoch boundary. The MP4
muxer re-bases its output to tick 0 = T, which the packager maps back to epoch time.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from fractions import Fraction

AUDIO_SAMPLE_RATE = 48_000
# ffmpeg's native AAC encoder emits 1024 samples of priming before the first input sample.
AAC_ENCODER_DELAY = Fraction(1024, AUDIO_SAMPLE_RATE)
SECONDS_PER_DAY = 86_400


class FfmpegNotFound(RuntimeError):
    """No usable ffmpeg binary."""


def find_ffmpeg(override: str | None = None) -> str:
    """Path of the ffmpeg to run: the override, else the imageio-ffmpeg wheel's binary."""
    if override:
        path = shutil.which(override) or override
        if not os.access(path, os.X_OK):
            raise FfmpegNotFound(f"ffmpeg override {override!r} is not an executable file")
        return path
    try:
        import imageio_ffmpeg

        exe: str = imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        raise FfmpegNotFound(
            "no ffmpeg: install the imageio-ffmpeg wheel (pip install imageio-ffmpeg) "
            "or set MAINEVENT_ENCODER__FFMPEG_PATH"
        ) from exc
    return exe


@dataclass(frozen=True, slots=True)
class FeedSpec:
    """A synthetic venue feed: test pattern + clock burn-in + frame barcode + tone."""

    url: str
    start_epoch: Fraction  # capture time of frame 0, on the k/fps grid
    width: int = 1280
    height: int = 720
    fps: int = 30
    bitrate_kbps: int = 6000
    tone_hz: int = 1000
    duration_s: float | None = None


BARCODE_BITS = 24


def barcode_geometry(width: int, height: int) -> tuple[int, int, int]:
    """(x0, bit width, strip height) of the frame-number barcode drawn by the feed."""
    bit_w = width // (BARCODE_BITS + 8)
    strip_h = max(8, height // 18)
    return bit_w * 4, bit_w, strip_h


def _feed_filter(spec: FeedSpec) -> str:
    tod = float(spec.start_epoch % SECONDS_PER_DAY)
    frame0 = int(spec.start_epoch * spec.fps) % (1 << BARCODE_BITS)
    x0, bit_w, strip_h = barcode_geometry(spec.width, spec.height)
    y = spec.height - strip_h
    font = max(16, spec.height // 14)
    parts = [
        # Capture time of day (UTC) of this very frame, from its timestamp.
        f"drawtext=text='%{{pts\\:hms\\:{tod:.6f}}} UTC':fontsize={font}:fontcolor=white"
        f":box=1:boxcolor=black@0.7:boxborderw=8:x=(w-tw)/2:y=h/2-th",
        f"drawbox=x=0:y={y}:w=iw:h={strip_h}:color=black:t=fill",
    ]
    # Frame number since the epoch (mod 2^24), one white box per set bit, LSB first.
    for bit in range(BARCODE_BITS):
        parts.append(
            f"drawbox=x={x0 + bit * bit_w}:y={y}:w={bit_w}:h={strip_h}:color=white:t=fill"
            f":enable='eq(mod(floor((n+{frame0})/{1 << bit}),2),1)'"
        )
    return ",".join(parts)


def feed_command(ffmpeg: str, spec: FeedSpec) -> list[str]:
    """ffmpeg pushing the synthetic feed in real time as MPEG-TS to `spec.url` (SRT or RTMP)."""
    tod = spec.start_epoch % SECONDS_PER_DAY
    gop = spec.fps  # 1 s contribution GOP
    cmd = [
        ffmpeg,
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        # Real-time pacing with no initial burst (ffmpeg treats a burst of 0 as "default 0.5 s").
        "-readrate",
        "1",
        "-readrate_initial_burst",
        "0.001",
        # A camera's clock never lags the wall clock: after falling behind (CPU starvation),
        # catch up at 4× instead of staying behind for good (ffmpeg's default catch-up rate is
        # the read rate: a soak's feeds once stayed 120 s behind and nothing could be listed).
        "-readrate_catchup",
        "4",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={spec.width}x{spec.height}:rate={spec.fps}",
        # Real-time pacing with no initial burst (ffmpeg treats a burst of 0 as "default 0.5 s").
        "-readrate",
        "1",
        "-readrate_initial_burst",
        "0.001",
        "-readrate_catchup",
        "4",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency={spec.tone_hz}:sample_rate={AUDIO_SAMPLE_RATE}",
    ]
    if spec.duration_s is not None:
        cmd += ["-t", f"{spec.duration_s:.3f}"]
    cmd += [
        "-vf",
        _feed_filter(spec),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-g",
        str(gop),
        "-keyint_min",
        str(gop),
        "-b:v",
        f"{spec.bitrate_kbps}k",
        "-maxrate",
        f"{spec.bitrate_kbps}k",
        "-bufsize",
        f"{spec.bitrate_kbps}k",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "192k",
        "-ac",
        "2",
        # The venue clock: timestamps are the capture time of day.
        "-output_ts_offset",
        f"{float(tod):.6f}",
    ]
    if spec.url.startswith("rtmp"):
        cmd += ["-f", "flv", spec.url]
    else:
        cmd += [*LOW_DELAY_TS, "-f", "mpegts", spec.url]
    return cmd


RTMP_APP = "live"

LOW_DELAY_TS = (
    "-muxdelay",
    "0",
    "-muxpreload",
    "0",
    "-pes_payload_size",
    "0",
    "-omit_video_pes_length",
    "0",
    "-flush_packets",
    "1",
    "-max_interleave_delta",
    "1",
)
"""MPEG-TS muxer options of every hop we write: no mux delay; each audio frame in its own PES
as soon as it is read (by default ffmpeg gathers ~2.9 kB of AAC per PES: ~120 ms at 192 kbit/s
that the next hop, and finally the packager, waits for before the audio of a segment is whole);
the video PES length written, so the next demuxer hands each frame on as soon as it is complete
instead of when the next frame starts (one frame less per hop); every packet flushed to the
output at once; and no interleaving wait (by default a video frame is held until an audio packet
at least as late has arrived: MPEG-TS needs order within a stream only, and the audio lags
the video by about a frame). Each hop of the venue feed (generator → pusher → SRT → ingest
listener) measured 30–40 ms shorter with these; see BENCHMARKS.md, "publish delay"."""


@dataclass(frozen=True, slots=True)
class IngestSpec:
    """Where the ingest listens for one contribution feed, who may publish, and the limits.

    RTMP: `host:port` is the gateway's public address; the app is `live` and the stream key is
    the stream name (`rtmp://host:port/live/<key>`). SRT: `host:port` is the gateway's UDP relay,
    which forwards to ffmpeg's listener on a private port; libsrt checks the passphrase (the
    streamid is sent but not checked by ffmpeg's listener).
    """

    protocol: str  # "srt" | "rtmp"
    host: str
    port: int
    stream_key: str
    passphrase: str | None = None
    max_pending_connections: int = 8
    attempts_per_second: float = 2.0
    attempts_burst: int = 10
    handshake_timeout_s: float = 5.0
    srt_latency_ms: int = 120

    @property
    def listen_url(self) -> str:
        if self.protocol == "rtmp":
            return f"rtmp://{self.host}:{self.port}/{RTMP_APP}/{self.stream_key}"
        url = (
            f"srt://{self.host}:{self.port}?mode=listener&latency={self.srt_latency_ms * 1000}"
            f"&streamid={self.stream_key}"
        )
        if self.passphrase:
            # Enforced: a caller without the passphrase is refused, never let in unencrypted.
            url += f"&passphrase={self.passphrase}&pbkeylen=16&enforced_encryption=1"
        return url

    @property
    def publish_url(self) -> str:
        """The URL a venue encoder (or `mainevent feed`) pushes to."""
        if self.protocol == "rtmp":
            return f"rtmp://{self.host}:{self.port}/{RTMP_APP}/{self.stream_key}"
        url = (
            f"srt://{self.host}:{self.port}?mode=caller&latency={self.srt_latency_ms * 1000}"
            f"&streamid={self.stream_key}&pkt_size=1316"
        )
        if self.passphrase:
            url += f"&passphrase={self.passphrase}&pbkeylen=16"
        return url


def ingest_command(ffmpeg: str, spec: IngestSpec) -> list[str]:
    """ffmpeg listening for one feed and relaying it, timestamps untouched, as MPEG-TS on stdout."""
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin"]
    if spec.protocol == "rtmp":
        cmd += ["-listen", "1", "-timeout", "-1"]
    cmd += [
        "-copyts",
        # Relay only (stream copy): half a second of probing finds the streams of any sane
        # contribution feed; ffmpeg's default (5 s) delayed every (re)connection by 5 s.
        "-probesize",
        "500000",
        "-analyzeduration",
        "500000",
        "-i",
        spec.listen_url,
        "-map",
        "0:v:0",
        "-map",
        "0:a:0?",
        "-c",
        "copy",
        *LOW_DELAY_TS,
        "-f",
        "mpegts",
        "pipe:1",
    ]
    return cmd


# libsrt prints each handshake it rejects on stderr at its own default level (warning), whatever
# ffmpeg's -loglevel, e.g. "…/SRT:RcvQ:w1!W:SRT.cn: processConnectRequest: rsp(REJECT): 1010 -
# Incorrect passphrase". No caller address is printed (the gateway's relay attributes it). Codes:
# srt.h SRT_REJ_* + 1000.
_SRT_REJECT = re.compile(r"rsp\(REJECT\): (\d+) - (.*)$")
_SRT_BADSECRET = 1010
_SRT_UNSECURE = 1011


def srt_refusal_reason(line: str, *, passphrase_set: bool) -> tuple[str, str] | None:
    """(reason, libsrt's words) when a listener's stderr line reports a refused SRT caller."""
    m = _SRT_REJECT.search(line)
    if m is None:
        return None
    code, text = int(m.group(1)), m.group(2).strip()
    if code == _SRT_BADSECRET:
        return "wrong_passphrase", text
    if code == _SRT_UNSECURE:
        return ("passphrase_required" if passphrase_set else "passphrase_unexpected"), text
    return "srt_rejected", f"{code} {text}"


@dataclass(frozen=True, slots=True)
class RungSpec:
    """One video output of the transcoder."""

    id: str
    width: int
    height: int
    bitrate_kbps: int


@dataclass(frozen=True, slots=True)
class LadderSpec:
    """What one transcoder run produces, and from which epoch boundary."""

    rungs: tuple[RungSpec, ...]
    audio_id: str
    audio_bitrate_kbps: int
    fps: int
    segment_duration_ms: int
    part_target_ms: int
    preset: str = "veryfast"
    threads: int = 0


def transcode_command(
    ffmpeg: str, ladder: LadderSpec, start_tod: Fraction, outputs: dict[str, int]
) -> list[str]:
    """ffmpeg reading MPEG-TS on stdin and writing one fragmented-MP4 stream per rendition.

    `start_tod` is the time of day (s) of the first output frame, a segment boundary;
    `outputs` maps rendition id → inherited pipe fd.
    """
    gop = ladder.segment_duration_ms * ladder.fps // 1000
    t = f"{float(start_tod):.6f}"
    n = len(ladder.rungs)
    graph = [
        f"[0:v:0]fps={ladder.fps}:start_time={t},split={n}" + "".join(f"[s{i}]" for i in range(n))
    ]
    for i, r in enumerate(ladder.rungs):
        graph.append(f"[s{i}]scale={r.width}:{r.height}:flags=bicubic,format=yuv420p[v{i}]")
    first = int(start_tod * AUDIO_SAMPLE_RATE)
    graph.append(f"[0:a:0]aresample={AUDIO_SAMPLE_RATE}:async=1:first_pts={first}[a]")
    frag = [
        "-movflags",
        "frag_keyframe+empty_moov+default_base_moof",
        "-frag_duration",
        str(ladder.part_target_ms * 1000),
        "-f",
        "mp4",
    ]
    # AAC frames (21.3 ms) do not divide the part target, and audio tick 0 sits one priming
    # frame before T: fragments cut every part target would end one frame short of the
    # packager's epoch part boundary, so each audio part would wait for the next fragment
    # (≈ a whole part) before it could be published. One fragment per frame avoids that.
    audio_frag = [
        "-movflags",
        "frag_every_frame+empty_moov+default_base_moof",
        "-f",
        "mp4",
    ]
    cmd = [
        ffmpeg,
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostats",
        "-copyts",
        # The input is known (H.264 + AAC in TS, starting at a keyframe with PAT/PMT): a short
        # probe lets the first output frame follow the input by well under a second.
        "-probesize",
        "1000000",
        "-analyzeduration",
        "1000000",
        # Frame-threaded decoding holds (threads − 1) frames back; slice threads add no delay
        # (and still run in parallel on feeds encoded with slices, as low-latency encoders do).
        "-thread_type",
        "slice",
        "-f",
        "mpegts",
        "-i",
        "pipe:0",
        "-filter_complex",
        ";".join(graph),
    ]
    for i, r in enumerate(ladder.rungs):
        cmd += [
            "-map",
            f"[v{i}]",
            "-c:v",
            "libx264",
            "-preset",
            ladder.preset,
            "-tune",
            "zerolatency",
            "-profile:v",
            "high",
            "-threads",
            str(ladder.threads),
            "-x264-params",
            f"scenecut=0:open_gop=0:keyint={gop}:min-keyint={gop}",
            "-g",
            str(gop),
            "-keyint_min",
            str(gop),
            "-b:v",
            f"{r.bitrate_kbps}k",
            "-maxrate",
            f"{r.bitrate_kbps}k",
            "-bufsize",
            f"{r.bitrate_kbps * 2}k",
            "-video_track_timescale",
            "90000",
            *frag,
            f"pipe:{outputs[r.id]}",
        ]
    cmd += [
        "-map",
        "[a]",
        "-c:a",
        "aac",
        "-b:a",
        f"{ladder.audio_bitrate_kbps}k",
        "-ac",
        "2",
        *audio_frag,
        f"pipe:{outputs[ladder.audio_id]}",
    ]
    return cmd


SLATE_TEXT = "We will be right back"


def slate_command(ffmpeg: str, width: int, height: int, fps: int, seconds: float) -> list[str]:
    """ffmpeg writing `seconds` of the slate ("we will be right back" on a dark background,
    silence) as MPEG-TS on stdout, timestamps from 0, for `transcode_command` to encode."""
    font = max(16, height // 12)
    return [
        ffmpeg,
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-f",
        "lavfi",
        "-i",
        f"color=c=0x14202c:s={width}x{height}:r={fps},"
        f"drawtext=text='{SLATE_TEXT}':fontsize={font}:fontcolor=white:x=(w-tw)/2:y=(h-th)/2",
        "-f",
        "lavfi",
        "-i",
        f"anullsrc=r={AUDIO_SAMPLE_RATE}:cl=stereo",
        "-t",
        f"{seconds:.3f}",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        str(fps),
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        *LOW_DELAY_TS,
        "-f",
        "mpegts",
        "pipe:1",
    ]


def reference_hls_command(
    ffmpeg: str, listen_url: str, ladder: LadderSpec, out_dir: str, *, list_size: int = 6
) -> list[str]:
    """ffmpeg's own HLS muxer as the latency reference: listen for the same contribution feed,
    encode the same ladder with the same encoder settings and write fMP4 HLS into `out_dir`
    (`master.m3u8`, `<rendition>/index.m3u8`, segments of `ladder.segment_duration_ms`).

    Not used by the platform: `bench/latency.py` serves `out_dir` from a plain HTTP server and
    plays it beside mainevent with the same players. Segments are written under a temporary
    name and renamed when complete, so a plain file server never serves half a segment.
    """
    gop = ladder.segment_duration_ms * ladder.fps // 1000
    n = len(ladder.rungs)
    graph = [f"[0:v:0]fps={ladder.fps},split={n}" + "".join(f"[s{i}]" for i in range(n))]
    for i, r in enumerate(ladder.rungs):
        graph.append(f"[s{i}]scale={r.width}:{r.height}:flags=bicubic,format=yuv420p[v{i}]")
    cmd = [
        ffmpeg,
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostats",
        "-nostdin",
        "-probesize",
        "1000000",
        "-analyzeduration",
        "1000000",
        "-thread_type",
        "slice",
        "-f",
        "mpegts",
        "-i",
        listen_url,
        "-filter_complex",
        ";".join(graph),
    ]
    for i, r in enumerate(ladder.rungs):
        cmd += [
            "-map",
            f"[v{i}]",
            f"-c:v:{i}",
            "libx264",
            f"-b:v:{i}",
            f"{r.bitrate_kbps}k",
            f"-maxrate:v:{i}",
            f"{r.bitrate_kbps}k",
            f"-bufsize:v:{i}",
            f"{r.bitrate_kbps * 2}k",
        ]
    streams = " ".join(f"v:{i},agroup:aud,name:{r.id}" for i, r in enumerate(ladder.rungs))
    cmd += [
        "-map",
        "0:a:0",
        "-c:a",
        "aac",
        "-b:a",
        f"{ladder.audio_bitrate_kbps}k",
        "-ac",
        "2",
        "-preset",
        ladder.preset,
        "-tune",
        "zerolatency",
        "-profile:v",
        "high",
        "-threads",
        str(ladder.threads),
        "-x264-params",
        f"scenecut=0:open_gop=0:keyint={gop}:min-keyint={gop}",
        "-g",
        str(gop),
        "-keyint_min",
        str(gop),
        "-f",
        "hls",
        "-hls_time",
        f"{ladder.segment_duration_ms / 1000:g}",
        "-hls_list_size",
        str(list_size),
        "-hls_segment_type",
        "fmp4",
        "-hls_flags",
        "independent_segments+program_date_time+temp_file",
        "-hls_fmp4_init_filename",
        "init.mp4",
        "-master_pl_name",
        "master.m3u8",
        "-var_stream_map",
        f"{streams} a:0,agroup:aud,name:{ladder.audio_id}",
        "-hls_segment_filename",
        f"{out_dir}/%v/%d.m4s",
        f"{out_dir}/%v/index.m3u8",
    ]
    return cmd
