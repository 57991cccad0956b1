"""Telemetry plane: CMCD v2 player reports, edge access records and platform health in; QoE per
second by event × region × CDN × ISP × device out (query API, Prometheus, alerts).

The aggregate types in :mod:`.model` are the contract steering and the simulator build on.
"""

from mainevent.control.telemetry.aggregate import Aggregator, ClosedWindow
from mainevent.control.telemetry.alerts import AlertEngine, AlertRule
from mainevent.control.telemetry.collector import Collector, Outcome, Rejected
from mainevent.control.telemetry.events import EventTiming, PlayerReport, ReportKind
from mainevent.control.telemetry.model import (
    DIMENSIONS,
    AlertEvent,
    AlertState,
    Dims,
    QoeAggregate,
    QoePoint,
    QoeSeries,
)
from mainevent.control.telemetry.store import Retention, TelemetryStore

__all__ = [
    "DIMENSIONS",
    "Aggregator",
    "AlertEngine",
    "AlertEvent",
    "AlertRule",
    "AlertState",
    "ClosedWindow",
    "Collector",
    "Dims",
    "EventTiming",
    "Outcome",
    "PlayerReport",
    "QoeAggregate",
    "QoePoint",
    "QoeSeries",
    "Rejected",
    "ReportKind",
    "Retention",
    "TelemetryStore",
]
