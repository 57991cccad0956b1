"""Typed, validated settings, loaded once: defaults → TOML file → `MAINEVENT_*` environment.

Every setting is documented where it is defined (the `description` of its field); the README's
configuration reference is generated from these models and checked by a test.
Nested settings are addressed in the environment with `__`, e.g. `MAINEVENT_ORIGIN__PORT=8080`.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mainevent.common.eventspec import (
    DEFAULT_FPS,
    DEFAULT_PART_TARGET_MS,
    MAX_SEGMENT_DURATION_MS,
    MIN_SEGMENT_DURATION_MS,
    ladder_problem,
    segment_duration_problem,
)

# The rendition ladder and the segment-duration rule are shared with the control plane.
from mainevent.common.eventspec import DEFAULT_LADDER as DEFAULT_LADDER
from mainevent.common.eventspec import DEMO_LADDER as DEMO_LADDER
from mainevent.common.eventspec import Rung as Rung
from mainevent.media.manifest.parts import declared_part_target_us

ENV_PREFIX = "MAINEVENT_"


class ConfigError(Exception):
    """The configuration is invalid; the message says which setting and why."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EventSettings(_Frozen):
    """The event being produced and its media configuration."""

    id: str = Field(
        default="demo",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="Event id, the `<event>` in `/live/<event>/...`.",
    )
    title: str = Field(default="mainevent demo", description="Human-readable title.")
    segment_duration_ms: int = Field(
        default=2000,
        ge=MIN_SEGMENT_DURATION_MS,
        le=MAX_SEGMENT_DURATION_MS,
        description="Segment duration D; segment n covers epoch time [n·D, (n+1)·D). Must divide 86,400,000 and be whole frames.",
    )
    part_target_ms: int = Field(
        default=DEFAULT_PART_TARGET_MS,
        ge=100,
        le=2000,
        description="LL-HLS part target; the packager always cuts parts of this size.",
    )
    latency: Literal["standard", "low"] = Field(
        default="standard",
        description="Latency mode: `standard` HLS, or `low` for LL-HLS (parts, blocking reload, delta updates, preload hints). DASH is served in both.",
    )
    part_hold_back_ms: int | None = Field(
        default=None,
        ge=300,
        le=30_000,
        description="LL-HLS PART-HOLD-BACK (how far behind the live edge players start); default 3 × the declared PART-TARGET (the longest part the cutter can make, rounded up to 1 ms: 0.267 s at 30 fps for the default 0.25 s cut: 8 frames).",
    )
    hold_back_ms: int | None = Field(
        default=None,
        ge=3000,
        le=300_000,
        description="LL-HLS HOLD-BACK for players not in low-latency mode; default 3 × target duration.",
    )
    window_segments: int = Field(
        default=6,
        ge=3,
        le=10_000,
        description="Segments in the live playlist window (never below 3 × target duration); in low-latency mode at least 12 × target duration of media, so delta updates (CAN-SKIP-UNTIL = 6 × TD) skip something.",
    )
    fps: int = Field(
        default=DEFAULT_FPS, ge=1, le=120, description="Output frame rate of every rung."
    )
    ladder: tuple[Rung, ...] = Field(
        default=DEMO_LADDER,
        min_length=1,
        description="Video rungs (see `Rung`). The built-in default ladder 1080/720/480/360 is `mainevent.config.DEFAULT_LADDER`.",
    )
    audio_id: str = Field(
        default="a128",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$",
        description="Rendition id of the AAC-LC audio rendition.",
    )
    audio_bitrate_kbps: int = Field(default=128, ge=32, le=512, description="AAC-LC bitrate.")

    @model_validator(mode="after")
    def _check(self) -> EventSettings:
        problem = segment_duration_problem(
            self.segment_duration_ms, fps=self.fps, part_target_ms=self.part_target_ms
        )
        if problem is not None:
            raise ValueError(problem)
        declared_part_ms = declared_part_target_us(self.part_target_ms, self.fps) // 1000
        if self.part_hold_back_ms is not None and self.part_hold_back_ms < 3 * declared_part_ms:
            raise ValueError(
                f"part_hold_back_ms must be at least 3 × the declared part target ({3 * declared_part_ms} ms)"
            )
        td_ms = -(-self.segment_duration_ms // 1000) * 1000
        if self.hold_back_ms is not None and self.hold_back_ms < 3 * td_ms:
            raise ValueError(f"hold_back_ms must be at least 3 × target duration ({3 * td_ms} ms)")
        problem = ladder_problem((r.id for r in self.ladder), self.audio_id)
        if problem is not None:
            raise ValueError(problem)
        return self


class EncoderSettings(_Frozen):
    """The live transcoder (one ffmpeg process per pipeline)."""

    ffmpeg_path: str | None = Field(
        default=None,
        description="ffmpeg binary; default: the one shipped by the imageio-ffmpeg wheel.",
    )
    preset: str = Field(
        default="veryfast",
        pattern=r"^(ultrafast|superfast|veryfast|faster|fast|medium)$",
        description="x264 preset.",
    )
    threads: int = Field(
        default=0, ge=0, le=64, description="Encoder threads per rung (0 = ffmpeg's choice)."
    )
    stall_timeout_s: float = Field(
        default=6.0,
        gt=0,
        le=120,
        description="Encoder output silence after which the encoder is considered stalled and restarted.",
    )
    restart_backoff_s: float = Field(
        default=0.5,
        ge=0,
        le=60,
        description="Delay before restarting a crashed or stalled encoder (doubles up to 8 s while it keeps failing).",
    )


class IngestSettings(_Frozen):
    """Where the contribution feed arrives."""

    protocol: Literal["srt", "rtmp"] = Field(
        default="srt", description="Contribution protocol the ingest listens on."
    )
    host: str = Field(default="127.0.0.1", description="Listen address of the ingest.")
    port: int = Field(default=0, ge=0, le=65535, description="Listen port (0 = pick a free one).")
    stream_key: str = Field(
        default="demo-key",
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="RTMP stream key (path `/live/<key>`), checked by the ingest gateway before any media is relayed. With SRT it is sent as the streamid, which ffmpeg's SRT listener does not check: protect SRT with `passphrase`.",
    )
    passphrase: str | None = Field(
        default=None,
        min_length=10,
        max_length=79,
        description="SRT passphrase (AES, enforced: callers without it or with another one are refused and counted); None disables encryption and lets any SRT caller in.",
    )
    srt_latency_ms: int = Field(
        default=120,
        ge=20,
        le=8000,
        description="SRT latency (receiver buffer for retransmission) the ingest listener asks for; SRT uses the larger of both peers' values. Glass-to-glass latency grows by it. SRT's default 120 ms suits links with an RTT up to ~30 ms; use about 4 × RTT (more on lossy links) for a venue far away.",
    )
    input_timeout_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Silence after which the feed counts as lost (loss detected within half a segment).",
    )
    max_pending_connections: int = Field(
        default=8,
        ge=1,
        le=10_000,
        description="Callers not yet live at once (RTMP: still in their handshake; SRT: new addresses not yet accepted by the listener); more are refused at once (`too_many_pending`).",
    )
    attempts_per_second: float = Field(
        default=2.0,
        gt=0,
        le=10_000,
        description="Connection attempts (RTMP connections, SRT handshakes from a new address) per second one peer host may make (token bucket of `attempts_burst`); more are refused at once (`rate_limited`).",
    )
    attempts_burst: int = Field(
        default=10,
        ge=1,
        le=100_000,
        description="Connection attempts one peer host may make in a burst.",
    )
    handshake_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=120,
        description="Time a caller has to go live (RTMP: from connecting to a valid `publish`; SRT: to be accepted by the listener); then it is dropped (`handshake_timeout`).",
    )


