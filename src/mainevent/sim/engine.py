"""`mainevent simulate`: a discrete-event simulation of one event, viewers in cohorts.

Time advances in ticks of one segment duration D (the media plane's own clock: one segment per
rendition per tick); control-plane requests are individual events on a representative worker
(`control_model`). Viewers are counted in cohorts — region × ISP × device × bandwidth quantile
(0.5×, 1×, 1.6× the ISP median, 25/50/25 %) × CDN — each cohort with one real `AbrController`,
a buffer and a live lag (media published but not yet fetched). Models (documented in
`docs/simulator.md`):

* join curve: page opens (pre-authorisation) uniform from `page_open_from_s` to T+0; those
  viewers press play uniformly from `play_from_s` to `storm_width_s` (no control-plane call: the
  grant is already in hand); the storm decays exponentially after T+0; late joiners uniform to
  half time; at half time a share leaves and comes back in a second storm after the break;
* network: per-cohort throughput = ISP median × quantile × log-normal jitter (sigma 0.25 per tick),
  shared out when a CDN region's egress demand exceeds its capacity; each request costs the
  region's RTT plus the edge's service time inflated by its request utilisation (M/M/1);
* start-up = control-plane wait (press → grant, including shed retries) + `startup_requests`
  round trips + the cache wait of the edge's current wave + the first segment at the rung the
  real ABR picks with its default estimate;
* playback: per tick a cohort fetches up to D·throughput/bitrate seconds of media (bounded by
  what is published), plays D seconds, stalls for the shortfall.
"""

from __future__ import annotations

import math
import random
import resource
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

from mainevent.sim.control_model import Outcome, Request, RequestKind, WorkerModel, poisson
from mainevent.sim.delivery_model import DeliveryModel
from mainevent.sim.policies import AbrController
from mainevent.sim.scenario import FaultKind, Scenario
from mainevent.sim.steering_model import PopHealth, SteeringModel

__all__ = ["SimResult", "simulate"]

QUANTILES = ((0.5, 0.25), (1.0, 0.5), (1.6, 0.25))
_BODY, _TAIL, _TAIL_FROM = 7, 10, 0.875
_POINTS = tuple((2 * k + 1) / (2 * _BODY) * _TAIL_FROM for k in range(_BODY)) + tuple(
    _TAIL_FROM + (2 * k + 1) / (2 * _TAIL) * (1 - _TAIL_FROM) for k in range(_TAIL)
)
"""Quantiles at which a join batch's start-up distribution is sampled: 7 points over the body
(below the 87.5th percentile), 10 over the tail, so that the p95 of a start-up is read at the
95th percentile of its parts (within ±0.6 points), not at the top of a coarse grid. The parts
of one start (control-plane wait, request latencies, transfer) are taken at the same quantile:
a start that meets a slow control plane meets slow edges too (they share the machine and the
storm)."""
_WEIGHTS = (_TAIL_FROM / _BODY,) * _BODY + ((1 - _TAIL_FROM) / _TAIL,) * _TAIL
_JITTER_POINTS = tuple(math.exp(0.25 * NormalDist().inv_cdf(q) - 0.03125) for q in _POINTS)
"""Log-normal (sigma 0.25) multipliers of the modelled request time at those quantiles."""
INIT_BYTES = 900
"""An init section (ftyp + moov of one track): under a kilobyte."""
_HIST_BIN_S = 0.001  # 1 ms: start-ups on loopback are tens of ms (10 ms bins were ±17 % there)
_HIST_BINS = 120_000


@dataclass(slots=True)
class _Cohort:
    region: int
    isp: int
    device: int
    quantile: int
    cdn: int
    max_level: int
    abr: AbrController
    count: float = 0.0
    buffer_s: float = 0.0
    lag_s: float = 0.0
    latency_s: float = 0.0
    stalled: bool = False
    level: int = 0


@dataclass(slots=True)
class _Pending:
    """Requests of one kind due in one tick: `count` viewers, pressed on average at `pressed`."""

    kind: RequestKind
    count: float
    pressed: float
    isp: int


