"""The Grafana dashboard in the repo charts metrics the collector really exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.telemetry.conftest import T0, Harness, body, record

pytestmark = pytest.mark.anyio

DASHBOARD = Path(__file__).parents[2] / "deploy/grafana/mainevent-qoe.json"


async def test_every_dashboard_query_names_an_exposed_metric(harness: Harness) -> None:
    """Each panel's PromQL uses only metric names present on the collector's /metrics."""
    ts = int(T0 * 1000)
    await harness.post_cmcd(
        body(
            record(e="t", ts=ts, sn=0, sid="g", sta="s", cdn="cdn-a"),
            record(e="ps", ts=ts + 900, sn=1, sid="g", sta="p", cdn="cdn-a", pb=(900,), ltc=3000),
        )
    )
    harness.clock.advance(1)
    await harness.post_cmcd(body(record(e="t", ts=ts + 1900, sn=2, sid="g", sta="r", ltc=3100)))
    harness.clock.advance(1)
    harness.tick()
    exposed = set()
    for line in (await harness.client.get("/metrics")).text.splitlines():
        if line.startswith("# TYPE "):  # a family, even before its first sample
            _, _, name, kind = line.split()
            exposed.add(name + "_total" if kind == "counter" else name)
        elif line and not line.startswith("#"):
            exposed.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == "mainevent-qoe"
    exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
    assert len(exprs) >= 8
    for expr in exprs:
        names = set(re.findall(r"\b(mainevent_[a-z0-9_]+)", expr))
        assert names, expr
        missing = names - exposed
        assert not missing, f"{expr}: {missing} not exposed (exposed: {sorted(exposed)})"
    assert any("rebuffer_ratio" in e for e in exprs)