class OriginSettings(_Frozen):
    """The HTTP origin."""

    host: str = Field(default="127.0.0.1", description="Listen address.")
    port: int = Field(
        default=8080, ge=0, le=65535, description="Listen port (0 = pick a free one)."
    )
    data_dir: Path = Field(
        default=Path("data"),
        description="Where every segment and init section is written (survives restarts).",
    )
    memory_segments: int = Field(
        default=64, ge=4, le=100_000, description="Recent segments per rendition kept in memory."
    )
    cors_origin: str = Field(
        default="*", description="Access-Control-Allow-Origin for playlists and media."
    )
    token_keys: dict[str, str] = Field(
        default_factory=lambda: {
            "dev": "6d61696e6576656e742d6465762d746f6b656e2d6b65792d6e6f742d736563726574"
        },
        description="Playback-token HMAC keys (key id → hex) the origin and edges accept on `/t/<token>/live/...`. The default is the public development key: set your own in production.",
    )
    require_token: bool = Field(
        default=False,
        description="Refuse `/live/...` without a playback token (403 `missing_token`).",
    )
    max_held_requests: int = Field(
        default=20_000,
        ge=1,
        le=1_000_000,
        description="LL-HLS blocking requests one origin process holds at most; beyond it answers 503 with Retry-After.",
    )
    store: Literal["local", "s3"] = Field(
        default="local",
        description="Segment store: `local` = memory + `data_dir`; `s3` = the same, plus every segment and init section uploaded in the background to the `[s3]` bucket and read back from it once it left local disk.",
    )
    playlist_freshness: Literal["aligned", "half_td"] = Field(
        default="half_td",
        description="Standard-mode media playlist `max-age`: `half_td` = target duration / 2 always (each cache tier may serve a playlist up to that much after the next segment is listed, which adds to a joining player's latency); `aligned` = the whole seconds left before the next segment can be listed, 0 in the last second, so no tier keeps a playlist past the next publication, but then playlists are not stored (no stale-if-error copy, and only fetches in flight at the same moment are collapsed).",
    )
    replicas: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Origin processes serving viewers. 1: the packager's own origin (embedded). N ≥ 2: `mainevent up` also starts N `mainevent origin serve` processes (free loopback ports, named in the ready line; data in `data_dir/origin-<i>`), the packager PUTs every stored object to each (DASH-IF ingest fan-out) and the shield fails over between them in order, the packager's own origin last.",
    )
    ingest_urls: tuple[str, ...] = Field(
        default=(),
        description='Base URLs of further origins (`mainevent origin serve` elsewhere) the packager publishes every object to, e.g. `["http://10.0.2.21:8080"]`.',
    )
    ingest_secret: str | None = Field(
        default=None,
        description="Bearer secret of the ingest PUTs: the packager sends it, `mainevent origin serve` requires it. None: `mainevent up` makes one for its own replicas; remote origins then accept any sender.",
    )
    ingest_queue: int = Field(
        default=512,
        ge=8,
        le=100_000,
        description="Objects queued per origin at most (a slow or dead origin's backlog); when full its oldest part, else its oldest segment, is dropped for that origin only.",
    )

    @model_validator(mode="after")
    def _check_ingest(self) -> OriginSettings:
        for url in self.ingest_urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"ingest URL {url!r} must start with http(s)://")
        return self


