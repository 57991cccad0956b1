"""Sans-IO telemetry cores: CTA-2066 session figures, sketch merging, admission, alerts, storage."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mainevent.common.telemetry import AccessRecord
from mainevent.control.telemetry.aggregate import Aggregator, ClosedWindow
from mainevent.control.telemetry.alerts import AlertEngine, AlertRule
from mainevent.control.telemetry.events import EventTiming, PlayerReport, ReportKind
from mainevent.control.telemetry.intake import Intake, Verdict
from mainevent.control.telemetry.model import AlertState, Dims, QoeAggregate, QoePoint
from mainevent.control.telemetry.sketch import RELATIVE_ACCURACY, Sketch
from mainevent.control.telemetry.store import Retention, TelemetryStore

T0 = 1_800_000_000.0
DIMS = Dims("final", "eu", "cdn-a", "isp1", "desktop")
TIMING = {"final": EventTiming(2000, 500)}


def rep(sid: str, sn: int, kind: ReportKind, at: float, **kw: object) -> PlayerReport:
    return PlayerReport(sid=sid, sn=sn, kind=kind, ts_ms=at * 1000, **kw)  # type: ignore[arg-type]


def merged(windows: list[ClosedWindow]) -> QoeAggregate:
    acc = QoeAggregate()
    for w in windows:
        acc.merge(w.agg)
    return acc


def test_merged_sketches_stay_within_the_relative_error_bound() -> None:
    """Quantiles of sketches merged across windows/collectors are within DDSketch's alpha of exact."""
    rng = random.Random(7)
    values = [rng.lognormvariate(7, 1.2) for _ in range(20_000)]
    parts = [Sketch() for _ in range(8)]
    for i, v in enumerate(values):
        parts[i % 8].add(v)
    total = Sketch()
    for p in parts:
        total.merge(Sketch.from_json(p.to_json()))  # through storage, as the store does
    values.sort()
    for q in (0.5, 0.9, 0.95, 0.99):
        exact = values[int(q * (len(values) - 1))]
        got = total.quantile(q)
        assert got is not None
        assert abs(got - exact) <= RELATIVE_ACCURACY * exact + 1e-9, (q, got, exact)
    assert total.count == len(values)


def test_a_session_yields_startup_played_stalled_bitrate_and_latency() -> None:
    """Start-up ends at the first sta=p; stalls count apart from play; bitrate and latency follow."""
    agg = Aggregator(TIMING)
    t = T0
    agg.player(DIMS, rep("s", 0, ReportKind.TIME_INTERVAL, t, sta="s"), 1, t)
    agg.player(
        DIMS, rep("s", 1, ReportKind.PLAY_STATE, t + 2, sta="p", bitrate_kbps=2000), 1, t + 2
    )
    agg.player(DIMS, rep("s", 2, ReportKind.PLAY_STATE, t + 6, sta="r"), 1, t + 6)
    agg.player(DIMS, rep("s", 3, ReportKind.PLAY_STATE, t + 7, sta="p"), 1, t + 7)
    agg.player(
        DIMS, rep("s", 4, ReportKind.TIME_INTERVAL, t + 9, sta="p", latency_ms=4000.0), 1, t + 9
    )
    out = merged(agg.tick(t + 10))
    f = out.figures(T0, 10)
    assert f.play_attempts == 1
    assert f.started_sessions == 1
    assert f.video_start_time_p50_ms is not None
    assert abs(f.video_start_time_p50_ms - 2000) <= 20
    assert f.played_s == 6.0  # 2→6 and 7→9
    assert f.rebuffer_ratio is not None
    assert abs(f.rebuffer_ratio - 1 / 7) < 1e-9
    assert f.rebuffer_count_per_hour is not None
    assert abs(f.rebuffer_count_per_hour - 3600 / 7) < 1e-6
    assert f.average_bitrate_kbps == 2000
    assert f.live_latency_p50_ms is not None
    assert abs(f.live_latency_p50_ms - 4000) <= 40


