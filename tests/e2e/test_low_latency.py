"""Low-latency HLS and DASH end to end: a real `mainevent up --latency low`, real players.

The conformance test follows the stream for a minute the way an LL-HLS client does (request
the hinted part, then the playlist blocked on it) and checks every SPEC §2 rule on what it saw.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from mainevent.common.eventspec import DEFAULT_PART_TARGET_MS
from mainevent.media.manifest import MediaPlaylist, parse_media_playlist
from mainevent.testing.browser import CHROMIUM, player_page, sample_stats, timeline
from mainevent.testing.stack import RunningStack, start_stack
from mainevent.testing.stock import PLAYERS, StockPages, StockPlayer, sample, stock_player

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.exclusive]

TD_US = 2_000_000
PARTS = 2000 // DEFAULT_PART_TARGET_MS  # 2 s segments cut into parts of the default target
_PART_URI = re.compile(r"^(\d+)\.(\d+)\.m4s$")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """One real low-latency platform for the module's tests."""
    s = start_stack(tmp_path_factory.mktemp("ll"), extra_args=("--latency", "low"))
    yield s
    leftovers = s.stop()
    assert not leftovers, f"processes left behind after Ctrl-C: {leftovers}"


def _url(stack: RunningStack, rendition: str, name: str = "index.m3u8") -> str:
    return f"{stack.base_url}/live/{stack.event}/{rendition}/{name}"


def _position(pl: MediaPlaylist) -> int:
    """The newest listed part as a count of parts since MSN 0."""
    if pl.pending_parts:
        m = _PART_URI.match(pl.pending_parts[-1].uri)
        assert m is not None
        return int(m[1]) * PARTS + int(m[2])
    return pl.last_msn * PARTS + len(pl.segments[-1].parts) - 1


def _all_part_uris(pl: MediaPlaylist) -> list[str]:
    return [p.uri for s in pl.segments for p in s.parts] + [p.uri for p in pl.pending_parts]


def _check_rules(pl: MediaPlaylist) -> None:
    """Every SPEC §2 rule that one playlist can show."""
    pt = pl.part_target_us
    sc = pl.server_control
    assert pt is not None
    assert sc is not None
    assert sc.can_block_reload
    assert sc.part_hold_back_us is not None
    assert sc.part_hold_back_us >= 3 * pt
    assert sc.hold_back_us is not None
    assert sc.hold_back_us >= 3 * TD_US
    assert sc.can_skip_until_us is not None
    assert sc.can_skip_until_us >= 6 * TD_US
    assert len(pl.preload_hints) == 1
    assert pl.preload_hints[0].type == "PART"
    msn = pl.media_sequence + pl.skipped_segments
    for seg in pl.segments:
        assert seg.program_date_time_ms is not None, f"segment {msn} has no PDT"
        msn += 1
    complete = [s.parts for s in pl.segments if s.parts]
    for parts in [*complete, pl.pending_parts]:
        if not parts:
            continue
        if parts[0].uri.endswith(".0.m4s"):
            assert parts[0].independent, parts[0]
        for p in parts:
            assert 0 < p.duration_us <= pt, p
            if not p.uri.endswith(f".{PARTS - 1}.m4s"):  # all but a segment's last part
                assert p.duration_us >= 0.85 * pt, p
    for seg in pl.segments:
        if seg.parts:
            assert seg.parts[0].uri.endswith(".0.m4s")
            assert seg.parts[0].independent
    # Parts only for the last 3 × TD: segments with parts end within 3 × TD of the edge.
    edge_us = sum(p.duration_us for p in pl.pending_parts)
    age = 0
    for seg in reversed(pl.segments):
        if seg.parts:
            assert age + edge_us <= 3 * TD_US + pt, "parts listed for an old segment"
        age += seg.duration_us
    assert any(s.parts for s in pl.segments[-2:]), "no parts on the newest segments"