class S3Settings(_Frozen):
    """Object storage behind the segment store (`origin.store = "s3"`), any S3-API service."""

    bucket: str = Field(
        default="mainevent-segments",
        min_length=3,
        max_length=63,
        description="Bucket the segments go to (must exist).",
    )
    endpoint_url: str | None = Field(
        default=None,
        description="S3 endpoint (None: AWS for `region`), e.g. `http://127.0.0.1:9000` for a local S3-compatible server.",
    )
    region: str = Field(default="us-east-1", description="Region of the bucket.")
    access_key_id: str | None = Field(
        default=None, description="Access key (None: the usual AWS credential chain)."
    )
    secret_access_key: str | None = Field(
        default=None, description="Secret key (None: the usual AWS credential chain)."
    )
    prefix: str = Field(
        default="",
        max_length=200,
        description="Prefix of every object key (`<prefix><event>/<rendition>/<name>`).",
    )
    upload_queue: int = Field(
        default=1024,
        ge=1,
        le=1_000_000,
        description="Upload jobs queued at most; beyond it they are left to the catch-up sweep of the local index (publication never waits).",
    )
    local_segments: int | None = Field(
        default=None,
        ge=1,
        description="Uploaded segments kept on local disk per rendition (older ones are read back from the bucket); None keeps them all.",
    )
    retry_max_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Longest wait between upload retries (backoff from 0.2 s, doubling).",
    )
    timeout_s: float = Field(
        default=5.0, gt=0, le=120, description="Connect and read timeout of one bucket request."
    )


class FeedSettings(_Frozen):
    """The venue feed simulator."""

    width: int = Field(default=1280, ge=16, le=7680, description="Test pattern width.")
    height: int = Field(default=720, ge=16, le=4320, description="Test pattern height.")
    fps: int = Field(
        default=30, ge=1, le=120, description="Frame rate; frames sit on the epoch grid k/fps."
    )
    bitrate_kbps: int = Field(default=6000, ge=100, le=100_000, description="Contribution bitrate.")
    tone_hz: int = Field(default=1000, ge=20, le=20_000, description="Frequency of the tone.")


