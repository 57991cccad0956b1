"""The load generator's summary: its own health (CPU share, event-loop lag) marks a saturated run.

`_summarise` is fed the records a run collects (ticks from the worker processes, no viewers):
a run whose workers lag or burn a whole core is flagged `generator_saturated`, a healthy one
is not, and the report gains the generator panel either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mainevent.sim.load.run import (
    GENERATOR_CPU_LIMIT,
    GENERATOR_LAG_LIMIT_MS,
    LoadOptions,
    _summarise,
)
from mainevent.sim.scenario import load_scenario


def _ticks(cpu: float, lag_ms: float) -> dict[int, dict[int, dict[str, Any]]]:
    return {
        s: {
            w: {"playing": {"cdn-a": 10}, "waiting": 0, "cpu": cpu, "lag_ms": lag_ms}
            for w in range(2)
        }
        for s in range(30)
    }


def _summary(tmp_path: Path, cpu: float, lag_ms: float) -> tuple[dict[str, Any], list[str]]:
    sc = load_scenario("calibration-500")
    opts = LoadOptions(sc, tmp_path)
    summary, panels = _summarise(sc, opts, 20, [], _ticks(cpu, lag_ms), [])
    return summary, [p.name for p in panels]


def test_healthy_generator_is_not_flagged(tmp_path: Path) -> None:
    summary, panels = _summary(tmp_path, 0.3, 2.0)
    assert summary["generator_saturated"] is False
    assert summary["generator_cpu_p95"] == 0.3
    assert summary["generator_lag_p95_ms"] == 2.0
    assert "generator" in panels


def test_cpu_bound_or_lagging_generator_is_flagged(tmp_path: Path) -> None:
    assert _summary(tmp_path, GENERATOR_CPU_LIMIT + 0.05, 2.0)[0]["generator_saturated"] is True
    assert _summary(tmp_path, 0.3, GENERATOR_LAG_LIMIT_MS * 2)[0]["generator_saturated"] is True


def test_a_worker_that_skips_a_second_still_counts_its_players(tmp_path: Path) -> None:
    """A lagging worker's tick missing from a second: its players are carried over, not gone."""
    ticks = _ticks(0.3, 2.0)
    del ticks[10][1]  # worker 1 woke late and skipped second 10
    sc = load_scenario("calibration-500")
    _, panels = _summarise(sc, LoadOptions(sc, tmp_path), 20, [], ticks, [])
    (split,) = [p for p in panels if p.name == "cdn_split"]
    assert list(split.series["cdn-a"]) == [20.0] * 30