@dataclass
class _Removed:
    """Objects that left the playlist, to be fetched once at a random time while still due."""

    rng: random.Random
    due: list[tuple[float, float, str]] = field(default_factory=list)  # (check at, until, uri)
    listed: dict[str, float] = field(default_factory=dict)  # uri -> how long it stays due
    checked: int = 0

    def update(self, pl: MediaPlaylist, now: float) -> None:
        """Note what `pl` (a full playlist) no longer lists, with the period it stays available:
        a segment its duration + the playlist's (rfc8216bis §6.2.2), a part 3 × TD (SPEC §2)."""
        total_s = sum(s.duration_us for s in pl.segments) / 1e6
        now_listed: dict[str, float] = {}
        for seg in pl.segments:
            if not seg.gap:  # a gap has no media; the server may 404 it
                now_listed[seg.uri] = seg.duration_us / 1e6 + total_s
            for p in seg.parts:
                now_listed[p.uri] = 3 * TD_US / 1e6
        for p in pl.pending_parts:
            now_listed[p.uri] = 3 * TD_US / 1e6
        for uri, period in self.listed.items():
            if uri not in now_listed:
                # Leave a margin for the time the playlist took to reach us through the tier.
                until = now + period - 1.0
                self.due.append((now + self.rng.uniform(0, period - 1.0), until, uri))
        self.listed = now_listed

    def check(self, client: httpx.Client, url_of: Callable[[str], str], now: float) -> None:
        for item in [d for d in self.due if d[0] <= now]:
            self.due.remove(item)
            at, until, uri = item
            r = client.get(url_of(uri))
            if time.monotonic() < until:
                assert r.status_code == 200, f"{uri} removed, asked {now - at:.1f} s late: {r}"
                self.checked += 1


def _follow_ll(
    base: str, event: str, seconds: float, seed: int, *, origin: bool
) -> tuple[int, int]:
    """Follow v360 at `base` for `seconds` as an LL-HLS client does (the hinted part, then
    the playlist blocked on it) and check every SPEC §2 rule on what it saw, and that
    removed segments and parts stay downloadable. Returns (playlists seen, removals checked)."""
    seen: list[MediaPlaylist] = []
    part_bytes: dict[str, bytes] = {}
    report_lag: list[int] = []
    removed = _Removed(random.Random(seed))

    def url_of(name: str, rendition: str = "v360") -> str:
        return f"{base}/live/{event}/{rendition}/{name}"

    with httpx.Client(timeout=15) as client:
        url = url_of("index.m3u8")
        pl = parse_media_playlist(client.get(url).raise_for_status().text)
        removed.update(pl, time.monotonic())
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            _check_rules(pl)
            hint = pl.preload_hints[0].uri
            m = _PART_URI.match(hint)
            assert m is not None, hint
            msn, index = int(m[1]), int(m[2])
            # The hinted part is requestable at once and served whole when complete.
            pr = client.get(url_of(hint))
            assert pr.status_code == 200, (hint, pr.text)
            # Held by the origin (`ht=`), unless this client fell behind and it was complete
            # already; an edge names itself instead.
            cmsd = pr.headers.get("cmsd-static", "")
            assert (cmsd.startswith("ht=") or not cmsd) if origin else 'n="cdn-a"' in cmsd
            part_bytes[hint] = pr.content
            r = client.get(f"{url}?_HLS_msn={msn}&_HLS_part={index}")
            assert r.status_code == 200, r.text
            assert r.headers["cache-control"] == "public, max-age=12"  # ≈ 6 × TD
            if origin:
                assert r.headers["cmsd-static"].startswith("ht=")
            new = parse_media_playlist(r.text)
            # The hint named exactly the next part.
            assert hint in _all_part_uris(new), (hint, _all_part_uris(new)[-3:])
            assert _position(new) >= msn * PARTS + index
            # Rendition reports name every other rendition, and are current.
            reported = {rr.uri.split("/")[1]: rr for rr in new.rendition_reports}
            assert set(reported) == {"v180", "a128"}
            for rid, rr in reported.items():
                assert rr.last_part is not None
                # Blocking on the reported part: answered at once if the report is true (a
                # plain reload may be a cached copy older than the report, through an edge).
                q = f"?_HLS_msn={rr.last_msn}&_HLS_part={rr.last_part}"
                other = parse_media_playlist(client.get(url_of("index.m3u8", rid) + q).text)
                lag = _position(other) - (rr.last_msn * PARTS + rr.last_part)
                assert lag >= 0, (rid, rr)
                report_lag.append(lag)
            # Listed parts this client skipped past (it fell behind), fetched as a player would.
            for uri in _all_part_uris(new)[-2 * PARTS :]:
                if uri not in part_bytes:
                    part_bytes[uri] = client.get(url_of(uri)).raise_for_status().content
            seen.append(new)
            removed.update(new, time.monotonic())
            removed.check(client, url_of, time.monotonic())
            pl = new
        # Every video segment starts at its epoch time, and parts concatenate to the segment.
        for p in seen:
            first = p.media_sequence + p.skipped_segments
            for i, seg in enumerate(p.segments):
                assert seg.program_date_time_ms == (first + i) * 2000
        whole = [
            s for s in seen[-1].segments if s.parts and all(p.uri in part_bytes for p in s.parts)
        ]
        assert whole, "no segment had all its parts fetched"
        seg = whole[0]
        data = client.get(url_of(seg.uri)).raise_for_status().content
        assert data == b"".join(part_bytes[p.uri] for p in seg.parts)
    # A report may trail the live rendition by the part that landed in between, not more.
    assert max(report_lag) <= 2, report_lag
    return len(seen), removed.checked