class RedundancySettings(_Frozen):
    """Redundant ingest: a backup feed into its own pipeline, and per-segment selection."""

    backup: bool = Field(
        default=True,
        description="Run a backup pipeline fed by its own contribution feed (primary + backup).",
    )
    backup_port: int = Field(
        default=0, ge=0, le=65535, description="Ingest port of the backup feed (0 = a free one)."
    )
    late_after_ms: int | None = Field(
        default=None,
        ge=0,
        le=60_000,
        description="After the end of a segment's capture interval, use another pipeline's copy "
        "if the preferred one has not arrived (default: half a segment).",
    )
    gap_after_ms: int | None = Field(
        default=None,
        ge=0,
        le=60_000,
        description="After the end of a segment's capture interval, list it as EXT-X-GAP if no "
        "pipeline delivered it (default: ¾ of a segment; at least late_after_ms).",
    )
    on_total_loss: Literal["slate", "gap"] = Field(
        default="slate",
        description="When no pipeline delivers a segment in time: list the pre-encoded slate "
        "(between EXT-X-DISCONTINUITY tags) or EXT-X-GAP; either keeps the window advancing.",
    )
    failback_hold_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="The primary must be healthy and on time this long before it is preferred again.",
    )
    failover_hold_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="The preferred pipeline must stay unhealthy this long before another one "
        "is preferred (a verdict that flickers under CPU load causes no switch; late or missing "
        "segments fall back per segment regardless).",
    )

    def deadlines_s(self, segment_duration_ms: int) -> tuple[float, float]:
        """(late_after, gap_after) in seconds for this segment duration."""
        late = (
            segment_duration_ms / 2 if self.late_after_ms is None else self.late_after_ms
        ) / 1000
        gap = (
            segment_duration_ms * 3 / 4 if self.gap_after_ms is None else self.gap_after_ms
        ) / 1000
        return late, max(late, gap)


class DeliverySettings(_Frozen):
    """The CDNs in front of the origin and the content steering server (multi-CDN pathways)."""

    cdns: dict[str, str] = Field(
        default={},
        description="CDN name (= pathway id) → base URL, preferred first, e.g. "
        '`{"cdn-a": "https://a.example"}`. With a steering server, multivariant playlists list '
        "every variant once per CDN and MPDs carry one BaseURL per CDN. Empty: `mainevent up` "
        "uses its own edges.",
    )
    steering_url: str | None = Field(
        default=None,
        description="URL prefix of the content steering server (e.g. `https://steer.example/steering`); "
        "manifests name `<it>/<event>/hls` and `/dash`. None: `mainevent up` starts one "
        "(`--no-steering` to run without).",
    )
    edges_per_cdn: int = Field(
        default=1,
        ge=1,
        le=8,
        description="Edge processes per CDN in `mainevent up`. 1: one in-process edge per CDN. N ≥ 2: N `mainevent edge serve` processes per CDN behind a Debian nginx on the CDN's address (passive health checks, next edge on error), each collapsing its misses to the shield.",
    )
    shields: int = Field(
        default=1,
        ge=1,
        le=8,
        description="Shield processes in `mainevent up`. 1: one in-process shield. N ≥ 2 (needs `edges_per_cdn` ≥ 2): N `mainevent edge serve` shield processes (restarted when they exit), each failing over between the origins in order; each edge process prefers one shield (round robin) and fails over to the others within the request, so a killed shield costs no viewer a fetch.",
    )

    @model_validator(mode="after")
    def _check(self) -> DeliverySettings:
        for name, base in self.cdns.items():
            if re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name) is None:
                raise ValueError(f"CDN name {name!r} may only use A-Z a-z 0-9 . _ -")
            if not base.startswith(("http://", "https://")):
                raise ValueError(f"CDN {name!r}: base URL {base!r} must start with http(s)://")
        if self.steering_url is not None and not self.steering_url.startswith(
            ("http://", "https://")
        ):
            raise ValueError("steering_url must start with http:// or https://")
        if self.shields > 1 and self.edges_per_cdn < 2:
            raise ValueError(
                "delivery.shields > 1 needs delivery.edges_per_cdn ≥ 2 (in-process edges use "
                "the in-process shield): set both, e.g. --shields 2 --edges-per-cdn 2"
            )
        return self


