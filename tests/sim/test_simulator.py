"""The simulator: behaviour of the model, and proof that it runs the production policy objects."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from mainevent.cli import main
from mainevent.common.admission import AdmissionController, Shed
from mainevent.control.steering.model import Reason
from mainevent.control.steering.policy import SteeringPolicy
from mainevent.media.edge.cache import Cache, Fetch, _Flight
from mainevent.player import abr
from mainevent.sim.calibrate import calibrated
from mainevent.sim.engine import SimResult, simulate
from mainevent.sim.scenario import Fault, FaultKind, Scenario, load_scenario


def small(viewers: int = 200_000, **changes: object) -> Scenario:
    """The fight night, shortened to the bell and round 1, at a small audience."""
    sc = load_scenario("fight-night-20m").with_viewers(viewers)
    sc = replace(sc, start_s=-60.0, end_s=150.0, faults=())
    a = replace(sc.audience, page_open_from_s=-60.0, play_from_s=-30.0, half_time_s=120.0)
    return replace(sc, audience=a, control=replace(sc.control, workers=8), **changes)


def test_same_seed_same_result() -> None:
    """A scenario is reproducible: the same seed gives the same summary."""
    a, b = simulate(small()).summary, simulate(small()).summary
    for key in ("startup_p50_s", "startup_p95_s", "rebuffer_ratio", "origin_fetches", "stalls"):
        assert a[key] == b[key]


def test_everyone_joins_and_caches_protect_the_origin() -> None:
    """All viewers end up playing; the origin sees a handful of media fetches per segment, not
    one per viewer — but one personal multivariant playlist per start (tokened, uncacheable)."""
    r = simulate(small())
    s = r.summary
    assert s["peak_concurrent"] == pytest.approx(200_000, rel=0.05)
    segments = (150 + 60) / 2
    assert 0 < s["origin_media_fetches"] < segments * 20
    assert s["origin_manifests"] == pytest.approx(s["peak_concurrent"], rel=0.1)
    assert s["origin_fetches"] == s["origin_media_fetches"] + s["origin_manifests"]
    assert s["edge_hits"] > 1000 * s["edge_fetches"]


def test_cdn_outage_moves_viewers_to_the_next_cdn() -> None:
    """A regional CDN outage fails its viewers over; the CDN's share in that region drops to zero."""
    outage = Fault(FaultKind.CDN_OUTAGE, 60.0, 60.0, cdn="cdn-b", region="eu")
    r = simulate(small(faults=(outage,)))
    t = r.series["t_s"]
    during = t.index(100.0)
    before = t.index(50.0)
    assert r.summary["failovers"] > 0
    assert r.cdn_series["cdn-b"][during] < 0.01 * r.cdn_series["cdn-b"][before]
    assert simulate(small()).summary["failovers"] == 0


def test_entitlement_outage_spares_preauthorised_viewers() -> None:
    """During a store outage new starts are refused (503) while pre-authorised viewers still play."""
    outage = Fault(FaultKind.ENTITLEMENT_OUTAGE, -10.0, 120.0)
    r = simulate(small(faults=(outage,)))
    assert r.summary["entitlement_unavailable"] > 0
    t = r.series["t_s"]
    assert (
        r.series["viewers"][t.index(30.0)] >= 0.9 * 200_000 * 0.5 * 0.9
    )  # the waiting room got in
    assert simulate(small()).summary["entitlement_unavailable"] == 0


def test_encoder_failure_without_backup_shows_the_slate() -> None:
    """Without a backup pipeline an encoder failure is slate time; with one, nothing."""
    fail = Fault(FaultKind.ENCODER_FAILURE, 0.0, 30.0)
    sc = small(faults=(fail,))
    with_backup = simulate(sc).summary
    no_backup = simulate(replace(sc, delivery=replace(sc.delivery, backup=False))).summary
    assert with_backup["slate_viewer_s"] == 0
    assert no_backup["slate_viewer_s"] > 0


def test_manifest_stall_makes_players_rebuffer() -> None:
    """A manifest stall longer than the buffer stalls everyone watching."""
    stall = Fault(FaultKind.MANIFEST_STALL, 100.0, 20.0)
    assert simulate(small(faults=(stall,))).summary["rebuffer_ratio"] > 5 * max(
        1e-4, simulate(small()).summary["rebuffer_ratio"]
    )


# -- the simulator runs the production policies: change one, the simulation changes ------------


