"""Small helpers tests and benches share: reading Prometheus text, waiting for a condition."""

from __future__ import annotations

import time
from collections.abc import Callable


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of metric `name` (in Prometheus text `text`) carrying `labels`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_until(
    cond: Callable[[], object], timeout: float, what: str = "a condition", every_s: float = 0.1
) -> float:
    """Poll `cond` until it is truthy; the seconds it took. AssertionError after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if cond():
            return time.monotonic() - start
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
