"""The headless player's HTTP adapter: plays one HLS stream with httpx, like hls.js would.

It fetches the multivariant playlist, the chosen video rendition and the audio rendition,
reloads media playlists on the RFC 8216bis schedule, downloads init sections and segments
(sequentially per track, the tracks in parallel), lets the ABR core pick renditions, retries
failures with backoff and fails over to the next base URL. Decisions live in the sans-IO cores
(`abr`, `model`, `timeline`); this module supplies time and bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from mainevent.common.cmcd import CmcdValue
from mainevent.media.manifest import parse_media_playlist, parse_multivariant_playlist
from mainevent.media.manifest.errors import ManifestError
from mainevent.media.manifest.model import MediaRendition, MultivariantPlaylist, Variant
from mainevent.player.abr import AbrConfig, AbrController
from mainevent.player.cmcd import CMCD_CONTENT_TYPE, CmcdReporter, CmcdTarget, PlayerState
from mainevent.player.model import (
    PlaybackConfig,
    PlaybackEnded,
    PlaybackEvent,
    PlaybackModel,
    PlaybackStarted,
    PlaybackStats,
    StallEnded,
    StallStarted,
)
from mainevent.player.report import LatencySummary, PlaybackReport, RenditionSwitch
from mainevent.player.steering import SteeringClient
from mainevent.player.timeline import SegmentRef, SegmentTimeline, TimelineAnchor

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class PlayerConfig:
    """Behaviour of the headless player beyond ABR and playback thresholds."""

    abr: AbrConfig = field(default_factory=AbrConfig)
    playback: PlaybackConfig = field(default_factory=PlaybackConfig)
    tick_s: float = 0.25
    """How often the playhead is advanced and live latency sampled."""
    startup_timeout_s: float = 30.0
    """Give up (fatal) if playback has not started this long after the play request."""
    max_buffer_s: float = 30.0
    """Stop fetching ahead of the playhead beyond this much media (hls.js maxBufferLength)."""
    retry_base_s: float = 0.5
    """First retry delay; doubles per failed attempt of the same request..."""
    retry_max_s: float = 4.0
    """...up to this."""
    failover_after: int = 3
    """Failed attempts of one request after which the next base URL is tried."""
    fatal_after: int = 10
    """Failed attempts of one request after which the session ends with a fatal error."""
    request_timeout_s: float = 10.0
    """Timeout of each request when `play()` creates its own client."""

    def __post_init__(self) -> None:
        if self.tick_s <= 0 or self.startup_timeout_s <= 0 or self.max_buffer_s <= 0:
            raise ValueError("tick, startup timeout and max buffer must be positive")
        if not 1 <= self.failover_after <= self.fatal_after:
            raise ValueError("need 1 <= failover_after <= fatal_after")


async def play(
    url: str,
    *,
    duration_s: float,
    client: httpx.AsyncClient | None = None,
    fallback_urls: Sequence[str] = (),
    clock: Clock = time.time,
    sleep: Sleep = asyncio.sleep,
    config: PlayerConfig | None = None,
    cmcd: CmcdTarget | None = None,
    content_id: str | None = None,
    session_id: str | None = None,
    rewrite_url: Callable[[str], str] | None = None,
) -> PlaybackReport:
    """Play the HLS stream at `url` for `duration_s` seconds after playback starts.

    With `cmcd`, CMCD v2 event reports are POSTed to its URL as hls.js 1.7 sends them
    (`mainevent.player.cmcd`), with `content_id` as `cid` (default: the event id of a
    `/live/<event>/` URL) and `session_id` as `sid` (default: a random UUID).

    `fallback_urls` are tried in turn (wrapping around) after repeated failures: each is
    another multivariant playlist URL, or a bare origin (`http://edge-b:8080`) to which the
    path of `url` is appended. `clock` returns epoch seconds (latency is measured against the
    PDT in the playlists); `sleep` waits that clock's seconds. `rewrite_url` is applied to
    the URL of every playlist, init section and segment request just before it is sent (a
    player app's hook, e.g. `mainevent.player.grants.CurrentToken` for the newest playback
    token). Never raises for stream problems: they end up in the report (`fatal`, `http_errors`).
    """
    if duration_s < 0:
        raise ValueError("duration_s must not be negative")
    cfg = config or PlayerConfig()
    urls = [url, *(_fallback_url(url, f) for f in fallback_urls)]
    reporting = None
    if cmcd is not None:
        cid = content_id or event_of_url(url) or "unknown"
        reporting = (cmcd, session_id or str(uuid.uuid4()), cid)
    if client is None:
        async with httpx.AsyncClient(timeout=cfg.request_timeout_s, follow_redirects=True) as own:
            return await _Session(
                urls, duration_s, own, clock, sleep, cfg, reporting, rewrite_url
            ).run()
    return await _Session(urls, duration_s, client, clock, sleep, cfg, reporting, rewrite_url).run()


def event_of_url(url: str) -> str | None:
    """The event id of a ``.../live/<event>/...`` URL (CMCD ``cid``), or None."""
    parts = urlsplit(url).path.split("/")
    return parts[parts.index("live") + 1] if "live" in parts[:-1] else None


def _fallback_url(primary: str, fallback: str) -> str:
    parts = urlsplit(fallback)
    if parts.path in ("", "/") and not parts.query:
        main = urlsplit(primary)
        return urlunsplit((parts.scheme, parts.netloc, main.path, main.query, ""))
    return fallback


class _FatalError(Exception):
    """Playback cannot continue; the message goes into the report."""


class _BadResponseError(Exception):
    """A 2xx response whose body is not what was asked for (e.g. not a playlist)."""


@dataclass(slots=True)
class _Track:
    """One loaded rendition: "main" (video, ABR-switched) or "audio"."""

    name: str
    uri: str
    label: str
    timeline: SegmentTimeline
    level: int | None = None
    pathway: str | None = None
    text: str | None = None
    next_reload_at: float = 0.0
    inits: set[tuple[str, str]] = field(default_factory=set)


class _Session:
    def __init__(
        self,
        urls: list[str],
        duration_s: float,
        client: httpx.AsyncClient,
        clock: Clock,
        sleep: Sleep,
        config: PlayerConfig,
        reporting: tuple[CmcdTarget, str, str] | None = None,
        rewrite_url: Callable[[str], str] | None = None,
    ) -> None:
        self._reporting = reporting
        self._rewrite_url = rewrite_url
        self._cmcd: CmcdReporter | None = None
        self._cmcd_wake = asyncio.Event()
        self._urls = urls
        self._base = 0
        self._duration_s = duration_s
        self._client = client
        self._clock = clock
        self._sleep = sleep
        self._cfg = config
        self._requested_at = 0.0
        self._anchor = TimelineAnchor()
        self._variants: tuple[Variant, ...] = ()
        self._abr: AbrController | None = None
        self._model: PlaybackModel | None = None
        self._tracks: list[_Track] = []
        self._latencies: list[float] = []
        self._switches: list[RenditionSwitch] = []
        self._errors: Counter[str] = Counter()
        self._segments = 0
        self._playlists = 0
        self._bytes = 0
        self._failovers = 0
        self._resyncs = 0
        self._fatal: str | None = None
        self._steering: SteeringClient | None = None
        self._multivariant: MultivariantPlaylist | None = None
        self._pathways: list[tuple[float, str]] = []
        self._phase_marks: list[float] = []
        self._stall_starts: list[float] = []
        """Clock at the end of the multivariant and of the media playlists phases of the start."""

    # -- session ---------------------------------------------------------------------------

    async def run(self) -> PlaybackReport:
        self._requested_at = self._clock()
        reporter = None
        if self._reporting is not None:
            target, sid, cid = self._reporting
            self._cmcd = CmcdReporter(target, sid, cid, self._requested_at)
            reporter = asyncio.create_task(self._run_cmcd(self._cmcd))
        try:
            await self._play()
        finally:
            if reporter is not None:
                await self._end_cmcd(reporter)
        return self._report()

    async def _play(self) -> None:
        try:
            await self._start()
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._run_track(t)) for t in self._tracks]
                if self._steering is not None:
                    tasks.append(tg.create_task(self._run_steering(self._steering)))
                await self._run_clock()
                for task in tasks:
                    task.cancel()
        except* _FatalError as group:
            self._fatal = str(group.exceptions[0])
            log.info("playback of %s failed: %s", self._urls[0], self._fatal)
        if self._model is not None:
            self._on_events(self._model.advance(self._clock()))

    # -- CMCD reporting (the rules are in `player/cmcd.py`) ----------------------------------

    def _report_cmcd(self, event: str, **data: CmcdValue) -> None:
        if self._cmcd is not None:
            self._cmcd.record(event, self._clock(), **data)
            self._cmcd_wake.set()

    async def _run_cmcd(self, rep: CmcdReporter) -> None:
        """Post batches as they fill; one timer for the next heartbeat or the end of a back-off."""
        while not rep.disposed:
            self._cmcd_wake.clear()
            now = self._clock()
            rep.tick(now)
            body = rep.take(now)
            if body is not None:
                await self._post_cmcd(rep, body)
                continue
            deadline = rep.next_deadline()
            # One timer in the session's own clock (`sleep`), cut short by a new record.
            waits: set[asyncio.Future[object]] = {asyncio.ensure_future(self._cmcd_wake.wait())}
            if deadline is not None:
                waits.add(asyncio.ensure_future(self._sleep(max(0.0, deadline - now))))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

    async def _post_cmcd(self, rep: CmcdReporter, body: bytes) -> None:
        try:
            r = await self._client.post(
                rep.target.url, content=body, headers={"content-type": CMCD_CONTENT_TYPE}
            )
        except (httpx.HTTPError, RuntimeError) as exc:  # RuntimeError: the caller closed the client
            self._errors[f"cmcd-{type(exc).__name__}"] += 1
            rep.answered(None, self._clock())
            return
        retry = r.headers.get("retry-after")
        rep.answered(
            r.status_code, self._clock(), float(retry) if retry and retry.isdigit() else None
        )

    async def _end_cmcd(self, task: asyncio.Task[None]) -> None:
        """The session is over: a last record with the final state, then flush the queue."""
        rep = self._cmcd
        assert rep is not None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if rep._in_flight:
            rep.answered(None, self._clock())  # cancelled mid-POST: send it again now
        if self._fatal is not None:
            rep.update(sta=PlayerState.FATAL)
            rep.record("e", self._clock(), ec=(_error_code(self._fatal),))
        else:
            ended = self._model is not None and self._model.state == "ended"
            rep.update(sta=PlayerState.ENDED if ended else PlayerState.QUIT)
            rep.record("t", self._clock())
        body = rep.take(self._clock() + 3600, flush=True)  # ignore any back-off: last chance
        if body is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):  # not wait_for: it can lose a cancellation
                    await self._post_cmcd(rep, body)

    async def _start(self) -> None:
        response = await self._get("multivariant playlist", lambda: self._urls[self._base])
        self._phase_marks.append(self._clock())
        variants, audio = _select_renditions(response.text)
        self._variants = variants
        if "#EXT-X-CONTENT-STEERING" in response.text:
            self._multivariant = parse_multivariant_playlist(response.text)
            self._steering = SteeringClient.from_multivariant(self._multivariant, str(response.url))
            if self._steering is not None:
                self._pathways.append((self._clock() - self._requested_at, self._steering.pathway))
        self._abr = AbrController([v.bandwidth for v in variants], self._cfg.abr)
        level = self._abr.decide(0.0, 0.0)
        main = _Track("main", variants[level].uri, self._label(variants[level]), self._timeline())
        main.level = level
        self._tracks = [main]
        if audio is not None and audio.uri is not None:
            self._tracks.append(_Track("audio", audio.uri, audio.name, self._timeline()))
        for track in self._tracks:
            track.pathway = self._steering.pathway if self._steering else None
        self._switches.append(RenditionSwitch(self._clock() - self._requested_at, main.label))
        self._report_bitrate(variants[level])
        async with asyncio.TaskGroup() as tg:
            for track in self._tracks:
                tg.create_task(self._reload(track))
        start = main.timeline.start_position_us()
        while start is None:  # live playlist still shorter than the hold-back (or empty)
            self._check_startup_deadline()
            log.debug(
                "waiting for %s to hold %d us of media", main.label, main.timeline.hold_back_us()
            )
            await self._sleep(max(0.0, main.next_reload_at - self._clock()))
            await self._reload(main)
            start = main.timeline.start_position_us()
        self._phase_marks.append(self._clock())
        self._model = PlaybackModel(
            [t.name for t in self._tracks], start, self._requested_at, self._cfg.playback
        )

    def _report_bitrate(self, variant: Variant) -> None:
        if variant.bandwidth:
            self._report_cmcd("bc", br=(round(variant.bandwidth / 1000),), ot="v")

    def _label(self, variant: Variant) -> str:
        if not variant.uri:  # a media playlist was given directly: name it after its URL
            return _label(Variant(uri=urlsplit(self._urls[0]).path, bandwidth=0))
        return _label(variant)

    def _timeline(self) -> SegmentTimeline:
        return SegmentTimeline(self._anchor)

    async def _run_clock(self) -> None:
        """Advance the playhead, sample latency, and decide when the session is over."""
        model = self._require_model()
        while True:
            now = self._clock()
            self._on_events(model.advance(now))
            if model.state == "ended":
                return
            stats = model.statistics()
            if stats.startup_s is not None:
                if stats.latency_s is not None:
                    self._latencies.append(stats.latency_s)
                remaining = self._duration_s - (now - self._requested_at - stats.startup_s)
                if remaining <= 0:
                    return
                await self._sleep(min(self._cfg.tick_s, remaining))
            else:
                self._check_startup_deadline()
                await self._sleep(self._cfg.tick_s)

    def _check_startup_deadline(self) -> None:
        waited = self._clock() - self._requested_at
        if waited > self._cfg.startup_timeout_s:
            raise _FatalError(f"playback did not start within {self._cfg.startup_timeout_s:g} s")

    def _on_events(self, events: list[PlaybackEvent]) -> None:
        for event in events:
            if isinstance(event, PlaybackStarted):
                log.info("playback started after %.3f s", event.startup_s)
                self._cmcd_state(PlayerState.PLAYING)
            elif isinstance(event, StallStarted):
                log.info("stalled at position %d us", event.position_us)
                self._stall_starts.append(event.at - self._requested_at)
                self._cmcd_state(PlayerState.REBUFFERING)
            elif isinstance(event, StallEnded):
                log.info("resumed after a %.3f s stall", event.duration_s)
                self._cmcd_state(PlayerState.PLAYING)
            elif isinstance(event, PlaybackEnded):
                self._cmcd_state(PlayerState.ENDED)

    def _cmcd_state(self, sta: str) -> None:
        if self._cmcd is not None:
            self._cmcd.update(sta=sta)

    def _require_model(self) -> PlaybackModel:
        if self._model is None:
            raise RuntimeError("playback model used before the first media playlist was loaded")
        return self._model

    # -- tracks ----------------------------------------------------------------------------

    async def _run_track(self, track: _Track) -> None:
        model = self._require_model()
        max_buffer_us = round(self._cfg.max_buffer_s * 1_000_000)
        while True:
            if track.name == "main":
                await self._adapt(track)
            position = model.fetch_position_us(track.name)
            if track.timeline.is_behind_window(position):
                self._resync(track)
                continue
            ref = track.timeline.locate(position)
            if ref is not None:
                excess_us = model.buffer_ahead_us(track.name) - max_buffer_us
                if excess_us > 0:
                    await self._sleep(excess_us / 1_000_000)
                    continue
                self._follow_pathway(track)
                await self._fetch_segment(track, ref)
                if self._clock() >= track.next_reload_at and not self._ended(track):
                    await self._reload(track)
                continue
            if self._ended(track):
                self._on_events(model.complete(track.name, self._clock()))
                return
            await self._sleep(max(0.0, track.next_reload_at - self._clock()))
            await self._reload(track)

    @staticmethod
    def _ended(track: _Track) -> bool:
        playlist = track.timeline.playlist
        return playlist is not None and playlist.endlist

    async def _adapt(self, track: _Track) -> None:
        """Let the ABR core choose the rendition of the next segment; switch if it changed."""
        model = self._require_model()
        abr = self._abr
        if abr is None:
            return
        segment_s = track.timeline.target_duration_us / 1_000_000
        level = abr.decide(model.buffer_ahead_us(track.name) / 1_000_000, segment_s)
        if level == track.level:
            return
        variant = self._variants[level]
        log.info("switching from %s to %s", track.label, self._label(variant))
        track.level = level
        track.uri = variant.uri
        track.label = self._label(variant)
        track.timeline = track.timeline.for_switch()
        track.text = None
        self._switches.append(RenditionSwitch(self._clock() - self._requested_at, track.label))
        self._report_bitrate(variant)
        await self._reload(track)

    # -- content steering (the rules are in `player/steering.py`) ----------------------------

    async def _run_steering(self, steering: SteeringClient) -> None:
        """Ask the steering server at each TTL, as hls.js does; failures only delay the next ask."""
        while not steering.stopped:
            await self._sleep(max(0.0, steering.next_at - self._clock()))
            try:
                r = await self._client.get(steering.request_url(None))
                retry = r.headers.get("retry-after")
                status, body = r.status_code, r.content
            except httpx.HTTPError as exc:
                self._errors[f"steering-{type(exc).__name__}"] += 1
                status, body, retry = 0, b"", None
            pathway = steering.on_response(
                status,
                body,
                float(retry) if retry and retry.isdigit() else None,
                self._clock(),
            )
            if pathway is not None:
                log.info("steering: switching to pathway %s", pathway)
                self._pathways.append((self._clock() - self._requested_at, pathway))

    def _follow_pathway(self, track: _Track) -> None:
        """At a segment boundary, move the track to the steered pathway (same rung, same
        segment numbers: only the CDN in its URLs changes)."""
        steering, pl = self._steering, self._multivariant
        if steering is None or pl is None or track.pathway == steering.pathway:
            return
        wanted = steering.pathway
        if track.name == "main":
            variants = tuple(
                sorted(
                    (v for v in pl.variants if v.pathway_id == wanted), key=lambda v: v.bandwidth
                )
            )
            current = self._variants[track.level or 0]
            same = next(
                (
                    i
                    for i, v in enumerate(variants)
                    if v.stable_variant_id and v.stable_variant_id == current.stable_variant_id
                ),
                None,
            )
            if same is None or len(variants) != len(self._variants):
                return  # that pathway does not carry this ladder: stay
            self._variants = variants
            track.level = same
            track.uri = variants[same].uri
        else:
            group = next((v.audio for v in pl.variants if v.pathway_id == wanted and v.audio), None)
            audio = next(
                (m for m in pl.media if m.group_id == group and m.uri and m.name == track.label),
                None,
            )
            if audio is None or audio.uri is None:
                return
            track.uri = audio.uri
        track.pathway = wanted

    def _resync(self, track: _Track) -> None:
        """The playhead fell out of the live window: jump back to hold-back behind the edge."""
        target = track.timeline.resync_position_us()
        if target is None:
            return
        self._resyncs += 1
        log.info("fell behind the live window; jumping to %d us", target)
        self._on_events(self._require_model().seek(target, self._clock()))

    async def _reload(self, track: _Track) -> None:
        """Reload the track's media playlist and schedule the next reload (RFC 8216bis 6.3.4)."""
        attempt = 0
        while True:
            response, took_s, _ = await self._get_timed(
                f"{track.label} playlist", lambda: self._media_url(track)
            )
            started = self._clock() - took_s
            try:
                playlist = parse_media_playlist(response.text)
            except ManifestError as exc:
                attempt += 1
                await self._failed("invalid-playlist", f"{track.label} playlist: {exc}", attempt)
                continue
            break
        self._playlists += 1
        changed = response.text != track.text
        track.text = response.text
        track.timeline.update(playlist)
        if changed and playlist.segments:
            wait_s = playlist.segments[-1].duration_us / 1_000_000
        else:
            wait_s = playlist.target_duration_s / 2
        track.next_reload_at = started + wait_s

    async def _fetch_segment(self, track: _Track, ref: SegmentRef) -> None:
        model = self._require_model()
        if ref.gap:  # nothing to download; the gap plays as silence/black (or is skipped)
            self._on_events(
                model.append(track.name, ref.start_us, ref.duration_us, self._clock(), ref.pdt_ms)
            )
            return
        if ref.map_uri is not None and (track.uri, ref.map_uri) not in track.inits:
            map_uri = ref.map_uri
            await self._get(f"{track.label} init", lambda: urljoin(self._media_url(track), map_uri))
            track.inits.add((track.uri, map_uri))
        url = ""

        def segment_url() -> str:
            nonlocal url
            url = urljoin(self._media_url(track), ref.uri)
            return url

        response, took_s, ttfb = await self._get_timed(
            f"{track.label} segment {ref.msn}", segment_url
        )
        if track.name == "main" and self._abr is not None:
            self._abr.sample(took_s, len(response.content))
        self._segments += 1
        if self._cmcd is not None:
            # As hls.js: the response record when the load completes (`bl` as of the previous
            # append), then the buffer level once this segment is appended.
            if self._abr is not None:
                self._cmcd.update(mtp=(round(self._abr.estimator.estimate_bps() / 1000),))
            now = self._clock()
            self._cmcd.response(url, response.status_code, now - took_s, ttfb, took_s, now)
            self._cmcd_wake.set()
        self._on_events(
            model.append(track.name, ref.start_us, ref.duration_us, self._clock(), ref.pdt_ms)
        )
        if self._cmcd is not None:
            ahead = min(model.buffer_ahead_us(t.name) for t in self._tracks)
            self._cmcd.update(bl=(round(ahead / 1000),))

    def _media_url(self, track: _Track) -> str:
        # A request (or its retry) goes to the steered pathway: a CDN failing for this player
        # is left as soon as steering says so, not after the request gives up.
        self._follow_pathway(track)
        return urljoin(self._urls[self._base], track.uri)

    # -- requests --------------------------------------------------------------------------

    async def _get(self, what: str, url_of: Callable[[], str]) -> httpx.Response:
        """GET with retries, backoff and failover; `url_of` resolves against the current base."""
        response, _took_s, _ttfb_s = await self._get_timed(what, url_of)
        return response

    async def _get_timed(
        self, what: str, url_of: Callable[[], str]
    ) -> tuple[httpx.Response, float, float]:
        """`_get`, also returning how long the successful attempt took: request to last byte,
        and request to the response head (time to first byte)."""
        attempt = 0
        while True:
            base = self._base
            url = url_of()
            if self._rewrite_url is not None:
                url = self._rewrite_url(url)
            started = self._clock()
            try:
                async with self._client.stream("GET", url) as response:
                    headers_at = self._clock()
                    await response.aread()
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            else:
                if 200 <= response.status_code < 300:
                    self._bytes += len(response.content)
                    return response, self._clock() - started, headers_at - started
                key = str(response.status_code)
            attempt += 1
            await self._failed(key, f"{what} ({url}): {key}", attempt, base)

    async def _failed(self, key: str, detail: str, attempt: int, base: int | None = None) -> None:
        """Count a failed attempt; fail over, give up or back off."""
        self._errors[key] += 1
        log.debug("attempt %d failed: %s", attempt, detail)
        if attempt >= self._cfg.fatal_after:
            raise _FatalError(f"{detail}, {attempt} attempts failed")
        if attempt % self._cfg.failover_after == 0 and len(self._urls) > 1:
            if base is None or base == self._base:  # not already moved on by another track
                self._base = (self._base + 1) % len(self._urls)
                self._failovers += 1
                log.warning("failing over to %s after: %s", self._urls[self._base], detail)
            return  # retry at once on the next base
        delay = min(self._cfg.retry_max_s, self._cfg.retry_base_s * 2 ** max(0, attempt - 1))
        await self._sleep(delay)

    # -- report ----------------------------------------------------------------------------

    def _report(self) -> PlaybackReport:
        stats = self._model.statistics() if self._model is not None else None
        return PlaybackReport(
            url=self._urls[0],
            startup_s=stats.startup_s if stats else None,
            played_s=stats.played_s if stats else 0.0,
            stalls=stats.stalls if stats else 0,
            stall_time_s=stats.stall_time_s if stats else 0.0,
            latency=LatencySummary.of(self._latencies),
            renditions=tuple(self._switches),
            segments_fetched=self._segments,
            playlists_fetched=self._playlists,
            bytes_fetched=self._bytes,
            http_errors=dict(sorted(self._errors.items())),
            failovers=self._failovers,
            final_url=self._urls[self._base],
            resyncs=self._resyncs,
            fatal=self._fatal,
            pathways=tuple(self._pathways),
            startup_phases_s=self._startup_phases(stats),
            stall_starts_s=tuple(self._stall_starts),
            longest_stall_s=stats.longest_stall_s if stats else 0.0,
        )

    def _startup_phases(self, stats: PlaybackStats | None) -> tuple[float, ...]:
        if stats is None or stats.startup_s is None or len(self._phase_marks) != 2:
            return ()
        multivariant, playlists = self._phase_marks
        started = self._requested_at + stats.startup_s
        return (
            multivariant - self._requested_at,
            playlists - multivariant,
            max(0.0, started - playlists),
        )


