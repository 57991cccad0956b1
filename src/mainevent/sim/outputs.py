"""The simulator's report: which series are plotted and how."""

from __future__ import annotations

from pathlib import Path

from mainevent.sim.engine import SimResult
from mainevent.sim.report import Panel, PanelKind, write_report

__all__ = ["write_simulation_report"]


def write_simulation_report(result: SimResult, out_dir: Path) -> Path:
    s = result.series
    t = s["t_s"]
    panels = [
        Panel(
            "viewers",
            "Concurrent viewers",
            "viewers",
            t,
            {"playing": s["viewers"], "waiting room (pre-authorised)": s["waiting_room"]},
        ),
        Panel(
            "startup",
            "Start-up time of viewers joining in each tick",
            "seconds",
            t,
            {"p50": s["startup_p50_s"], "p95": s["startup_p95_s"]},
            logy=True,
            note="Press play → first frame, including control-plane waits and shed retries.",
        ),
        Panel(
            "rebuffering",
            "Rebuffering ratio per tick",
            "stalled / (played + stalled)",
            t,
            {"rebuffering ratio": s["rebuffer_ratio"]},
        ),
        Panel("stalled", "Viewers stalled", "viewers", t, {"stalled": s["stalled_viewers"]}),
        Panel(
            "origin",
            "Origin and shield load",
            "fetches per tick",
            t,
            {
                "origin fetches (shield misses)": s["origin_fetches"],
                "of which personal multivariant playlists": s["origin_manifests"],
                "shield requests (edge misses)": s["shield_fetches"],
            },
        ),
        Panel(
            "cdn_split",
            "CDN split (viewers per CDN)",
            "viewers",
            t,
            result.cdn_series,
            PanelKind.STACK,
        ),
        Panel("egress", "Egress per CDN", "Gbit/s", t, result.egress_gbps),
        Panel(
            "shed",
            "Playback API: requests and shedding (fleet)",
            "requests/s",
            t,
            {
                "new starts arriving": s["new_starts_per_s"],
                "refused (shed / unavailable)": s["shed_per_s"],
            },
            logy=True,
        ),
        Panel(
            "auth",
            "Authorisation latency of granted new starts",
            "seconds",
            t,
            {"p50": s["auth_p50_s"], "p95": s["auth_p95_s"]},
        ),
        Panel(
            "tiers",
            "Tier utilisation",
            "utilisation",
            t,
            {
                "control-plane worker": s["control_utilisation"],
                "entitlement store": s["store_utilisation"],
                "waiting-room polls shed (share)": s["poll_shed"],
            },
        ),
    ]
    summary = dict(result.summary)
    return write_report(
        out_dir,
        f"mainevent simulate: {result.scenario}",
        summary,
        panels,
        {"Breaking point of each tier": result.breaking_points},
    )