class NetworkRange(_Frozen):
    """One row of the telemetry client-address table (longest prefix wins)."""

    cidr: str = Field(description="IPv4 or IPv6 network, e.g. `203.0.113.0/24`.")
    region: str = Field(
        pattern=r"^[A-Za-z0-9_-]{1,32}$", description="Region of addresses in the network."
    )
    isp: str = Field(
        default="unknown",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Network operator of addresses in the network.",
    )

    @field_validator("cidr")
    @classmethod
    def _net(cls, v: str) -> str:
        import ipaddress

        ipaddress.ip_network(v, strict=False)
        return v


class AlertRuleSetting(_Frozen):
    """One alert rule: `metric` of each series grouped `by` compared with `threshold` over the last `for_s` seconds."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Rule name (alert id).")
    metric: str = Field(description="A field of the QoE point, e.g. `rebuffer_ratio`.")
    threshold: float = Field(description="Value the metric is compared with.")
    above: bool = Field(default=True, description="Fire above (true) or below (false).")
    for_s: int = Field(default=10, ge=1, le=3600, description="Seconds the metric is taken over.")
    by: tuple[str, ...] = Field(
        default=("event", "region", "cdn"), description="Dimensions of one alert series."
    )
    where: dict[str, str] = Field(
        default={}, description="Only series with these dimension values."
    )


DEFAULT_ALERTS = (
    AlertRuleSetting(name="cdn-rebuffering", metric="rebuffer_ratio", threshold=0.02),
    AlertRuleSetting(name="cdn-errors", metric="error_rate", threshold=0.05),
    AlertRuleSetting(
        name="video-start-failures",
        metric="video_start_failure_ratio",
        threshold=0.01,
        for_s=30,
        by=("event",),
    ),
)


class HealthAlertSetting(_Frozen):
    """One rule over scraped platform health: each series of the sample `metric` (per scrape target and label set) compared with `threshold`, as its value or (`rate`) its per-second increase; fires after holding `for_s` seconds."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Rule name (alert id).")
    metric: str = Field(
        pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$",
        description="Prometheus sample name, e.g. `mainevent_feed_connected`; `up` = the target answered its scrape (1/0).",
    )
    threshold: float = Field(description="Value the metric is compared with.")
    above: bool = Field(default=True, description="Fire above (true) or below (false).")
    for_s: float = Field(
        default=2.0, ge=0, le=3600, description="Seconds the condition must hold before firing."
    )
    rate: bool = Field(
        default=False, description="Compare the per-second increase (counters), not the value."
    )
    target: str | None = Field(default=None, description="Only this scrape target.")


DEFAULT_HEALTH_ALERTS = (
    HealthAlertSetting(
        name="manifest-stale", metric="mainevent_manifest_stalled", threshold=0.5, for_s=0
    ),
    HealthAlertSetting(
        name="feed-lost", metric="mainevent_feed_connected", threshold=0.5, above=False, for_s=2
    ),
    HealthAlertSetting(
        name="authorisation-shedding",
        metric="mainevent_control_shed_total",
        threshold=0.0,
        rate=True,
        for_s=0,
    ),
    HealthAlertSetting(name="target-down", metric="up", threshold=0.5, above=False, for_s=3),
)


