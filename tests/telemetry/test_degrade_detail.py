"""`degrade` telemetry detail through the real collector app (in-process ASGI): aggregates
keep coming, the per-session answer says "degraded", /metrics shows the flag."""

from __future__ import annotations

import pytest

from tests.telemetry.conftest import EVENT, T0, Harness, body, record

pytestmark = pytest.mark.anyio

TS = int(T0 * 1000)


def degraded_metric(text: str) -> str:
    prefix = f'mainevent_degraded{{event="{EVENT}",feature="telemetry_detail"}}'
    return next(ln for ln in text.splitlines() if ln.startswith(prefix)).rsplit(" ", 1)[-1]


async def test_detail_off_keeps_qoe_and_answers_sessions_as_degraded(harness: Harness) -> None:
    """With detail off a session's start-up still reaches the QoE series, its own query says
    `degraded` with no figures, and /metrics has the flag at 1; back on, the session answer
    has its figures again and the flag is 0."""
    before = (await harness.client.get("/metrics")).text
    assert degraded_metric(before) == "0.0"
    harness.service.collector.aggregator.set_detail(EVENT, False)
    lines = (
        record(e="t", ts=TS, sn=0, sid="s1", sta="s", cid=EVENT),
        record(e="ps", ts=TS + 1200, sn=1, sid="s1", sta="p", cdn="cdn-a", pb=(2500,)),
    )
    assert (await harness.post_cmcd(body(*lines))).status_code == 204
    harness.clock.advance(1)
    await harness.post_cmcd(body(record(e="t", ts=TS + 2200, sn=2, sid="s1", sta="p", ltc=2500)))
    harness.clock.advance(1)
    harness.tick()

    out = await harness.qoe(**{"from": T0 - 5, "to": harness.clock.now})
    points = [p for s in out["series"] for p in s["points"]]
    assert sum(p["play_attempts"] for p in points) == 1
    starts = [p["video_start_time_p50_ms"] for p in points if p["video_start_time_p50_ms"]]
    assert starts
    assert abs(starts[0] - 1200) <= 12
    latencies = [p["live_latency_p50_ms"] for p in points if p["live_latency_p50_ms"]]
    assert latencies

    answer = await harness.client.get("/v1/telemetry/sessions/s1")
    assert answer.status_code == 200
    got = answer.json()
    assert got["degraded"] == ["telemetry_detail"]
    assert "video_start_time_ms" not in got
    assert "live_latency_ms" not in got
    assert "switched off" in got["detail"]
    assert degraded_metric((await harness.client.get("/metrics")).text) == "1.0"

    harness.service.collector.aggregator.set_detail(EVENT, True)
    await harness.post_cmcd(body(record(e="t", ts=TS + 3200, sn=3, sid="s1", sta="p", ltc=2000)))
    full = (await harness.client.get("/v1/telemetry/sessions/s1")).json()
    assert full["degraded"] == []
    assert full["live_latency_ms"] == 2000
    assert degraded_metric((await harness.client.get("/metrics")).text) == "0.0"
    assert (await harness.client.get("/v1/telemetry/sessions/nobody")).status_code == 404
