"""Headless HLS player: the ABR and playback-model cores, and `play()` over HTTP.

`play()` fetches a live stream like hls.js does and returns a `PlaybackReport` (startup time,
stalls, live latency, renditions, errors); the load generator and latency benchmarks run it.
`mainevent.player.grants` plays what the playback API grants, refreshing its token as it goes.
"""

from mainevent.player.abr import AbrConfig, AbrController, ThroughputEstimator, choose_level
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
from mainevent.player.session import PlayerConfig, play

__all__ = [
    "AbrConfig",
    "AbrController",
    "LatencySummary",
    "PlaybackConfig",
    "PlaybackEnded",
    "PlaybackEvent",
    "PlaybackModel",
    "PlaybackReport",
    "PlaybackStarted",
    "PlaybackStats",
    "PlayerConfig",
    "RenditionSwitch",
    "StallEnded",
    "StallStarted",
    "ThroughputEstimator",
    "choose_level",
    "play",
]