def test_latency_from_hls_js_response_records_uses_the_epoch_grid() -> None:
    """Without ltc: latency = previous media response end − (PDT of the fetched part − bl)."""
    agg = Aggregator(TIMING)
    msn = int(T0 // 2) + 10
    at = msn * 2 + 3.0
    base = f"http://127.0.0.1:9/t/tok/live/final/v720/{msn}"
    agg.player(DIMS, rep("h", 0, ReportKind.TIME_INTERVAL, at - 3, sta="s"), 1, at - 3)
    agg.player(DIMS, rep("h", 1, ReportKind.TIME_INTERVAL, at - 1, sta="p"), 1, at - 1)
    for sn, (part, t) in enumerate(((0, at), (1, at + 0.5)), start=2):
        r = rep(
            "h",
            sn,
            ReportKind.RESPONSE_RECEIVED,
            t,
            sta="p",
            url=f"{base}.{part}.m4s",
            buffer_ms=1500.0,
            ttlb_ms=30.0,
        )
        agg.player(DIMS, r, 1, t)
    f = merged(agg.tick(at + 2)).figures(T0, 1)
    # The first response only marks when the buffer was appended; the second gives a sample.
    expected = (at * 1000 + 30) - (msn * 2000 + 500) + 1500
    assert f.live_latency_p50_ms is not None
    assert abs(f.live_latency_p50_ms - expected) <= expected * RELATIVE_ACCURACY
    view = agg.session("h")
    assert view is not None
    assert view.live_latency_ms == expected


def test_failures_and_exits_follow_cta_2066() -> None:
    """Fatal before start = VSF, fatal after = VPF, silence or quit before start = EBVS."""
    agg = Aggregator(TIMING, session_timeout_s=5)
    t = T0
    for sid in ("vsf", "vpf", "quit", "silent"):
        agg.player(DIMS, rep(sid, 0, ReportKind.TIME_INTERVAL, t, sta="s"), 1, t)
    agg.player(
        DIMS, rep("vsf", 1, ReportKind.ERROR, t + 1, sta="f", error="manifestLoadError"), 1, t + 1
    )
    agg.player(DIMS, rep("vpf", 1, ReportKind.PLAY_STATE, t + 1, sta="p"), 1, t + 1)
    agg.player(DIMS, rep("quit", 1, ReportKind.PLAY_STATE, t + 1, sta="q"), 1, t + 1)
    agg.player(
        DIMS, rep("vpf", 2, ReportKind.ERROR, t + 2, sta="f", error="bufferStalledError"), 1, t + 2
    )
    windows = agg.tick(t + 3)
    windows += agg.tick(t + 7)  # "silent" expired after 5 s without a report...
    windows += agg.tick(t + 8)  # ...counted in the window open when it expired
    f = merged(windows).figures(T0, 7)
    assert f.play_attempts == 4
    assert f.video_start_failures == 1
    assert f.video_playback_failures == 1
    assert f.exits_before_video_start == 2
    assert f.player_errors == 2
    assert agg.stats().sessions == 0


def test_concurrency_counts_live_sessions_every_second() -> None:
    """A session alive through 3 closed seconds adds 1 concurrent session to each of them."""
    agg = Aggregator(TIMING, session_timeout_s=10)
    agg.player(DIMS, rep("a", 0, ReportKind.TIME_INTERVAL, T0, sta="p"), 1, T0)
    agg.player(DIMS, rep("b", 0, ReportKind.TIME_INTERVAL, T0, sta="p"), 1, T0 + 0.5)
    windows: list[ClosedWindow] = []
    for s in range(1, 4):
        agg.player(DIMS, rep("a", s, ReportKind.TIME_INTERVAL, T0 + s, sta="p"), 1, T0 + s)
        windows += agg.tick(T0 + s + 0.01)
    per_second = {w.start: w.agg.session_seconds for w in windows}
    assert per_second == {int(T0): 2, int(T0) + 1: 2, int(T0) + 2: 2}


def test_sessions_reporting_again_before_tick_still_count_in_the_closed_second() -> None:
    """10 live sessions that report again at +1.05 s are 10 concurrent sessions in second 0."""
    agg = Aggregator(TIMING, session_timeout_s=10)
    for i in range(10):
        agg.player(DIMS, rep(f"s{i}", 0, ReportKind.TIME_INTERVAL, T0, sta="p"), 1, T0 + 0.2)
    for i in range(10):  # the first of these closes window 0; tick() has not run yet
        agg.player(DIMS, rep(f"s{i}", 1, ReportKind.TIME_INTERVAL, T0 + 1, sta="p"), 1, T0 + 1.05)
    partial = {w.start: w.agg.session_seconds for w in agg.open_windows()}
    windows = agg.tick(T0 + 1.1)
    assert {w.start: w.agg.session_seconds for w in windows} == {int(T0): 10}
    assert partial == {int(T0): 10, int(T0) + 1: 10}  # a partial query agrees
    assert {w.start: w.agg.session_seconds for w in agg.tick(T0 + 2.01)} == {int(T0) + 1: 10}


def test_seconds_without_a_tick_still_count_live_sessions() -> None:
    """A late tick: each second between a session's reports counts it, up to its timeout."""
    agg = Aggregator(TIMING, session_timeout_s=3)
    agg.player(DIMS, rep("a", 0, ReportKind.TIME_INTERVAL, T0, sta="p"), 1, T0 + 0.5)
    agg.player(DIMS, rep("b", 0, ReportKind.TIME_INTERVAL, T0, sta="p"), 1, T0 + 0.6)
    agg.player(DIMS, rep("a", 1, ReportKind.TIME_INTERVAL, T0 + 2, sta="p"), 1, T0 + 2.5)
    per_second = {w.start - int(T0): w.agg.session_seconds for w in agg.tick(T0 + 2.6)}
    assert per_second == {0: 2, 1: 2}
    later = {w.start - int(T0): w.agg.session_seconds for w in agg.tick(T0 + 9.2)}
    # b is alive until 3 s after its report (0.6 + 3 ≥ end of second 2, < end of second 3);
    # a until 2.5 + 3: seconds 2 to 4, then nobody.
    assert later == {2: 2, 3: 1, 4: 1}


def test_access_records_give_status_ttfb_cache_and_origin_fetches() -> None:
    """Edge records count errors by status, TTFB percentiles, hit ratio and shield origin fetches."""
    agg = Aggregator(TIMING)

    def rec(cdn: str, status: int, cache: str, ttfb: float) -> AccessRecord:
        return AccessRecord(
            T0,
            cdn,
            "/live/final/v720/1.m4s",
            status,
            100,
            ttfb,
            cache,
            "127.0.0.2",
            None,
            None,
            None,
        )

    for i in range(8):
        agg.access(DIMS, rec("cdn-a", 200, "HIT", 2 + i), T0)
    agg.access(DIMS, rec("cdn-a", 503, "FAULT", 50), T0)
    agg.access(DIMS, rec("cdn-a", 200, "MISS", 40), T0)
    shield = Dims("final", "unknown", "shield")
    agg.access(shield, rec("shield", 200, "MISS", 30), T0)
    agg.access(shield, rec("shield", 200, "COLLAPSED", 30), T0)
    ws = agg.tick(T0 + 1)
    edge = merged([w for w in ws if w.dims == DIMS]).figures(T0, 1)
    assert edge.requests == 10
    assert edge.error_rate == 0.1
    assert edge.errors_by_status == {503: 1}
    assert edge.error_rate_by_status == {503: 0.1}
    assert edge.cache_hit_ratio == 8 / 9
    assert edge.cdn_ttfb_p95_ms is not None
    assert edge.cdn_ttfb_p95_ms >= 40 * (1 - RELATIVE_ACCURACY)
    assert merged([w for w in ws if w.dims == shield]).origin_fetches == 1


def test_duplicates_are_dropped_by_session_and_sequence_number() -> None:
    """A retransmitted batch is recognised record by record; new numbers still pass."""
    intake = Intake(
        capacity_per_s=1e6, keep_capacity_per_s=1e6, session_rate=1e6, session_burst=1e6
    )
    batch = [rep("s", n, ReportKind.TIME_INTERVAL, T0, sta="p") for n in range(5)]
    first = intake.admit(batch, T0)
    assert set(first.verdicts) == {Verdict.ACCEPT}
    again = intake.admit([*batch[2:], rep("s", 5, ReportKind.TIME_INTERVAL, T0, sta="p")], T0)
    assert again.verdicts == (Verdict.DUPLICATE,) * 3 + (Verdict.ACCEPT,)
    # Another session may use the same numbers.
    assert intake.admit([rep("t", 0, ReportKind.TIME_INTERVAL, T0)], T0).verdicts == (
        Verdict.ACCEPT,
    )
    # Far older than the 64-number window: treated as a retry.
    for n in range(6, 100):
        intake.admit([rep("s", n, ReportKind.TIME_INTERVAL, T0)], T0)
    assert intake.admit([rep("s", 3, ReportKind.TIME_INTERVAL, T0)], T0).verdicts == (
        Verdict.DUPLICATE,
    )


def test_a_report_repeated_within_one_batch_is_a_duplicate() -> None:
    """The same sid+sn twice in one POST is taken once and counted as a duplicate."""
    intake = Intake(
        capacity_per_s=1e6, keep_capacity_per_s=1e6, session_rate=1e6, session_burst=1e6
    )
    hb = ReportKind.TIME_INTERVAL
    batch = [
        rep("s", 1, hb, T0, sta="p"),
        rep("t", 1, hb, T0, sta="p"),
        rep("s", 2, hb, T0, sta="p"),
        rep("s", 1, hb, T0, sta="p"),  # a repeat, below the batch's high-water mark
        rep("s", 2, hb, T0, sta="p"),  # a repeat, at it
        rep("t", 0, hb, T0, sta="p"),  # out of order but new: accepted
        rep("t", 0, hb, T0, sta="p"),  # ...and its repeat
        rep("u", 7, hb, T0, sta="p"),
    ]
    a = intake.admit(batch, T0)
    accept, dup = Verdict.ACCEPT, Verdict.DUPLICATE
    assert a.verdicts == (accept, accept, accept, dup, dup, accept, dup, accept)
    assert not a.all_accepted
    assert [w for w, v in zip(a.weights, a.verdicts, strict=True) if v is dup] == [0.0] * 3
    stats = intake.stats()
    assert (stats.accepted, stats.duplicates) == (5, 3)
    # The repeats were never taken: a retransmission of the batch is all duplicates.
    assert set(intake.admit(batch, T0 + 1).verdicts) == {dup}
    # Batches without repeats (heartbeats of one session in order) stay on the fast path.
    fresh = intake.admit([rep("s", n, hb, T0 + 2, sta="p") for n in range(3, 8)], T0 + 2)
    assert fresh.all_accepted


def test_per_session_rate_limit_refuses_the_whole_batch() -> None:
    """A session over its rate gets Retry-After and nothing of its batch is used."""
    intake = Intake(capacity_per_s=1e6, keep_capacity_per_s=1e6, session_rate=5, session_burst=10)
    ok = intake.admit([rep("s", n, ReportKind.TIME_INTERVAL, T0) for n in range(10)], T0)
    assert len(ok.verdicts) == 10
    refused = intake.admit([rep("s", 10, ReportKind.TIME_INTERVAL, T0)], T0)
    assert refused.retry_after_s >= 1
    assert refused.reason == "session_rate"
    assert not refused.verdicts
    # The refused number was not marked: its retry is accepted later.
    later = intake.admit([rep("s", 10, ReportKind.TIME_INTERVAL, T0 + 1)], T0 + 1)
    assert later.verdicts == (Verdict.ACCEPT,)


_EU = Dims("final", "eu", "cdn-a", "isp1", "desktop")
_US = Dims("final", "us", "cdn-b", "isp2", "mobile")
_KEEP_TAGS = ("first", "start", "stall", "resume", "fail", "error", "end")


def _viewers(n: int, seed: int) -> list[tuple[float, Dims, list[tuple[str, PlayerReport]]]]:
    """Batches (arrival, series, tagged reports) of ``n`` viewers, as hls.js posts them: a
    first report (sn=0, sta=s), start (ps sta=p), heartbeats every 0.5 s with latency, stalls
    (ps sta=r, then ps sta=p), errors (e=e), some failing to start (sta=f), ended (ps sta=e).
    The two series differ in latency, bitrate, stalls and failures."""
    rng = random.Random(seed)
    batches = []
    hb, ps = ReportKind.TIME_INTERVAL, ReportKind.PLAY_STATE
    for v in range(n):
        dims = _EU if v % 2 else _US
        eu = dims is _EU
        sid = f"v{v}"
        t = T0 + rng.uniform(0, 30)
        end = t + rng.uniform(8, 14)
        out: list[tuple[float, str, PlayerReport]] = []
        sn = iter(range(1_000_000))

        def add(at: float, tag: str, kind: ReportKind, **kw: object) -> None:
            out.append((at, tag, rep(sid, next(sn), kind, at, **kw)))  # noqa: B023

        add(t, "first", hb, sta="s")
        t += rng.uniform(0.5, 2.5)
        if rng.random() < (0.02 if eu else 0.06):
            add(t, "fail", ReportKind.ERROR, sta="f", error="MEDIA_ERR")
        else:
            bitrate = 2500.0 if eu else 1200.0
            add(t, "start", ps, sta="p", bitrate_kbps=bitrate)
            while t < end:
                t += 0.5
                if rng.random() < (0.01 if eu else 0.04):
                    add(t, "stall", ps, sta="r")
                    t += rng.uniform(0.3, 1.5)
                    add(t, "resume", ps, sta="p")
                elif rng.random() < 0.005:
                    add(t, "error", ReportKind.ERROR, sta="p", error="FRAG_LOAD")
                else:
                    lat = rng.gauss(3000, 400) if eu else rng.gauss(6000, 1200)
                    add(t, "heartbeat", hb, sta="p", latency_ms=lat)
            add(t, "end", ps, sta="e")
        # One POST per viewer per second (hls.js batches its event-mode reports).
        per_post: dict[int, list[tuple[str, PlayerReport]]] = {}
        for at, tag, r in out:
            per_post.setdefault(int((at - T0) * 1), []).append((tag, r))
        for k, tagged in per_post.items():
            batches.append((T0 + k + 0.999 * rng.random(), dims, tagged))
    batches.sort(key=lambda b: b[0])
    return batches


def test_three_times_capacity_keeps_every_startup_and_error_and_reweights_heartbeats() -> None:
    """At 3x capacity every start-up, stall, failure, error and end report is kept; heartbeats
    are sampled with the rate recorded, and each series' figures match an unshed run."""
    batches = _viewers(3000, seed=1)
    offered = sum(len(b[2]) for b in batches)
    seconds = int(max(b[0] for b in batches) - T0) + 1
    cap = offered / seconds / 3  # a third of the mean offered rate: 3x capacity

    def run(
        capacity: float,
    ) -> tuple[dict[Dims, QoeAggregate], Intake, dict[str, list[int]]]:
        intake = Intake(
            capacity_per_s=capacity,
            keep_capacity_per_s=1e9,
            session_rate=1e6,
            session_burst=1e6,
            max_sessions=2000,  # fewer than the 3000 viewers: the table is bounded
        )
        agg = Aggregator(TIMING, max_sessions=2500, max_series=100)
        tally: dict[str, list[int]] = {tag: [0, 0] for tag in (*_KEEP_TAGS, "heartbeat")}
        per: dict[Dims, QoeAggregate] = {}
        weights: dict[Dims, float] = {}
        second = int(T0)
        peak_sessions = peak_intake = 0
        for at, dims, tagged in batches:
            while at >= second + 1:
                second += 1
                for w in agg.tick(second):
                    per.setdefault(w.dims, QoeAggregate()).merge(w.agg)
            reports = [r for _, r in tagged]
            adm = intake.admit(reports, at)
            assert not adm.retry_after_s
            for (tag, r), verdict, weight in zip(tagged, adm.verdicts, adm.weights, strict=True):
                tally[tag][0] += 1
                if verdict is Verdict.ACCEPT:
                    tally[tag][1] += 1
                    agg.player(dims, r, weight, at)
                    if tag == "heartbeat":
                        weights[dims] = weights.get(dims, 0.0) + weight
                else:
                    assert verdict is Verdict.SHED
                    agg.shed(dims, at, r.sid)
            peak_sessions = max(peak_sessions, agg.stats().sessions)
            peak_intake = max(peak_intake, intake.stats().sessions)
        for w in agg.tick(second + 30):
            per.setdefault(w.dims, QoeAggregate()).merge(w.agg)
        assert peak_sessions <= 2500
        assert peak_intake <= 2000
        assert agg.stats().evicted_sessions == 0
        assert agg.stats().overflow_series == 0
        # The kept heartbeats' weights add up to what each series offered (within 5 %).
        for d, a in per.items():
            assert abs(weights[d] - a.heartbeats_offered) <= 0.05 * a.heartbeats_offered, d
        return per, intake, tally

    shed_run, _, tally = run(cap)
    full_run, full_intake, _ = run(1e9)
    assert full_intake.stats().shed == 0
    for tag in _KEEP_TAGS:
        assert tally[tag][1] == tally[tag][0] > 0, tag  # 100 % of them kept
    hb_offered, hb_kept = tally["heartbeat"]
    assert 0.15 < hb_kept / hb_offered < 0.5  # heavily sampled at 3x capacity
    assert set(shed_run) == set(full_run) == {_EU, _US}
    for d in (_EU, _US):
        shed_f = shed_run[d].figures(T0, seconds)
        full_f = full_run[d].figures(T0, seconds)
        assert full_f.heartbeat_sample_rate == 1.0
        assert shed_f.heartbeat_sample_rate == pytest.approx(
            shed_run[d].heartbeats_kept / full_run[d].heartbeats_offered
        )
        assert shed_run[d].heartbeats_offered == full_run[d].heartbeats_offered
        # Counted from kept reports: exact.
        for name in (
            "play_attempts",
            "started_sessions",
            "video_start_failures",
            "video_playback_failures",
            "player_errors",
        ):
            assert getattr(shed_f, name) == getattr(full_f, name), (d, name)
        assert shed_f.video_start_time_p50_ms == full_f.video_start_time_p50_ms
        # Integrated between kept observations (a session ends with a kept report): exact
        # up to float sums.
        assert shed_f.played_s == pytest.approx(full_f.played_s, rel=1e-9)
        assert shed_f.rebuffer_ratio == pytest.approx(full_f.rebuffer_ratio, rel=1e-9)
        assert shed_f.average_bitrate_kbps == pytest.approx(full_f.average_bitrate_kbps, rel=1e-9)
        assert shed_f.concurrent_sessions == pytest.approx(full_f.concurrent_sessions, rel=1e-9)
        # Sampled: latency quantiles within 2 % (sampling noise plus the sketch's 1 %), and the
        # weighted sample count within 5 % of the unshed one.
        for q in ("live_latency_p50_ms", "live_latency_p95_ms"):
            got, want = getattr(shed_f, q), getattr(full_f, q)
            assert got == pytest.approx(want, rel=0.02), (d, q)
        assert shed_run[d].latency.count == pytest.approx(full_run[d].latency.count, rel=0.05)
    # The two series really differ (a check that the comparison can tell them apart).
    eu, us = (shed_run[d].figures(T0, seconds) for d in (_EU, _US))
    assert eu.rebuffer_ratio is not None
    assert us.rebuffer_ratio is not None
    assert us.rebuffer_ratio > 2 * eu.rebuffer_ratio


def test_past_the_keep_budget_a_batch_is_refused_whole_with_retry_after() -> None:
    """Even start-up/error reports beyond their budget get 429 (the player retries them)."""
    intake = Intake(capacity_per_s=10, keep_capacity_per_s=10, session_rate=1e6, session_burst=1e6)
    burst = [rep(f"s{i}", 0, ReportKind.TIME_INTERVAL, T0) for i in range(5)]  # sn 0 = start-up
    assert not intake.admit(burst, T0).retry_after_s
    refused = intake.admit([rep(f"x{i}", 0, ReportKind.TIME_INTERVAL, T0) for i in range(5)], T0)
    assert refused.retry_after_s >= 1
    assert refused.reason == "overloaded"


def test_alert_fires_after_its_window_and_resolves_when_the_metric_recovers() -> None:
    """A rebuffering rule on one CDN+region fires once over threshold and resolves after."""
    rule = AlertRule("rebuf", "rebuffer_ratio", 0.02, for_s=3, where=(("cdn", "cdn-b"),))
    eng = AlertEngine([rule])
    bad = Dims("final", "eu", "cdn-b")
    good = Dims("final", "eu", "cdn-a")

    def win(t: int, dims: Dims, stalled: float) -> ClosedWindow:
        a = QoeAggregate(played_ms=1000 - stalled, stalled_ms=stalled)
        return ClosedWindow(t, dims, a)

    events = []
    t = int(T0)
    for s in range(5):
        events += eng.handle([win(t + s, bad, 0), win(t + s, good, 500)], t + s + 1)
    assert events == []
    for s in range(5, 8):
        events += eng.handle([win(t + s, bad, 300)], t + s + 1)
    assert [e.state for e in events] == [AlertState.FIRING]
    assert events[0].labels == {"event": "final", "region": "eu", "cdn": "cdn-b"}
    assert len(eng.firing()) == 1
    for s in range(8, 14):
        events += eng.handle([win(t + s, bad, 0)], t + s + 1)
    assert [e.state for e in events] == [AlertState.FIRING, AlertState.RESOLVED]
    assert eng.firing() == []


def test_store_downsamples_without_changing_the_totals(tmp_path: Path) -> None:
    """1 s windows fold into 10 s and 1 min rows whose sums and quantiles agree with the 1 s data."""
    store = TelemetryStore(tmp_path / "t.db", Retention(fine_s=3600, event_s=86400))
    rng = random.Random(3)
    t0 = int(T0) - int(T0) % 60
    all_startups: list[float] = []
    for s in range(120):
        a = QoeAggregate(played_ms=900, stalled_ms=100, play_attempts=1, session_seconds=3)
        v = rng.uniform(500, 5000)
        all_startups.append(v)
        a.startup.add(v)
        store.write([ClosedWindow(t0 + s, DIMS, a)])
    now = t0 + 130
    for step, res in ((1, 1), (10, 10), (60, 60)):
        series = store.query("final", ["cdn"], t0, t0 + 120, step, now)
        assert store.resolution_for(t0, step, now) == res
        (one,) = series
        assert len(one.points) == 120 // step
        assert sum(p.play_attempts for p in one.points) == 120
        assert all(abs(p.concurrent_sessions - 3) < 1e-9 for p in one.points)
        assert all(
            p.rebuffer_ratio is not None and abs(p.rebuffer_ratio - 0.1) < 1e-9 for p in one.points
        )
    (whole,) = store.query("final", [], t0, t0 + 120, 120, now)
    all_startups.sort()
    p95 = whole.points[0].video_start_time_p95_ms
    assert p95 is not None
    assert abs(p95 - all_startups[int(0.95 * 119)]) <= 0.011 * p95
    # Retention: 1 s rows past the hour are deleted, the coarser ones stay.
    store.expire(t0 + 3600 + 200)
    assert store.query("final", [], t0, t0 + 120, 1, t0 + 3600 + 200)[0].points[0].step_s == 10
    assert store.resolution_for(t0, 1, t0 + 3600 + 200) == 10
    store.close()


def test_a_step_finer_than_the_stored_rows_does_not_inflate_the_figures(tmp_path: Path) -> None:
    """Past the 1 s and then the 10 s retention, 3 sessions stay 3 and attempts keep their sum."""
    store = TelemetryStore(tmp_path / "t.db", Retention(fine_s=3600, event_s=86400))
    t0 = int(T0) - int(T0) % 60
    for s in range(120):
        a = QoeAggregate(played_ms=900, stalled_ms=100, play_attempts=1, session_seconds=3)
        store.write([ClosedWindow(t0 + s, DIMS, a)])

    def points(step: int, now: float, start: float = t0) -> list[QoePoint]:
        (one,) = store.query("final", [], start, t0 + 120, step, now)
        return list(one.points)

    hours2 = t0 + 2 * 3600
    store.expire(hours2)  # 1 s rows gone: the 10 s rows answer
    assert store.step_for(t0, 1, hours2) == (10, 10)
    assert store.step_for(t0, 15, hours2) == (10, 20)  # not a multiple: rounded up
    for step, want in ((1, 10), (10, 10), (15, 20), (60, 60)):
        got = points(step, hours2)
        assert {p.step_s for p in got} == {want}
        assert len(got) == 120 // want
        assert [p.concurrent_sessions for p in got] == [3.0] * len(got)
        assert [p.play_attempts for p in got] == [want] * len(got)
        assert all(p.rebuffer_ratio is not None and abs(p.rebuffer_ratio - 0.1) < 1e-9 for p in got)
    # A start inside a 10 s row: the steps follow the rows, no row split or counted twice.
    got = points(10, hours2, start=t0 + 5)
    assert [p.start for p in got] == [float(t0 + 10 * i) for i in range(12)]
    assert sum(p.play_attempts for p in got) == 120
    days2 = t0 + 2 * 86400
    store.expire(days2)  # past "the event" (a day): only the 1 min rows are left
    assert store.step_for(t0, 1, days2) == (60, 60)
    assert store.step_for(t0, 10, days2) == (60, 60)
    for step in (1, 10, 60):
        got = points(step, days2)
        assert [(p.step_s, p.concurrent_sessions, p.play_attempts) for p in got] == [
            (60, 3.0, 60),
            (60, 3.0, 60),
        ]
    store.close()


@pytest.mark.parametrize("video_after_ms", [15, 400])
def test_latency_from_parallel_audio_and_video_responses_is_not_off_by_a_segment(
    video_after_ms: int,
) -> None:
    """hls.js fetches audio and video of one segment in parallel and sets `bl` (the shorter
    buffer, rounded to 100 ms) at each append: the estimate stays at the true latency whether
    the video response ends just after the audio one (not appended yet) or well after it."""
    latency_ms, seg_ms, publish_ms, append_ms = 4000.0, 2000, 300, 45
    agg = Aggregator(TIMING)
    first = int(T0 // 2) + 10
    # Appends so far: (time, track, buffer end of that track in PDT ms), and the reports.
    appends: list[tuple[float, str, float]] = [
        (first * seg_ms - 1000.0, t, first * seg_ms) for t in "av"
    ]
    responses = []
    for n in range(first, first + 8):
        published = (n + 1) * seg_ms + publish_ms  # wall ms when segment n can be fetched
        for track, took in (("a", 20), ("v", 20 + video_after_ms)):
            end = published + took
            responses.append((end, track, n))
            appends.append((end + append_ms, track, (n + 1) * seg_ms))
    responses.sort()
    t0 = responses[0][0] - 3000
    agg.player(DIMS, rep("pl", 0, ReportKind.TIME_INTERVAL, t0 / 1000, sta="s"), 1, t0 / 1000)
    agg.player(
        DIMS, rep("pl", 1, ReportKind.TIME_INTERVAL, t0 / 1000 + 1, sta="p"), 1, t0 / 1000 + 1
    )
    for sn, (end, track, n) in enumerate(responses, start=2):
        done = [
            a for a in appends if a[0] < end
        ]  # what hls.js had appended when it wrote the record
        at = max(a[0] for a in done)
        buffered = min(max(e for _, tr, e in done if tr == each) for each in "av")
        bl = round((buffered - (at - latency_ms)) / 100) * 100
        r = rep(
            "pl",
            sn,
            ReportKind.RESPONSE_RECEIVED,
            (end - 20) / 1000,
            sta="p",
            url=f"http://127.0.0.1:9/live/final/{track}128/{n}.m4s",
            buffer_ms=float(bl),
            ttlb_ms=20.0,
        )
        agg.player(DIMS, r, 1, end / 1000)
    f = merged(agg.tick(responses[-1][0] / 1000 + 2)).figures(T0, 1)
    assert f.live_latency_p50_ms is not None
    assert f.live_latency_p95_ms is not None
    # Within the append delay and the 100 ms rounding of bl, never a segment off.
    assert abs(f.live_latency_p50_ms - latency_ms) <= 150, f
    assert abs(f.live_latency_p95_ms - latency_ms) <= 150, f


def test_a_shed_heartbeat_keeps_its_session_alive_in_process_and_through_the_stream() -> None:
    """A viewer whose heartbeats are all shed past the timeout is still one live session."""
    from mainevent.control.telemetry.stream import StreamSink, apply_entry

    sink = StreamSink(shards=3)
    direct = Aggregator(TIMING, session_timeout_s=5)
    shards = [Aggregator(TIMING, session_timeout_s=5) for _ in range(3)]
    first = rep("v", 0, ReportKind.PLAY_STATE, T0, sta="p")
    direct.player(DIMS, first, 1, T0)
    sink.player(DIMS, first, 1, T0)
    for s in range(1, 9):  # 8 s of heartbeats, every one shed
        direct.shed(DIMS, T0 + s, "v")
        sink.shed(DIMS, T0 + s, "v")
    for shard, payload in sink.drain():
        apply_entry(shards[shard], payload)
    for agg in (direct, *shards):
        agg.tick(T0 + 10)
    assert direct.session("v") is not None
    assert [a.session("v") is not None for a in shards].count(True) == 1


def test_at_the_session_cap_the_least_recently_seen_are_forgotten_first() -> None:
    """Both session tables are bounded: at the cap the stalest eighth goes at once (plain dicts,
    no recency order kept per report), never a session of the batch in hand; a session seen
    recently keeps its dedupe state and its aggregate state."""
    cap = 16
    intake = Intake(
        capacity_per_s=1e9, keep_capacity_per_s=1e9, session_rate=1e9, session_burst=1e9,
        max_sessions=cap,
    )  # fmt: skip
    agg = Aggregator(TIMING, max_sessions=cap)
    for i in range(40):
        now = T0 + i * 0.1
        # Session "keep" reports every round: always among the most recently seen.
        batch = [rep(f"s{i}", 1, ReportKind.TIME_INTERVAL, now, sta="p")]
        batch.append(rep("keep", i + 1, ReportKind.TIME_INTERVAL, now, sta="p"))
        adm = intake.admit(batch, now)
        assert adm.all_accepted
        agg.players([DIMS] * len(batch), batch, adm.weights, now)
        assert intake.stats().sessions <= cap
        assert agg.stats().sessions <= cap
    # "keep" was never forgotten: its old sequence numbers are still duplicates, and the
    # aggregator still knows it; the oldest one-off sessions are gone from both.
    now = T0 + 4.0
    again = intake.admit([rep("keep", 3, ReportKind.TIME_INTERVAL, now, sta="p")], now)
    assert again.verdicts == (Verdict.DUPLICATE,)
    assert agg.session("keep") is not None
    assert agg.session("s0") is None
    assert agg.session("s39") is not None
    assert agg.stats().evicted_sessions >= 40 - cap
