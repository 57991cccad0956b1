"""Redundant pipelines: per-segment selection (sans-IO core) and its adapter at the origin."""

from mainevent.media.redundancy.selector import (
    AUTO,
    Action,
    Decision,
    Discard,
    Gap,
    Publish,
    Selector,
    SelectorError,
    Switched,
)

__all__ = [
    "AUTO",
    "Action",
    "Decision",
    "Discard",
    "Gap",
    "Publish",
    "Selector",
    "SelectorError",
    "Switched",
]
