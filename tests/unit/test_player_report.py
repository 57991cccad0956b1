"""Headless player report: summaries, JSON and the text the `mainevent play` command prints."""

from __future__ import annotations

import json

import pytest

import mainevent.player
from mainevent.player.cli import format_report
from mainevent.player.report import LatencySummary, PlaybackReport, RenditionSwitch


def report(**overrides: object) -> PlaybackReport:
    fields: dict[str, object] = {
        "url": "http://cdn-a/live/demo/master.m3u8",
        "startup_s": 0.8,
        "played_s": 27.0,
        "stalls": 1,
        "stall_time_s": 3.0,
        "latency": LatencySummary.of([6.0, 6.5, 7.0, 9.0]),
        "renditions": (RenditionSwitch(0.1, "v360"), RenditionSwitch(2.3, "v720")),
        "segments_fetched": 30,
        "playlists_fetched": 28,
        "bytes_fetched": 9_000_000,
        "http_errors": {"500": 3},
        "failovers": 1,
        "final_url": "http://cdn-b/live/demo/master.m3u8",
    }
    fields.update(overrides)
    return PlaybackReport(**fields)  # type: ignore[arg-type]


def test_latency_percentiles_use_nearest_rank() -> None:
    """p50/p95/max of the latency samples, as an operator reads them."""
    summary = LatencySummary.of([float(x) for x in range(1, 101)])
    assert (summary.samples, summary.p50_s, summary.p95_s, summary.max_s) == (100, 50, 95, 100)
    assert LatencySummary.of([]) == LatencySummary()


def test_rebuffering_ratio_excludes_startup() -> None:
    """Rebuffering ratio = stalled / (played + stalled), SPEC.md §6."""
    assert report().rebuffering_ratio == pytest.approx(0.1)
    assert report(played_s=0.0, stall_time_s=0.0).rebuffering_ratio == 0.0


def test_json_is_plain() -> None:
    """to_json() gives plain JSON: renditions as [t, name] pairs, errors by status."""
    data = json.loads(report().to_json())
    assert data["renditions"] == [[0.1, "v360"], [2.3, "v720"]]
    assert data["http_errors"] == {"500": 3}
    assert data["latency"]["p95_s"] == 9.0
    assert data["rebuffering_ratio"] == pytest.approx(0.1)
    assert data["fatal"] is None


def test_text_report_names_the_figures() -> None:
    """The human summary shows startup, stalls, latency, renditions, errors and failover."""
    text = format_report(report())
    assert "startup        0.800 s" in text
    assert "stalls         1 (3.000 s, rebuffering 10.0%)" in text
    assert "v360@0.1s, v720@2.3s" in text
    assert "errors         500: 3" in text
    assert "failovers      1 (ended on http://cdn-b/live/demo/master.m3u8)" in text
    assert text.endswith("result         ok")
    failed = format_report(report(fatal="multivariant playlist: 503", startup_s=None))
    assert "startup        -" in failed
    assert failed.endswith("fatal          multivariant playlist: 503")


def test_public_names_exist() -> None:
    """Everything in mainevent.player.__all__ is importable."""
    for name in mainevent.player.__all__:
        assert getattr(mainevent.player, name) is not None
