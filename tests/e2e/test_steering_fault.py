"""cdn-b fails in region a only (5xx, then stalls, via the edge fault drill): 30 headless players
in two regions (distinct source addresses in 127.0.0.0/8, mapped by the CIDR table), steered by
the real steering server fed by its edge probes."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mainevent.media.edge import ADMIN_HEADER
from mainevent.player import play
from mainevent.player.report import PlaybackReport
from mainevent.testing.stack import RunningStack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.exclusive]

TTL_S = 4
CAP_A = 4
PER_REGION = 15
REGIONS = {"a": "127.0.1", "b": "127.0.2"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    regions = [{"cidr": f"{net}.0/24", "region": r} for r, net in REGIONS.items()]
    regions.append({"cidr": "127.0.0.0/8", "region": "local"})
    s = start_stack(
        tmp_path_factory.mktemp("steering-fault"),
        steering=True,
        env={
            "MAINEVENT_CONTROL__REGIONS": json.dumps(regions),
            "MAINEVENT_CONTROL__STEERING__TTL_S": str(TTL_S),
            "MAINEVENT_CONTROL__STEERING__PROBE_REGIONS": json.dumps(list(REGIONS)),
            "MAINEVENT_CONTROL__STEERING__CAPACITY": json.dumps({"cdn-a": CAP_A}),
            "MAINEVENT_CONTROL__STEERING__MIN_DWELL_S": "8",
            "MAINEVENT_CONTROL__STEERING__RECOVER_HOLD_S": "6",
            "MAINEVENT_CONTROL__STEERING__RETURN_SHARE": "0.34",
            "MAINEVENT_CONTROL__STEERING__MIN_RELOAD_INTERVAL_S": "0.2",
        },
    )
    yield s
    leftovers = s.stop()
    assert not leftovers, f"processes left behind after Ctrl-C: {leftovers}"


def _fault(stack: RunningStack, **fault: object) -> None:
    headers = {ADMIN_HEADER: stack.edge_admin_secret or ""}
    base = stack.edges["cdn-b"]
    if fault:
        r = httpx.post(f"{base}/_edge/fault", json=fault, headers=headers, timeout=10)
    else:
        r = httpx.delete(f"{base}/_edge/fault", headers=headers, timeout=10)
    assert r.status_code == 200, r.text


async def _status(client: httpx.AsyncClient, stack: RunningStack) -> dict[str, Any]:
    r = await client.get(
        f"{stack.control_url}/v1/steering",
        headers={"Authorization": f"Bearer {stack.control_admin_key}"},
    )
    body: dict[str, Any] = r.json()
    return body


def _on(status: dict[str, Any], region: str, cdn: str) -> int:
    return sum(
        s["sessions"] for s in status["sessions"] if s["region"] == region and s["cdn"] == cdn
    )


async def _scenario(stack: RunningStack) -> tuple[dict[str, list[PlaybackReport]], list[Any]]:
    url = f"{stack.edges['cdn-b']}/live/{stack.event}/master.m3u8?pathway=cdn-b"
    duration = 75.0
    clients: list[httpx.AsyncClient] = []
    tasks: dict[str, list[asyncio.Task[PlaybackReport]]] = {r: [] for r in REGIONS}
    timeline: list[Any] = []
    for region, net in REGIONS.items():
        for i in range(PER_REGION):
            c = httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(local_address=f"{net}.{10 + i}"),
                headers={"X-Client-Region": region},
                timeout=5.0,
            )
            clients.append(c)
            tasks[region].append(asyncio.create_task(play(url, duration_s=duration, client=c)))
    async with httpx.AsyncClient(timeout=10) as ops:
        try:
            started = time.monotonic()
            while time.monotonic() - started < 60:  # every player placed on cdn-b
                st = await _status(ops, stack)
                if _on(st, "a", "cdn-b") == PER_REGION and _on(st, "b", "cdn-b") == PER_REGION:
                    break
                await asyncio.sleep(0.5)
            else:
                raise AssertionError(f"players never all on cdn-b: {st['sessions']}")
            await asyncio.sleep(TTL_S)
            t0 = time.monotonic()
            await asyncio.to_thread(_fault, stack, error_rate=1.0, error_status=503, region="a")
            phases = [(8.0, {"blackhole": True, "region": "a"}), (8.0, {}), (30.0, None)]
            for length, fault in phases:
                end = time.monotonic() + length
                while time.monotonic() < end:
                    st = await _status(ops, stack)
                    timeline.append((time.monotonic() - t0, st))
                    await asyncio.sleep(0.5)
                if fault is not None:
                    await asyncio.to_thread(_fault, stack, **fault)
            reports = {r: list(await asyncio.gather(*ts)) for r, ts in tasks.items()}
        finally:
            for ts in tasks.values():
                for t in ts:
                    t.cancel()
            for c in clients:
                await c.aclose()
    return reports, timeline


def _summary(timeline: list[Any]) -> str:
    rows = ["t  a:cdn-a a:cdn-b a:cdn-c b:cdn-b degraded"]
    for t, st in timeline:
        bad = [f"{x['region']}/{x['cdn']}" for x in st["links"] if x["state"] == "degraded"]
        rows.append(
            f"{t:5.1f} {_on(st, 'a', 'cdn-a')} {_on(st, 'a', 'cdn-b')} {_on(st, 'a', 'cdn-c')} "
            f"{_on(st, 'b', 'cdn-b')} {' '.join(bad)}"
        )
    return "\n".join(rows)


def test_a_regional_cdn_failure_moves_that_region_only_within_the_cap_and_back_gradually(
    stack: RunningStack,
) -> None:
    """Region a's cdn-b sessions leave within 2 TTLs of the signal, keep playing, cdn-a stays
    under its cap, region b is untouched, and after recovery they return over several TTLs."""
    reports, timeline = asyncio.run(_scenario(stack))
    # when the policy saw cdn-b degraded in region a (the signal)
    signal_at = next(
        t
        for t, st in timeline
        if any(
            link["region"] == "a" and link["cdn"] == "cdn-b" and link["state"] == "degraded"
            for link in st["links"]
        )
    )
    moved_at = next((t for t, st in timeline if _on(st, "a", "cdn-b") == 0), math.inf)
    assert moved_at - signal_at <= 2 * TTL_S + 1, _summary(timeline)
    for t, st in timeline:
        assert st["cdns"]["cdn-a"]["sessions"] <= CAP_A, (t, st["cdns"])
        assert _on(st, "b", "cdn-b") == PER_REGION, (t, st["sessions"])
    assert max(st["cdns"]["cdn-a"]["sessions"] for _t, st in timeline) == CAP_A  # cap reached
    # return: gradual (not all back in one TTL), and under way by the end
    back = [(t, _on(st, "a", "cdn-b")) for t, st in timeline if t > moved_at]
    first_back = next((t for t, n in back if n > 0), None)
    assert first_back is not None, "nobody returned to cdn-b after it recovered"
    within_one_ttl = max(n for t, n in back if t <= first_back + TTL_S - 0.5)
    assert within_one_ttl < PER_REGION, back
    for region, rs in reports.items():
        for r in rs:
            assert r.fatal is None, (region, r.fatal)
            assert r.played_s > 40, (region, r.played_s)
    # region a recovered: it played almost all the time; region b never switched pathway
    a_ratio = sum(r.stall_time_s for r in reports["a"]) / sum(
        r.played_s + r.stall_time_s for r in reports["a"]
    )
    assert a_ratio < 0.1, [(r.stalls, r.stall_time_s, r.pathways) for r in reports["a"]]
    assert all(len(r.pathways) >= 2 for r in reports["a"])  # moved (and most came back)
    assert all([p for _t, p in r.pathways] == ["cdn-b"] for r in reports["b"])