def test_ll_conformance_over_a_live_minute(stack: RunningStack) -> None:
    """A minute of LL-HLS as a client sees it at the origin follows every SPEC §2 rule."""
    seen, checked = _follow_ll(stack.base_url, stack.event, 60, seed=1, origin=True)
    # About two playlists a second when the client keeps up; a busy machine slows the client,
    # not the rules, so only a floor of one per segment is asserted.
    assert seen >= 30, seen
    assert checked >= 10, checked


def test_ll_conformance_through_shield_and_edge(stack: RunningStack) -> None:
    """40 s of LL-HLS read through edge cdn-a (→ shield → origin) follows the same rules:
    removed segments and parts stay downloadable there, held reloads and hints pass through."""
    seen, checked = _follow_ll(stack.edges["cdn-a"], stack.event, 40, seed=2, origin=False)
    assert seen >= 20, seen
    assert checked >= 10, checked


def test_delta_update_equals_full_minus_skipped(stack: RunningStack) -> None:
    """A delta update lists exactly the full playlist's segments after the skipped ones."""
    with httpx.Client(timeout=15) as client:
        url = _url(stack, "v360")
        full = parse_media_playlist(client.get(url).text)
        hint = _PART_URI.match(full.preload_hints[0].uri)
        assert hint is not None
        q = f"_HLS_msn={hint[1]}&_HLS_part={hint[2]}"
        # Both answers released by the same part: the same publication.
        full = parse_media_playlist(client.get(f"{url}?{q}").text)
        delta = parse_media_playlist(client.get(f"{url}?{q}&_HLS_skip=YES").text)
    if _position(delta) != _position(full):
        pytest.fail("a part landed between the two requests; rerun")
    n = delta.skipped_segments
    assert n > 0
    assert delta.media_sequence == full.media_sequence
    key = [(s.uri, s.duration_us, s.program_date_time_ms, s.parts) for s in full.segments[n:]]
    assert [(s.uri, s.duration_us, s.program_date_time_ms, s.parts) for s in delta.segments] == key
    assert delta.pending_parts == full.pending_parts
    assert delta.preload_hints == full.preload_hints


def test_bad_requests_are_answered_at_once(stack: RunningStack) -> None:
    """Impossible blocking requests get 400 at once; an unknown rendition 404."""
    with httpx.Client(timeout=5) as client:
        url = _url(stack, "v360")
        last = parse_media_playlist(client.get(url).text).last_msn
        for q in ("_HLS_part=0", f"_HLS_msn={last + 3}", "_HLS_msn=x", "_HLS_msn=-1"):
            r = client.get(f"{url}?{q}")
            assert r.status_code == 400, q
            assert r.headers["cache-control"] == "max-age=2"
        assert client.get(_url(stack, "nope") + f"?_HLS_msn={last}").status_code == 404