def test_admission_policy_is_the_production_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Patching AdmissionController.admit (the services' class) to shed everything sheds in the simulation."""
    base = simulate(small()).summary
    assert base["shed_new_starts"] == 0

    def shed_all(self: AdmissionController, priority: object, waited: float = 0.0) -> Shed:
        return Shed(priority, 1.0, "patched")  # type: ignore[arg-type]

    monkeypatch.setattr(AdmissionController, "admit", shed_all)
    patched = simulate(replace(small(), end_s=40.0)).summary
    assert patched["shed_new_starts"] > 0
    assert patched["peak_concurrent"] < base["peak_concurrent"]


def test_edge_cache_is_the_production_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Patching Cache.lookup into a pass-through (every request fetches) multiplies origin fetches."""
    base = simulate(small()).summary["origin_media_fetches"]

    def pass_through(self: Cache, key: str, now: float) -> Fetch:
        self._flights[key] = _Flight(now)
        return Fetch(key)

    monkeypatch.setattr(Cache, "lookup", pass_through)
    assert simulate(small()).summary["origin_media_fetches"] > 3 * base


def test_abr_is_the_production_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Patching the player's choose_level to the lowest rung cuts egress and cost."""
    base = simulate(small()).summary["cost"]
    monkeypatch.setattr(abr, "choose_level", lambda bitrates, *a, **k: 0)
    patched = simulate(small()).summary["cost"]
    assert sum(patched.values()) < 0.5 * sum(base.values())


def test_simulate_command_writes_the_report(tmp_path: Path) -> None:
    """`mainevent simulate` writes report.html with embedded plots, PNGs and summary.json."""
    assert main(["simulate", "calibration-500", "--out", str(tmp_path), "--json"]) == 0
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 8
    assert "Breaking point of each tier" in html
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["summary"]["viewers"] == 500
    assert (tmp_path / "cdn_split.png").stat().st_size > 5000


# -- multi-CDN steering: the production SteeringPolicy decides -------------------------------


def _outage_then_recovery() -> Scenario:
    """cdn-b fails in eu from T+60 s to T+120 s; the run goes on to T+400 s."""
    outage = Fault(FaultKind.CDN_OUTAGE, 60.0, 60.0, cdn="cdn-b", region="eu")
    return replace(small(faults=(outage,)), end_s=400.0)


def _cdn_b_share(r: SimResult, at: float) -> float:
    i = r.series["t_s"].index(at)
    return r.cdn_series["cdn-b"][i] / sum(v[i] for v in r.cdn_series.values())


def test_steering_is_the_production_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the outage the policy sends eu's sessions back to cdn-b (its `return_share`);
    patching the production `SteeringPolicy._maybe_return` to keep them away changes that."""
    sc = _outage_then_recovery()
    real = simulate(sc)
    assert real.summary["steering"] == "SteeringPolicy"
    assert real.summary["steering_moves"] > 0
    before, during, after = (_cdn_b_share(real, t) for t in (50.0, 100.0, 300.0))
    assert during == 0.0 < before
    assert after == pytest.approx(before, rel=0.1)

    monkeypatch.setattr(SteeringPolicy, "_maybe_return", lambda self, s, now, window: Reason.STAY)
    patched = simulate(sc)
    assert _cdn_b_share(patched, 300.0) < 0.2 * after


def test_steering_quorum_comes_from_the_scenario() -> None:
    """With `steering.quorum = 3` an outage (errors and failed probes, fast answers: two bad
    signals) never degrades cdn-b, so the policy keeps placing and returning sessions there and
    the players fail over again and again; with the default quorum of 2 it steers them away."""
    sc = _outage_then_recovery()
    strict = replace(sc, steering=replace(sc.steering, quorum=3))
    assert simulate(strict).summary["failovers"] > 2 * simulate(sc).summary["failovers"]


def test_steering_capacity_caps_the_moves() -> None:
    """A steering cap on cdn-a (in viewers) keeps the policy's moves off it once it is full: the
    eu sessions granted cdn-b during its outage, which the policy moves at their first steering
    request, go to cdn-c instead. (Players already on cdn-b fail over by themselves to the next
    pathway of their priority list, which no cap governs — as hls.js does.)"""
    sc = _outage_then_recovery()
    capped = replace(
        sc,
        cdns=tuple(
            replace(c, steering_capacity=60_000.0) if c.name == "cdn-a" else c for c in sc.cdns
        ),
    )
    free, held = simulate(sc), simulate(capped)
    i = free.series["t_s"].index(100.0)
    moved_to_c = held.cdn_series["cdn-c"][i] - free.cdn_series["cdn-c"][i]
    assert moved_to_c > 1000
    assert held.cdn_series["cdn-a"][i] == pytest.approx(free.cdn_series["cdn-a"][i] - moved_to_c)


def test_calibration_inputs_replace_the_modelled_latencies() -> None:
    """Measured request latencies (`sim.calibrate.calibrated`) set the start-up: five
    sequential 200 ms requests plus a 100 ms control-plane delay put the median near 1.1 s,
    where the modelled loopback (0.5 ms RTT, 1.5 ms edges) starts in a few milliseconds."""
    sc = load_scenario("calibration-500")
    modelled = simulate(sc).summary
    measured = simulate(calibrated(sc, [200.0] * 50, [100.0] * 20)).summary
    assert modelled["startup_p50_s"] < 0.1
    assert 0.9 < measured["startup_p50_s"] < 1.3
    assert measured["origin_fetches"] == modelled["origin_fetches"]
