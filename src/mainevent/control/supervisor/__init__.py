"""The event supervisor: the control plane's event record drives the media plane.

`core.Supervisor` decides (sans-IO); `preflight.evaluate` judges go-live readiness; `api`
adds the operator command, preflight and media routes. The media-side adapter that carries
out the actions lives in `mainevent.commands.supervised` (the media plane never imports us).
"""

from mainevent.control.supervisor.core import MediaPhase, SupervisedEvent, Supervisor
from mainevent.control.supervisor.model import (
    EventRecord,
    Feature,
    MediaSpec,
    RungSpec,
    Visibility,
)
from mainevent.control.supervisor.preflight import Check, CheckResult, PreflightFacts, evaluate

__all__ = [
    "Check",
    "CheckResult",
    "EventRecord",
    "Feature",
    "MediaPhase",
    "MediaSpec",
    "PreflightFacts",
    "RungSpec",
    "SupervisedEvent",
    "Supervisor",
    "Visibility",
    "evaluate",
]