def _error_code(fatal: str) -> str:
    """An hls.js-style error detail (``ec``) for a fatal error message."""
    if "multivariant" in fatal:
        return "manifestLoadError"
    if "playlist" in fatal:
        return "levelLoadError"
    if "segment" in fatal or "init" in fatal:
        return "fragLoadError"
    return "otherError"


def _select_renditions(text: str) -> tuple[tuple[Variant, ...], MediaRendition | None]:
    """Variants in ascending bandwidth (one pathway) and the audio rendition to load."""
    if "#EXT-X-STREAM-INF" not in text:
        if "#EXTINF" in text or "#EXT-X-TARGETDURATION" in text:
            # A media playlist given directly: one rendition, the URL itself.
            return (Variant(uri="", bandwidth=0),), None
        raise _FatalError("not an HLS playlist (no #EXT-X-STREAM-INF or #EXTINF)")
    try:
        multivariant = parse_multivariant_playlist(text)
    except ManifestError as exc:
        raise _FatalError(f"invalid multivariant playlist: {exc}") from exc
    variants = _one_pathway(multivariant)
    if not variants:
        raise _FatalError("multivariant playlist lists no variants")
    ordered = tuple(sorted(variants, key=lambda v: v.bandwidth))
    group = next((v.audio for v in ordered if v.audio), None)
    audio = [m for m in multivariant.media if m.type == "AUDIO" and m.group_id == group and m.uri]
    chosen = next((m for m in audio if m.default), audio[0] if audio else None)
    return ordered, chosen


def _one_pathway(multivariant: MultivariantPlaylist) -> list[Variant]:
    """With content steering, the variants of the initial pathway (no steering client yet)."""
    pathways = [v.pathway_id for v in multivariant.variants if v.pathway_id]
    if not pathways:
        return list(multivariant.variants)
    steering = multivariant.content_steering
    wanted = steering.pathway_id if steering and steering.pathway_id else pathways[0]
    return [v for v in multivariant.variants if (v.pathway_id or wanted) == wanted]


def _label(variant: Variant) -> str:
    """Rendition name for reports: `v720` for `v720/index.m3u8`, `low` for `low.m3u8`."""
    path = urlsplit(variant.uri).path.rstrip("/")
    if not path:
        return "main"
    head, _, tail = path.rpartition("/")
    if tail in ("index.m3u8", "playlist.m3u8", "prog_index.m3u8") and head:
        return head.rpartition("/")[2]
    return tail.removesuffix(".m3u8")