class TelemetryStreamSettings(_Frozen):
    """Scale-out: collectors publish to Redis Streams and aggregators consume them (`mode = "redis"`)."""

    mode: Literal["inprocess", "redis"] = Field(
        default="inprocess",
        description="`inprocess`: the collector aggregates itself; `redis`: it publishes admitted reports to Redis Streams for `mainevent telemetry aggregate` workers and serves the windows they publish.",
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis server.")
    prefix: str = Field(
        default="mainevent:telemetry",
        pattern=r"^[A-Za-z0-9:_.-]{1,64}$",
        description="Key prefix of the streams (`<prefix>:reports:<shard>`, `<prefix>:windows`).",
    )
    shards: int = Field(
        default=4,
        ge=1,
        le=1024,
        description="Report streams; a session's reports all go to shard crc32(sid) mod shards, so one aggregator sees all of them.",
    )
    maxlen: int = Field(
        default=100_000,
        ge=100,
        description="Approximate length bound of each stream (`XADD MAXLEN ~`): memory stays bounded if aggregators fall behind.",
    )
    group: str = Field(
        default="aggregators",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Consumer group of the aggregators.",
    )


class TelemetrySettings(_Frozen):
    """The telemetry collector (`mainevent telemetry serve`; started by `mainevent up`)."""

    enabled: bool = Field(default=True, description="Run the collector in `mainevent up`.")
    host: str = Field(default="127.0.0.1", description="Listen address of the collector.")
    port: int = Field(
        default=0, ge=0, le=65535, description="Listen port of the collector (0 = a free one)."
    )
    db_path: Path = Field(
        default=Path("data/telemetry.db"),
        description="SQLite file of the QoE time series (`mainevent up` keeps the default in `origin.data_dir`).",
    )
    events: dict[str, int] = Field(
        default={},
        description="Event id → segment duration (ms) of events accepted besides the stack's own; reports for other events get 404.",
    )
    part_target_ms: int = Field(
        default=0,
        ge=0,
        description="LL-HLS part target (ms) of those events, for latency from part URLs.",
    )
    capacity_per_s: float = Field(
        default=50_000.0,
        gt=0,
        description="Player reports per second aggregated in full; beyond it heartbeats are sampled (re-weighted).",
    )
    keep_capacity_per_s: float = Field(
        default=50_000.0,
        gt=0,
        description="Start-up/error/stall reports per second always kept; beyond it report batches get 429 + Retry-After.",
    )
    session_rate: float = Field(
        default=20.0, gt=0, description="Reports per second one session may send (token bucket)."
    )
    session_burst: float = Field(
        default=200.0, ge=1, description="Bucket size of the per-session limit."
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="Largest report or access batch accepted (413 beyond).",
    )
    max_records: int = Field(
        default=5_000, ge=1, description="Most records in one report or access batch (413 beyond)."
    )
    max_sessions: int = Field(
        default=200_000,
        ge=1,
        description="Sessions tracked at once (least recently seen forgotten first).",
    )
    lean_ingest: bool = Field(
        default=True,
        description="Answer plainly written player report POSTs in the HTTP front, without FastAPI (same responses; off: every request goes through the route).",
    )
    session_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="A session silent this long has ended (an exit before start if it never started).",
    )
    report_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="CMCD time-interval (`t`) reporting period given to the web player.",
    )
    networks: tuple[NetworkRange, ...] = Field(
        default=(),
        description="Override of the client address → region and ISP table (rows as in `control.regions`). Empty (the default): the collector uses the control plane's `control.regions`, so viewers are placed in the same region for entitlement and for QoE.",
    )
    trusted_proxies: tuple[str, ...] = Field(
        default=(),
        description="CIDRs of proxies whose `X-Client-Region` header is trusted as the viewer's region: on a player report when the report's peer is one, on an edge access record when the viewer-side peer of the edge is one. From anyone else the header is ignored and the region comes from the address. Empty (the default): never trusted. For a one-machine demo `127.0.0.0/8` trusts every local process.",
    )
    cdn_hosts: dict[str, str] = Field(
        default={},
        description="`host:port` → CDN id, to tell which CDN served a URL in a player report (`mainevent up` fills in its edges).",
    )
    scrape_targets: dict[str, str] = Field(
        default={},
        description="Name → `/metrics` URL scraped every second for platform health (`mainevent up` adds its origin, shield, edges, control plane as `control`, and with scale-out each edge, shield and origin process, e.g. `cdn-a-0`); a name given here replaces the stack's target of that name.",
    )
    alerts: tuple[AlertRuleSetting, ...] = Field(
        default=DEFAULT_ALERTS, description="Alert rules (see `AlertRuleSetting`)."
    )
    stream: TelemetryStreamSettings = Field(
        default=TelemetryStreamSettings(),
        description="Scale-out through Redis Streams (see `TelemetryStreamSettings`).",
    )
    health_alerts: tuple[HealthAlertSetting, ...] = Field(
        default=DEFAULT_HEALTH_ALERTS,
        description="Alert rules over scraped platform health (see `HealthAlertSetting`).",
    )


