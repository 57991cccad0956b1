"""Multi-CDN content steering: the sans-IO policy, its values, and (in `server`) the steering
server that answers HLS and DASH steering manifests per session."""

from mainevent.control.steering.model import (
    ANY,
    CdnSignal,
    CdnSpec,
    Decision,
    HealthReport,
    LinkState,
    Override,
    OverrideAction,
    Reason,
    SessionState,
    SteeringConfig,
    Thresholds,
)
from mainevent.control.steering.policy import PolicyStatistics, SteeringPolicy, session_hash

__all__ = [
    "ANY",
    "CdnSignal",
    "CdnSpec",
    "Decision",
    "HealthReport",
    "LinkState",
    "Override",
    "OverrideAction",
    "PolicyStatistics",
    "Reason",
    "SessionState",
    "SteeringConfig",
    "SteeringPolicy",
    "Thresholds",
    "session_hash",
]