def _play(stack: RunningStack, tmp_path: Path, query: str, seconds: float) -> list[dict[str, Any]]:
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (make setup installs it as root)")
    stack.wait_window()
    with player_page(f"{stack.base_url}/player/?{query}", tmp_path / "profile") as page:
        samples = sample_stats(page, seconds)
        page.screenshot(path=str(tmp_path / "player.png"))
    return samples


@pytest.mark.browser
def test_hlsjs_low_latency_plays_within_three_seconds(stack: RunningStack, tmp_path: Path) -> None:
    """hls.js in low-latency mode plays ≥ 30 s without a stall, under 3 s behind the venue."""
    samples = _play(stack, tmp_path, f"src=/live/{stack.event}/master.m3u8&ll=1", 34)
    first, last = samples[0], samples[-1]
    assert not last["fatal"], last["errors"]
    assert last["lowLatency"] is True
    assert last["currentTime"] - first["currentTime"] >= 30, (first, last)
    assert last["stalls"] == 0, timeline(samples)
    latencies = [s["latencySec"] for s in samples if s["latencySec"] is not None]
    assert latencies, "player reported no live latency"
    assert max(latencies[len(latencies) // 2 :]) < 3, latencies


@pytest.mark.browser
def test_dash_player_plays_the_mpd(stack: RunningStack, tmp_path: Path) -> None:
    """dash.js plays the live MPD (same CMAF segments) ≥ 20 s without a stall."""
    samples = _play(stack, tmp_path, f"dash=1&src=/live/{stack.event}/manifest.mpd", 24)
    first, last = samples[0], samples[-1]
    assert last["mode"] == "dash.js"
    assert not last["fatal"], last["errors"]
    assert last["currentTime"] - first["currentTime"] >= 20, (first, last)
    assert last["stalls"] == 0, timeline(samples)
    latencies = [s["latencySec"] for s in samples if s["latencySec"] is not None]
    assert latencies, "dash.js reported no live latency"
    assert max(latencies) < 20, latencies


@pytest.mark.browser
@pytest.mark.parametrize("player", PLAYERS)
def test_stock_player_plays_ll_through_an_edge(
    stack: RunningStack, tmp_path: Path, player: StockPlayer
) -> None:
    """Stock hls.js / Shaka in low-latency mode (nothing else set), on a page from another
    origin, play the LL stream through edge cdn-a near the live edge, without a fatal error
    (a page on another origin needs CORS on every answer of the tier)."""
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (make setup installs it as root)")
    with StockPages() as pages:
        if pages.missing():
            pytest.skip(f"player libraries not vendored (make setup): {pages.missing()}")
        stack.wait_window()
        with stock_player(pages.url(player, stack.edge_master_url()), tmp_path / "p") as page:
            samples = sample(page, 30)
    first, last = samples[0], samples[-1]
    assert not [e for e in last["errors"] if e.startswith("fatal")], last["errors"]
    # Behaviour, not speed (the 2 s goal is measured by bench/latency.py --stock): it keeps
    # playing, and near the live edge rather than from the start of the 24 s window.
    assert last["currentTime"] - first["currentTime"] >= 15, (first, last)
    latencies = [s["latencySec"] for s in samples[len(samples) // 2 :] if s["latencySec"]]
    assert latencies, "the player reported no playhead date"
    assert statistics.median(latencies) < 12, latencies


def test_stalled_encoder_gives_503_within_three_target_durations(stack: RunningStack) -> None:
    """When parts stop coming, held playlist and part requests end in 503 within 3 × TD."""
    pid = stack.transcoder_pid()
    assert pid is not None
    with httpx.Client(timeout=20) as client:
        url = _url(stack, "v360")
        pl = parse_media_playlist(client.get(url).text)
        hint = pl.preload_hints[0].uri
        m = _PART_URI.match(hint)
        assert m is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            # Skip past the part that may already be in flight.
            after = f"{int(m[1]) + 1}.0.m4s"
            t0 = time.monotonic()
            r = client.get(f"{url}?_HLS_msn={int(m[1]) + 1}&_HLS_part=0")
            held = time.monotonic() - t0
            assert r.status_code == 503, r.text
            assert held < 3 * 2 + 1.5
            r = client.get(_url(stack, "v360", after))
            assert r.status_code in (404, 503)
        finally:
            # The pipeline may have replaced the stalled encoder already.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