class _Queue:
    """Fleet requests waiting to be sent, per due tick: retries are merged into one batch per
    (kind, ISP, age class) — age class = ⌊log2(1 + waited / D)⌋ — so a retry storm costs a
    bounded number of batches per tick, whatever the audience (the pressed time of a batch is
    the count-weighted mean of what it merged, so start-up keeps its mean and a factor-of-two
    spread)."""

    __slots__ = ("_by_step", "_origin", "_tick")

    def __init__(self, origin: float, tick: float) -> None:
        self._by_step: dict[int, dict[tuple[int, int, int], _Pending]] = {}
        self._origin, self._tick = origin, tick

    def add(self, due: float, kind: RequestKind, count: float, pressed: float, isp: int) -> None:
        if count <= 0:
            return
        step = int((due - self._origin) // self._tick)
        age = int(math.log2(1 + max(0.0, due - pressed) / self._tick))
        batch = self._by_step.setdefault(step, {})
        key = (int(kind), isp, age)
        p = batch.get(key)
        if p is None:
            batch[key] = _Pending(kind, count, pressed, isp)
        else:
            total = p.count + count
            p.pressed = (p.pressed * p.count + pressed * count) / total
            p.count = total

    def take(self, step: int) -> list[_Pending]:
        """The batches due in tick `step` (and any left from before it)."""
        out: list[_Pending] = []
        for s in [s for s in self._by_step if s <= step]:
            out.extend(self._by_step.pop(s).values())
        return out


@dataclass(slots=True)
class SimResult:
    """Time series (one value per tick) and the run's summary."""

    scenario: str
    series: dict[str, list[float]]
    cdn_series: dict[str, list[float]]
    egress_gbps: dict[str, list[float]]
    summary: dict[str, Any]
    breaking_points: dict[str, dict[str, Any]]
    startup_hist: list[float] = field(default_factory=list)


def _weighted_quantile(points: list[tuple[float, float]], q: float) -> float:
    if not points:
        return math.nan
    points.sort()
    total = sum(w for _, w in points)
    acc = 0.0
    for v, w in points:
        acc += w
        if acc >= q * total:
            return v
    return points[-1][0]


def _hist_quantile(hist: list[float], q: float) -> float:
    total = sum(hist)
    if total <= 0:
        return math.nan
    acc = 0.0
    for i, w in enumerate(hist):
        acc += w
        if acc >= q * total:
            return (i + 0.5) * _HIST_BIN_S
    return _HIST_BINS * _HIST_BIN_S


def simulate(
    sc: Scenario,
    *,
    progress: Callable[[float, dict[str, float]], None] | None = None,
) -> SimResult:
    """Run the scenario (multi-CDN steering: the production `SteeringPolicy`, `steering_model`)."""
    wall0 = time.perf_counter()
    rng = random.Random(sc.seed)
    steer = SteeringModel(sc, random.Random(sc.seed + 2))
    a, cp, dl = sc.audience, sc.control, sc.delivery
    D = dl.segment_s
    W = cp.workers
    ladder = list(dl.ladder_kbps)
    ladder_bps = [k * 1000 for k in ladder]  # the player's ABR works in bits/s (BANDWIDTH)
    measured = sorted(dl.request_latency_ms)
    request_points = (
        [measured[min(len(measured) - 1, int(q * len(measured)))] / 1000 for q in _POINTS]
        if measured
        else None
    )
    cp_measured = sorted(cp.base_latency_ms)
    control_points = [
        cp_measured[min(len(cp_measured) - 1, int(q * len(cp_measured)))] / 1000
        if cp_measured
        else 0.0
        for q in _POINTS
    ]
    held_presses = 0.0  # viewers who pressed before the bell, waiting for it
    regions = [r.name for r in sc.regions]
    cdns = [c.name for c in sc.cdns]
    cdn_index = {c: i for i, c in enumerate(cdns)}
    r_share = _norm([r.share for r in sc.regions])
    i_share = _norm([i.share for i in sc.isps])
    d_share = _norm([d.share for d in sc.devices])
    candidates: list[list[str]] = []
    for r in sc.regions:
        order = list(r.cdns) or cdns
        order = [
            c
            for c in order
            if not sc.cdns[cdn_index[c]].regions or r.name in sc.cdns[cdn_index[c]].regions
        ]
        serving = [
            c
            for c in cdns
            if not sc.cdns[cdn_index[c]].regions or r.name in sc.cdns[cdn_index[c]].regions
        ]
        candidates.append([*order, *[c for c in serving if c not in order]] or cdns)
    worker = WorkerModel(cp, random.Random(sc.seed + 1))
    delivery = DeliveryModel(
        D, dl.shield_rtt_ms / 1000, dl.origin_rtt_ms / 1000, dl.edge_cache_mb << 20
    )
    seg_bytes = [round((k + 0) * 1000 * D / 8) for k in ladder]
    audio_bytes = round(dl.audio_kbps * 1000 * D / 8)
    playlist_bytes = 1200

    cohorts: dict[tuple[int, int, int, int, int], _Cohort] = {}

    def cohort(r: int, i: int, d: int, q: int, c: int) -> _Cohort:
        key = (r, i, d, q, c)
        co = cohorts.get(key)
        if co is None:
            cap = sc.devices[d].max_kbps
            max_level = max([k for k, b in enumerate(ladder) if b <= cap] or [0])
            co = cohorts[key] = _Cohort(
                r, i, d, q, c, max_level, AbrController(ladder_bps[: max_level + 1])
            )
        return co

    pending = _Queue(sc.start_s, D)
    refresh_due: dict[int, float] = defaultdict(float)
    waiting_room = 0.0
    preauth_target = a.viewers * a.page_open_share
    returning = 0.0
    left_at_half = False
    account_seq = 0
    hist = [0.0] * _HIST_BINS
    series: dict[str, list[float]] = defaultdict(list)
    cdn_series: dict[str, list[float]] = {c: [] for c in cdns}
    egress: dict[str, list[float]] = {c: [] for c in cdns}
    totals: dict[str, float] = defaultdict(float)
    events = 0
    cost = dict.fromkeys(cdns, 0.0)
    pop_util: dict[tuple[int, int], float] = {}
    pop_req_util: dict[tuple[int, int], float] = {}
    pop_ttfb: dict[tuple[int, int], float] = {}
    wave_failed: dict[tuple[int, int], float] = {}
    breaking: dict[str, dict[str, Any]] = {}
    peak: dict[str, tuple[float, float, float]] = {}  # tier -> (utilisation, t, viewers)
    seg_no = 0
    prev_latency_points: list[float] = [cp.new_start_ms / 1000]

    def mark(tier: str, util: float, t: float, viewers: float, broken: bool, why: str) -> None:
        if util > peak.get(tier, (-1.0, 0.0, 0.0))[0]:
            peak[tier] = (util, t, viewers)
        if broken and tier not in breaking:
            breaking[tier] = {"at_s": t, "viewers": round(viewers), "why": why}

    def active(
        kind: FaultKind, t: float, cdn: str | None = None, region: str | None = None
    ) -> bool:
        for f in sc.faults:
            if f.kind is kind and f.at_s <= t < f.at_s + f.duration_s:
                if cdn is not None and f.cdn != cdn:
                    continue
                if region is not None and f.region not in (None, region):
                    continue
                return True
        return False

    steps = math.ceil((sc.end_s - sc.start_s) / D)
    for step in range(steps):
        t = sc.start_s + step * D
        t1 = t + D
        playing = sum(co.count for co in cohorts.values())
        # -- faults this tick --------------------------------------------------------------
        worker.store_down = active(FaultKind.ENTITLEMENT_OUTAGE, t)
        delivery.origin_down = active(FaultKind.ORIGIN_OUTAGE, t)
        publishing = not active(FaultKind.MANIFEST_STALL, t)
        encoder_down = active(FaultKind.ENCODER_FAILURE, t)
        failing = {
            (ci, ri)
            for ci, c in enumerate(cdns)
            for ri, r in enumerate(regions)
            if active(FaultKind.CDN_OUTAGE, t, c, r)
        }
        steer.observe(
            {
                pop: PopHealth(
                    1.0 if pop in failing else wave_failed.get(pop, 0.0),
                    1000 * ttfb,
                )
                for pop, ttfb in pop_ttfb.items()
            },
            t,
        )
        moves = steer.step(failing, t)
        # -- arrivals (fleet counts) -------------------------------------------------------
        new_pre = _uniform(preauth_target, a.page_open_from_s, 0.0, t, t1)
        if new_pre:
            pending.add(t, RequestKind.PREAUTH, new_pre, t, -1)
        storm = a.viewers * a.storm_share * _exp_mass(0.0, a.storm_width_s, t, t1)
        late = _uniform(a.viewers * a.late_share, 0.0, a.half_time_s, t, t1)
        if not left_at_half and t >= a.half_time_s:
            left_at_half = True
            returning = playing * a.half_time_leave_share
            for co in cohorts.values():
                co.count *= 1 - a.half_time_leave_share
            steer.leave(a.half_time_leave_share)
        back = returning * _exp_mass(
            a.half_time_s + a.half_time_break_s, a.half_time_storm_width_s, t, t1
        )
        if storm + late + back > 0:
            pending.add(t, RequestKind.START, storm + late + back, t, -1)
        refreshes = refresh_due.pop(step, 0.0)
        if refreshes:
            pending.add(t, RequestKind.REFRESH, refreshes, t, -1)
        presses = min(
            waiting_room, preauth_target * _uniform_density(a.play_from_s, a.storm_width_s, t, t1)
        )
        waiting_room -= presses
        # -- control plane: the representative worker ------------------------------------
        due = pending.take(step)
        by_kind: dict[RequestKind, float] = defaultdict(float)
        poll_rate = waiting_room / a.poll_interval_s
        hb_rate = playing / 30.0
        worker.background = min(
            0.98,
            (
                poll_rate * (1 - series_last(series, "poll_shed")) * cp.poll_ms
                + hb_rate * cp.refresh_ms * 0.5
            )
            / 1000
            / W,
        )
        n_reps = [poisson(rng, p.count / W) for p in due]
        n_total = sum(n_reps)
        cap = worker.individual_cap(D)
        keep_share = min(1.0, cap / n_total) if n_total else 1.0
        for p, n_rep in zip(due, n_reps, strict=True):
            by_kind[p.kind] += p.count
            kept = int(n_rep * keep_share + rng.random()) if keep_share < 1 else n_rep
            kept = min(kept, n_rep)
            worker.refuse_at_door(p.kind, n_rep - kept, D)
            for _ in range(kept):
                account_seq += 1
                isp = rng.randrange(len(sc.isps)) if p.isp < 0 else p.isp
                isp_cfg = sc.isps[isp]
                n_addr = max(1, int(a.viewers * i_share[isp] / isp_cfg.viewers_per_address))
                worker.arrive(
                    Request(
                        rng.uniform(t, t1),
                        p.kind,
                        account_seq,
                        f"{isp}:{rng.randrange(n_addr)}",
                    )
                )
                events += 1
        tick = worker.run_until(t1)
        util = worker.utilisation(t, t1)
        store_rate = tick.lookups * W / D
        worker.store_utilisation = min(0.999, store_rate / cp.entitlement_capacity_rps)
        # outcome fractions per kind, applied to the fleet's batches
        frac: dict[RequestKind, tuple[float, float, float]] = {}
        for kind in RequestKind:
            g = len(tick.granted[kind])
            refused = tick.refused[kind]
            door = tick.door_refused[kind]
            n_done = g + len(refused) + door
            if n_done == 0:
                frac[kind] = (1.0, 0.0, 2.0)
                continue
            retry = sum(r for _, r in refused) / len(refused) if refused else 2.0
            shed = sum(1 for o, _ in refused if o is Outcome.SHED) + door
            totals[f"shed_{kind.name.lower()}"] += shed * W
            totals[f"unavailable_{kind.name.lower()}"] += (len(refused) + door - shed) * W
            frac[kind] = (g / n_done, (len(refused) + door) / n_done, retry)
            totals["door_refused_bulk"] += door * W
        lat_points = sorted(tick.granted[RequestKind.START] + tick.granted[RequestKind.PREAUTH])
        if lat_points:
            prev_latency_points = lat_points
        auth_q = [
            prev_latency_points[
                min(len(prev_latency_points) - 1, int(f * len(prev_latency_points)))
            ]
            + control_points[k]
            for k, f in enumerate(_POINTS)
        ]
        joiners: list[tuple[float, list[float]]] = []  # (count, startup offsets before delivery)
        if presses > 0 and t1 <= 0:
            # Pressed before the bell: the grant is valid from T+0 and the player waits for it
            # (a countdown, not a start-up); its start-up is measured from the bell, as
            # `mainevent load` measures it.
            held_presses += presses
        elif presses > 0:
            joiners.append((presses, [0.0] * len(_POINTS)))
        if held_presses and t1 > 0:
            joiners.append((held_presses, [0.0] * len(_POINTS)))
            held_presses = 0.0
        for p in due:
            ok, bad, retry = frac[p.kind]
            if bad > 0:
                pending.add(t1 + retry - D / 2, p.kind, p.count * bad, p.pressed, p.isp)
            granted = p.count * ok
            if granted <= 0:
                continue
            if p.kind is RequestKind.PREAUTH:
                waiting_room += granted
                refresh_due[
                    int((max(0.0, -sc.start_s) + cp.token_ttl_s - cp.refresh_before_s) / D)
                ] += granted
            elif p.kind is RequestKind.START:
                waited = t - p.pressed
                joiners.append((granted, [waited + q for q in auth_q]))
                refresh_due[step + int((cp.token_ttl_s - cp.refresh_before_s) / D)] += granted
            else:
                refresh_due[step + int((cp.token_ttl_s - cp.refresh_before_s) / D)] += granted
        totals["auth_granted"] += sum(
            p.count * frac[p.kind][0] for p in due if p.kind is not RequestKind.REFRESH
        )
        # -- delivery: this tick's segment wave at every edge -----------------------------
        if publishing:
            seg_no += 1
        wave_wait: dict[tuple[int, int], float] = {}
        wave_failed = {}
        demand: dict[tuple[int, int], float] = defaultdict(float)
        by_pop_level: dict[tuple[int, int, int], float] = defaultdict(float)
        for co in cohorts.values():
            if co.count > 0:
                by_pop_level[(co.cdn, co.region, co.level)] += co.count
                demand[(co.cdn, co.region)] += co.count * (ladder[co.level] + dl.audio_kbps) * 1000
        join_total = sum(c for c, _ in joiners)
        join_split = {
            (ri, ii): steer.join(ri, ii, join_total * rs * is_, t) if join_total > 0 else []
            for ri, rs in enumerate(r_share)
            for ii, is_ in enumerate(i_share)
        }
        join_at: dict[tuple[int, int], float] = defaultdict(float)
        for (ri, ii), split in join_split.items():
            for ci, share, _retried in split:
                join_at[(ci, ri)] += join_total * r_share[ri] * i_share[ii] * share
        for ri in range(len(regions)):
            for ci in candidates_idx(candidates[ri], cdn_index):
                levels = {lv: n for (c, r, lv), n in by_pop_level.items() if c == ci and r == ri}
                jn = join_at.get((ci, ri), 0.0)
                if jn:
                    levels[0] = levels.get(0, 0.0) + jn
                if not levels:
                    continue
                fails = (ci, ri) in failing
                pop_total = sum(levels.values())
                waits, nreq, failed = 0.0, 0.0, 0.0
                for lv, wanted in levels.items():
                    t_pub = t + dl.publish_delay_s
                    t_late = t_pub + D / 2 + 0.1
                    # Every viewer also reloads the audio playlist (the audio rendition is
                    # shared by all rungs: its waves are split across the rungs' loops here).
                    audio = pop_total / len(levels)
                    # The renditions' init sections: each edge fetches one once, the first time
                    # a viewer there plays that rung (a hit from then on, so not counted as
                    # requests: a player loads an init section once per rung).
                    for key in (f"/v{lv}/init.mp4", "/a/init.mp4"):
                        w = delivery.wave(
                            cdns[ci], regions[ri], key, INIT_BYTES, 3600, 1, t_pub, D, fails
                        )
                        totals["edge_fetches"] += w.fetches
                        events += 1
                    for key, size, max_age, count, start, spread in (
                        (f"/v{lv}/{seg_no}.m4s", seg_bytes[lv], 60, wanted, t_pub, D),
                        (f"/a/{seg_no}.m4s", audio_bytes, 60, audio, t_pub, D),
                        (f"/v{lv}.m3u8", playlist_bytes, D / 2, wanted / 2, t_pub, D / 2),
                        (f"/v{lv}.m3u8", playlist_bytes, D / 2, wanted / 2, t_late, D / 2),
                        ("/a.m3u8", playlist_bytes, D / 2, audio / 2, t_pub, D / 2),
                        ("/a.m3u8", playlist_bytes, D / 2, audio / 2, t_late, D / 2),
                    ):
                        w = delivery.wave(
                            cdns[ci], regions[ri], key, size, max_age, count, start, spread, fails
                        )
                        events += 1
                        waits += w.wait_s * count
                        nreq += count
                        failed += w.failed
                        totals["edge_hits"] += w.hits + w.stale
                        totals["edge_collapsed"] += w.collapsed
                        totals["edge_fetches"] += w.fetches
                wave_wait[(ci, ri)] = waits / nreq if nreq else 0.0
                wave_failed[(ci, ri)] = failed / nreq if nreq else 0.0
                cdn_cfg = sc.cdns[ci]
                pop_util[(ci, ri)] = demand[(ci, ri)] / (cdn_cfg.capacity_gbps * 1e9)
                pop_req_util[(ci, ri)] = (
                    (nreq + jn * dl.startup_requests) / D / cdn_cfg.request_capacity_rps
                )
                mark(
                    f"cdn {cdns[ci]} {regions[ri]}",
                    max(pop_util[(ci, ri)], pop_req_util[(ci, ri)]),
                    t,
                    playing,
                    pop_util[(ci, ri)] >= 1 or pop_req_util[(ci, ri)] >= 1,
                    "egress or request capacity exceeded",
                )
        media_counts = delivery.take_tick_counts()
        origin_tick, shield_tick = float(media_counts[0]), float(media_counts[1])
        for ri in range(len(regions)):  # what the steering prober sees next tick
            for ci in candidates_idx(candidates[ri], cdn_index):
                pop_ttfb[(ci, ri)] = (
                    sc.regions[ri].rtt_ms / 1000
                    + _edge_s(sc.cdns[ci].edge_service_ms, pop_req_util.get((ci, ri), 0.0))
                    + wave_wait.get((ci, ri), 0.0)
                )
        # -- new viewers start ------------------------------------------------------------
        startup_points: list[tuple[float, float]] = []
        default_level_cache: dict[int, tuple[int, int]] = {}
        for count, auth_offsets in joiners:
            for (ri, ii), split in join_split.items():
                for ci, share, retried in split:
                    for di, ds in enumerate(d_share):
                        for qi, (mult, qs) in enumerate(QUANTILES):
                            n = count * r_share[ri] * i_share[ii] * share * ds * qs
                            if n <= 0:
                                continue
                            co = cohort(ri, ii, di, qi, ci)
                            lvl_switch = default_level_cache.get(co.max_level)
                            if lvl_switch is None:
                                start_abr = AbrController(ladder_bps[: co.max_level + 1])
                                first_lvl = start_abr.decide(0.0, 0.0)
                                seg_lvl = start_abr.decide(0.0, D)
                                lvl_switch = default_level_cache[co.max_level] = (
                                    seg_lvl,
                                    int(seg_lvl != first_lvl),
                                )
                            lvl, switched = lvl_switch
                            thr = (
                                sc.isps[ii].bandwidth_mbps
                                * 1e6
                                * mult
                                * min(1.0, 1 / max(1e-9, pop_util.get((ci, ri), 0.0)))
                            )
                            rtt = sc.regions[ri].rtt_ms / 1000 + _edge_s(
                                sc.cdns[ci].edge_service_ms, pop_req_util.get((ci, ri), 0.0)
                            )
                            # first CDN failed: the player's retries, then the next pathway
                            extra = sum(dl.retry_s) + dl.startup_requests * rtt if retried else 0.0
                            first = seg_bytes[lvl] * 8 / thr  # video and audio in parallel
                            n_req = dl.startup_requests + switched
                            fixed = wave_wait.get((ci, ri), 0.0) + extra
                            for k, off in enumerate(auth_offsets):
                                if request_points is not None:
                                    # Calibrated: a measured player start per step, which has
                                    # the transfers, the ABR's extra request and the cache
                                    # waits of that start in it already.
                                    s = off + dl.startup_requests * request_points[k] + extra
                                else:
                                    reqs = n_req * rtt * _JITTER_POINTS[k]
                                    s = off + reqs + first * _JITTER_POINTS[k] + fixed
                                startup_points.append((s, n * _WEIGHTS[k]))
                                hist[min(_HIST_BINS - 1, int(s / _HIST_BIN_S))] += n * _WEIGHTS[k]
                            _merge(co, n, D, dl.hold_back_segments * D, dl.publish_delay_s, lvl)
                            events += 1
        # Each start fetches its own multivariant playlist: it is personal (the session's token
        # is in its URIs), so the edge and the shield key it by the tokened path and every one
        # goes to the origin (media playlists and segments are shared and collapse).
        manifests = sum(c for c, _ in joiners)
        totals["origin_manifests"] += manifests
        origin_media_tick = origin_tick
        origin_tick += manifests
        shield_tick += manifests
        # -- playback ---------------------------------------------------------------------
        stall_time = 0.0
        played = 0.0
        stalls = 0.0
        latency_w = 0.0
        # steering: the policy's moves and the players' own failovers, cohort shares following
        # the representative sessions; viewers on a failing CDN with no session there escape too
        for co in list(cohorts.values()):
            if co.count <= 0:
                continue
            pop = (co.cdn, co.region)
            to_shares = dict(moves.get((co.region, co.isp, co.cdn), {}))
            if pop in failing and sum(to_shares.values()) < 0.999:
                esc = steer.escape(co.region, co.cdn)
                if esc != co.cdn:
                    to_shares[esc] = to_shares.get(esc, 0.0) + 1.0 - sum(to_shares.values())
            if not to_shares:
                continue
            n0 = co.count
            retry = (
                sum(dl.retry_s) + dl.startup_requests * sc.regions[co.region].rtt_ms / 1000
                if pop in failing
                else 0.0
            )
            for to, share in to_shares.items():
                n = n0 * min(1.0, share)
                if n <= 0 or to == co.cdn:
                    continue
                dest = cohort(co.region, co.isp, co.device, co.quantile, to)
                lost = max(0.0, retry - co.buffer_s)
                stall_time += lost * n
                if lost > 0:
                    stalls += n
                totals["failovers" if pop in failing else "steered"] += n
                _merge_state(
                    dest,
                    n,
                    max(0.0, co.buffer_s - retry),
                    co.lag_s + retry,
                    co.latency_s + lost,
                    co.level,
                )
                co.count -= n
            co.count = max(0.0, co.count)
        for co in list(cohorts.values()):
            if co.count <= 0:
                continue
            events += 1
            pop = (co.cdn, co.region)
            if publishing:
                co.lag_s += D
            mult = QUANTILES[co.quantile][0]
            jitter = math.exp(rng.gauss(0.0, 0.25) - 0.03125)
            thr = (
                sc.isps[co.isp].bandwidth_mbps
                * 1e6
                * mult
                * jitter
                * min(1.0, 1 / max(1e-9, pop_util.get(pop, 0.0)))
            )
            if delivery.origin_down or wave_failed.get(pop, 0.0) > 0.5:
                thr = 0.0  # new media cannot be fetched this tick
            bitrate = (ladder[co.level] + dl.audio_kbps) * 1000
            media = D * thr / bitrate if thr > 0 else 0.0
            got = min(media, co.lag_s)
            co.lag_s -= got
            co.buffer_s += got
            if got > 0:
                co.abr.sample(
                    got * bitrate / max(thr, 1.0) + sc.regions[co.region].rtt_ms / 1000,
                    int(got * bitrate / 8),
                )
            if co.buffer_s >= D or (
                not co.stalled and co.buffer_s > 0 and co.buffer_s >= D * 0.999
            ):
                co.buffer_s -= D
                played += D * co.count
                co.stalled = False
            else:
                short = D - co.buffer_s
                if not co.stalled:
                    stalls += co.count
                co.stalled = True
                played += co.buffer_s * co.count
                stall_time += short * co.count
                co.latency_s += short
                co.buffer_s = 0.0
            co.level = co.abr.decide(co.buffer_s, D)
            latency_w += co.latency_s * co.count
            cost[cdns[co.cdn]] += co.count * bitrate * D / 8 / 1e9 * sc.cdns[co.cdn].cost_per_gb
            if encoder_down and not dl.backup:
                totals["slate_viewer_s"] += D * co.count
        playing = sum(co.count for co in cohorts.values())
        totals["stall_s"] += stall_time
        totals["played_s"] += played
        totals["stalls"] += stalls
        totals["origin_fetches"] += origin_tick
        totals["origin_media_fetches"] += origin_media_tick
        # -- tiers --------------------------------------------------------------------------
        starts_n = by_kind.get(RequestKind.START, 0.0) + by_kind.get(RequestKind.PREAUTH, 0.0)
        shed_share = (
            frac[RequestKind.START][1]
            if by_kind.get(RequestKind.START)
            else frac[RequestKind.PREAUTH][1]
        )
        mark(
            "control plane",
            util,
            t,
            playing + waiting_room,
            shed_share > 0.01 and starts_n > W,
            f"{shed_share:.0%} of new starts refused",
        )
        mark(
            "entitlement store",
            worker.store_utilisation if not worker.store_down else 1.0,
            t,
            playing + waiting_room,
            worker.store_utilisation >= 0.95 or tick.lookup_failures > 0,
            "lookups failing or store saturated",
        )
        mark(
            "origin",
            origin_tick / D / dl.origin_capacity_rps,
            t,
            playing,
            origin_tick / D > dl.origin_capacity_rps,
            "origin fetches above capacity",
        )
        mark(
            "shield",
            shield_tick / D / dl.shield_capacity_rps,
            t,
            playing,
            shield_tick / D > dl.shield_capacity_rps,
            "shield requests above capacity",
        )
        # -- series -------------------------------------------------------------------------
        series["t_s"].append(t)
        series["viewers"].append(playing)
        series["waiting_room"].append(waiting_room)
        series["startup_p50_s"].append(_weighted_quantile(startup_points, 0.5))
        series["startup_p95_s"].append(_weighted_quantile(startup_points, 0.95))
        series["joins"].append(sum(n for _, n in startup_points))
        series["rebuffer_ratio"].append(
            stall_time / (stall_time + played) if stall_time + played > 0 else 0.0
        )
        series["stalled_viewers"].append(sum(co.count for co in cohorts.values() if co.stalled))
        series["origin_fetches"].append(origin_tick)
        series["origin_manifests"].append(manifests)
        series["shield_fetches"].append(shield_tick)
        series["new_starts_per_s"].append(starts_n / D)
        series["shed_per_s"].append(sum(c * frac[k][1] for k, c in by_kind.items()) / D)
        series["poll_shed"].append(tick.poll_shed_share)
        series["auth_p50_s"].append(_q(lat_points, 0.5))
        series["auth_p95_s"].append(_q(lat_points, 0.95))
        series["control_utilisation"].append(util)
        series["store_utilisation"].append(1.0 if worker.store_down else worker.store_utilisation)
        series["latency_s"].append(
            dl.hold_back_segments * D
            + dl.publish_delay_s
            + (latency_w / playing if playing else 0.0)
        )
        for ci, c in enumerate(cdns):
            cdn_series[c].append(sum(co.count for co in cohorts.values() if co.cdn == ci))
            egress[c].append(sum(v for (cc, _), v in demand.items() if cc == ci) / 1e9)
        if progress is not None and step % 150 == 0:
            progress(
                t,
                {
                    "viewers": playing,
                    "waiting": waiting_room,
                    "wall_s": time.perf_counter() - wall0,
                },
            )
    wall = time.perf_counter() - wall0
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    viewers_peak = max(series["viewers"] or [0.0])
    summary: dict[str, Any] = {
        "scenario": sc.name,
        "viewers": a.viewers,
        "peak_concurrent": round(viewers_peak),
        "startup_p50_s": _hist_quantile(hist, 0.5),
        "startup_p95_s": _hist_quantile(hist, 0.95),
        "rebuffer_ratio": totals["stall_s"] / max(1e-9, totals["stall_s"] + totals["played_s"]),
        "stalls": round(totals["stalls"]),
        "origin_fetches": round(totals["origin_fetches"]),
        "origin_media_fetches": round(totals["origin_media_fetches"]),
        "origin_manifests": round(totals["origin_manifests"]),
        "origin_fetches_by_type": {
            "playlist": delivery.origin_by_type["playlist"] + round(totals["origin_manifests"]),
            "segment": delivery.origin_by_type["segment"],
            "init": delivery.origin_by_type["init"],
        },
        "edge_fetches": int(totals["edge_fetches"]),
        "edge_hits": round(totals["edge_hits"]),
        "edge_collapsed": round(totals["edge_collapsed"]),
        "failovers": round(totals["failovers"]),
        "shed_new_starts": round(totals["shed_start"] + totals["shed_preauth"]),
        "shed_refreshes": round(totals["shed_refresh"]),
        "entitlement_unavailable": round(
            totals["unavailable_start"] + totals["unavailable_preauth"]
        ),
        "slate_viewer_s": round(totals["slate_viewer_s"]),
        "cost": {c: round(v, 2) for c, v in cost.items()},
        "cohorts": len(cohorts),
        "events": events,
        "wall_s": wall,
        "events_per_s": events / wall if wall > 0 else math.nan,
        "peak_rss_mb": peak_rss_mb,
        "door_refused_bulk": round(totals["door_refused_bulk"]),
        "steering": type(steer.policy).__name__,
        "steered": round(totals["steered"]),
        "steering_moves": steer.policy.statistics().moves,
        "steering_sessions": steer.sessions_created,
        "steer_calls": steer.steer_calls,
    }
    tiers: dict[str, dict[str, Any]] = {}
    for tier, (u, at, _v) in sorted(peak.items()):
        entry: dict[str, Any] = {"peak_utilisation": round(u, 3), "peak_at_s": at}
        if tier in breaking:
            entry["broke"] = breaking[tier]
        elif u > 0:
            entry["headroom_viewers"] = round(a.viewers / u) if u > 0 else None
        tiers[tier] = entry
    return SimResult(sc.name, dict(series), cdn_series, egress, summary, tiers, hist)


def series_last(series: dict[str, list[float]], name: str) -> float:
    values = series.get(name)
    return values[-1] if values else 0.0


def candidates_idx(names: list[str], index: dict[str, int]) -> list[int]:
    return [index[n] for n in names]


def _q(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    return values[min(len(values) - 1, int(q * len(values)))]


def _edge_s(service_ms: float, util: float) -> float:
    return service_ms / 1000 / max(0.05, 1.0 - min(util, 0.95))


def _norm(values: list[float]) -> list[float]:
    total = sum(values)
    return [v / total for v in values]


def _uniform(total: float, lo: float, hi: float, t0: float, t1: float) -> float:
    """Arrivals in [t0, t1) of `total` spread uniformly over [lo, hi)."""
    if hi <= lo:
        return 0.0
    overlap = max(0.0, min(hi, t1) - max(lo, t0))
    return total * overlap / (hi - lo)


def _uniform_density(lo: float, hi: float, t0: float, t1: float) -> float:
    return _uniform(1.0, lo, hi, t0, t1)


def _exp_mass(start: float, mean: float, t0: float, t1: float) -> float:
    """Share of an exponential arrival burst (starting at `start`) that falls in [t0, t1)."""
    if t1 <= start:
        return 0.0
    lo = max(0.0, t0 - start)
    hi = t1 - start
    return math.exp(-lo / mean) - math.exp(-hi / mean)


def _merge(co: _Cohort, n: float, D: float, hold_back_s: float, delay: float, level: int) -> None:
    """New viewers join with one segment buffered and the rest of the hold-back to fetch."""
    _merge_state(co, n, D, max(0.0, hold_back_s - D), 0.0, level if co.count <= 0 else co.level)


def _merge_state(co: _Cohort, n: float, buf: float, lag: float, latency: float, level: int) -> None:
    total = co.count + n
    if total <= 0:
        return
    w = n / total
    co.buffer_s = co.buffer_s * (1 - w) + buf * w
    co.lag_s = co.lag_s * (1 - w) + lag * w
    co.latency_s = co.latency_s * (1 - w) + latency * w
    if co.count <= 0:
        co.level = level
        co.stalled = False
    co.count = total