class DvrSettings(_Frozen):
    """DVR window, start-over, post-event VOD, retention and live-edge-first shedding."""

    window_s: int = Field(
        default=600,
        ge=0,
        le=86_400,
        description="DVR window: seconds of media the live media playlists (and the MPD's timeShiftBufferDepth) carry; 0 = the live window only. Longer than the live window, the playlists add CAN-SKIP-UNTIL (delta updates, `_HLS_skip=YES`) and, in standard mode, EXT-X-START at the live edge. Under the control plane each event's record (`dvr_window_s`) sets its window; this is the window without one and the demo event's.",
    )
    archive: bool = Field(
        default=True,
        description="Keep the start-over playlists (`/live/<event>/startover.m3u8`, EVENT type, from the first segment) and, at the end, the VOD playlists and MPD (`/live/<event>/vod.m3u8`, `vod.mpd`).",
    )
    vod_gaps: Literal["exclude", "mark"] = Field(
        default="exclude",
        description="Post-event VOD: `exclude` leaves slate and EXT-X-GAP runs out (with a discontinuity where a run was cut); `mark` keeps them (gaps as EXT-X-GAP).",
    )
    retention_s: int | None = Field(
        default=None,
        ge=1,
        description="Seconds after a segment's capture (for archived events: after the end, when the start-over/VOD playlists are withdrawn) before it is deleted from the store; never while a playlist lists it. None = keep everything.",
    )
    live_edge_segments: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Segment/part requests more than this many segments behind the live edge are DVR requests (shed first under load); default the live window (`event.window_segments`).",
    )
    max_concurrent: int | None = Field(
        default=None,
        ge=1,
        description="Origin and shield budget of media requests in progress: over it, DVR requests get 503 + Retry-After (live-edge requests never). None = no limit.",
    )
    max_bytes_per_s: int | None = Field(
        default=None,
        ge=1,
        description="Origin budget of media bytes served per second: over it, DVR requests get 503 + Retry-After. None = no limit.",
    )
    retry_after_s: int = Field(
        default=2, ge=1, le=60, description="Retry-After of a shed DVR request."
    )


class Settings(_Frozen):
    """All settings of one mainevent process."""

    event: EventSettings = EventSettings()
    encoder: EncoderSettings = EncoderSettings()
    ingest: IngestSettings = IngestSettings()
    origin: OriginSettings = OriginSettings()
    s3: S3Settings = S3Settings()
    feed: FeedSettings = FeedSettings()
    redundancy: RedundancySettings = RedundancySettings()
    delivery: DeliverySettings = DeliverySettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    dvr: DvrSettings = DvrSettings()


_NOT_SETTINGS = frozenset({"MAINEVENT_EDGE_ADMIN_SECRET", "MAINEVENT_EDGE_TOKEN_KEYS"})
"""`MAINEVENT_` variables that are no settings: the edges' own (`commands/up.py`, README), also
in the environment of every process `mainevent up` starts."""


def _env_tree(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key in _NOT_SETTINGS:
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        node = tree
        for name in path[:-1]:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: conflicts with another MAINEVENT_ variable")
        # Lists and tables (e.g. the ladder) are given as JSON.
        if value[:1] in ("[", "{"):
            try:
                node[path[-1]] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{key}: not valid JSON: {exc}") from exc
        else:
            node[path[-1]] = value
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_settings(
    *,
    file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build settings from defaults, an optional TOML file, the environment, then overrides.

    Raises ConfigError with every invalid setting named.
    """
    data: dict[str, Any] = {}
    if file is not None:
        try:
            data = tomllib.loads(file.read_text())
            data.pop("control", None)  # the control plane's table (control/settings.py)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file} is not valid TOML: {exc}") from exc
    if environ is not None:
        data = _merge(data, _env_tree(environ))
    if overrides:
        data = _merge(data, overrides)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "settings"
            lines.append(f"  {loc}: {err['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None


def settings_reference() -> str:
    """The configuration reference as a Markdown table (kept in the README, checked by a test)."""
    rows = ["| setting | environment | default | meaning |", "|---|---|---|---|"]
    for section_name, section_field in Settings.model_fields.items():
        model = section_field.annotation
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        for name, f in model.model_fields.items():
            default = f.default
            if name == "ladder":
                shown = ", ".join(f"{r.id} {r.width}x{r.height} {r.bitrate_kbps}k" for r in default)
            elif name == "alerts":
                shown = ", ".join(f"{r.name}: {r.metric} > {r.threshold}" for r in default)
            elif name == "networks" and default:
                shown = ", ".join(f"{r.cidr} → {r.region}/{r.isp}" for r in default)
            elif default is None:
                shown = "—"
            else:
                shown = str(default)
            env = f"`{ENV_PREFIX}{section_name.upper()}__{name.upper()}`"
            desc = (f.description or "").replace("|", "\\|")
            rows.append(f"| `{section_name}.{name}` | {env} | `{shown}` | {desc} |")
    return "\n".join(rows)
