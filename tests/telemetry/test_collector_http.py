"""The collector over HTTP (in-process ASGI): ingest, every bad input, dedupe, 429, query, metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mainevent.common.telemetry import AccessRecord, encode_access_batch
from mainevent.config import TelemetrySettings
from mainevent.control.telemetry.events import PlayerReport, ReportKind
from mainevent.control.telemetry.model import Dims
from tests.telemetry.conftest import EVENT, T0, Harness, body, record

pytestmark = pytest.mark.anyio

TS = int(T0 * 1000)


def session(sid: str, start_ms: int = TS) -> bytes:
    return body(
        record(e="t", ts=start_ms, sn=0, sid=sid, sta="s", cid=EVENT),
        record(e="ps", ts=start_ms + 1200, sn=1, sid=sid, sta="p", cdn="cdn-a", pb=(2500,)),
    )


async def post_access(harness: Harness, recs: list[AccessRecord]) -> None:
    """Post `recs` as one edge access batch; the collector takes it (204)."""
    r = await harness.client.post(
        "/v1/access",
        content=encode_access_batch(recs),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 204, r.text


async def test_reports_become_qoe_points_after_the_second_closes(harness: Harness) -> None:
    """A session's start-up time and bitrate show in the query API once its window closes."""
    ua = {"user-agent": "Mozilla/5.0 (X11; Linux) Chrome/156"}
    r = await harness.post_cmcd(session("s1"), **ua)
    assert r.status_code == 204, r.text
    assert r.headers["x-accepted"] == "2"
    harness.clock.advance(1)
    await harness.post_cmcd(
        body(record(e="t", ts=TS + 2200, sn=2, sid="s1", sta="p", ltc=2500)), **ua
    )
    harness.clock.advance(1)
    harness.tick()
    out = await harness.qoe(by="cdn,region,device", **{"from": T0 - 5, "to": harness.clock.now})
    (series,) = out["series"]
    assert series["labels"] == {"cdn": "cdn-a", "region": "local", "device": "desktop"}
    first, second = series["points"]
    assert abs(first["video_start_time_p50_ms"] - 1200) <= 12
    assert second["average_bitrate_kbps"] == 2500
    assert abs(second["live_latency_p50_ms"] - 2500) <= 25
    assert out["resolution_s"] == 1


async def test_retransmitted_reports_are_deduplicated(harness: Harness) -> None:
    """The same records posted twice count once; the answer says how many were duplicates."""
    assert (await harness.post_cmcd(session("dup"))).status_code == 204
    again = await harness.post_cmcd(session("dup"))
    assert again.status_code == 204
    assert again.headers["x-duplicates"] == "2"
    assert again.headers["x-accepted"] == "0"
    harness.clock.advance(1)
    harness.tick()
    out = await harness.qoe(**{"from": T0 - 5, "to": harness.clock.now})
    assert sum(p["play_attempts"] for s in out["series"] for p in s["points"]) == 1


@pytest.mark.parametrize(
    ("content", "headers", "event", "status", "needle", "reason"),
    [
        (b'sid="a,ts=1', {}, EVENT, 400, "unterminated string", "malformed"),
        (b'sid="a",ts=1,e=t\n\xff\n', {}, EVENT, 400, "must be ASCII", "malformed"),
        (b"ts=1,e=t\n", {}, EVENT, 400, "record 1: missing sid", "invalid_record"),
        (b'sid="a",ts=1,e=t\n', {}, "nosuch", 404, "unknown event 'nosuch'", "unknown_event"),
        (
            b'sid="a",ts=1,e=t\n',
            {"content-type": "text/plain"},
            EVENT,
            415,
            "application/cmcd",
            "content_type",
        ),
        (b"x" * 2048, {}, EVENT, 413, "larger than 1024 bytes", "oversize"),
        (b'sid="a",ts=1,e=t\n' * 11, {}, EVENT, 413, "more than 10 records", "oversize"),
    ],
)
async def test_bad_reports_get_a_precise_4xx_and_are_counted(
    make_harness: object,
    clock: object,
    content: bytes,
    headers: dict[str, str],
    event: str,
    status: int,
    needle: str,
    reason: str,
) -> None:
    """Malformed CMCD, bad records, unknown events, wrong type, oversize: 4xx saying what and counted."""
    import httpx

    from mainevent.control.telemetry.app import create_app

    settings = TelemetrySettings(db_path=Path(":memory:"), max_body_bytes=1024, max_records=10)
    service = make_harness(settings)  # type: ignore[operator]
    app = create_app(service, background=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as c:
        r = await c.post(
            f"/v1/cmcd/{event}",
            content=content,
            headers={"content-type": "application/cmcd", **headers},
        )
        assert r.status_code == status, r.text
        assert needle in r.json()["detail"]
        assert r.json()["error"] == reason
        metrics = (await c.get("/metrics")).text
        assert f'mainevent_telemetry_rejected_total{{reason="{reason}"}} 1.0' in metrics
        # Nothing of a refused body was used.
        assert 'mainevent_telemetry_reports_total{outcome="accepted"} 0.0' in metrics


async def test_unknown_keys_are_ignored_and_counted(harness: Harness) -> None:
    """Keys CMCD does not define do not refuse a report; they are counted."""
    r = await harness.post_cmcd(body(f'e=t,foo=1,sid="k",sn=0,ts={TS},v=2,x-y=2'))
    assert r.status_code == 204
    assert r.headers["x-unknown-keys"] == "2"
    metrics = (await harness.client.get("/metrics")).text
    assert "mainevent_telemetry_unknown_keys_total 2.0" in metrics


async def test_a_chatty_session_gets_429_with_retry_after(make_harness: object) -> None:
    """Past its per-session rate a player is told to back off; other sessions are unaffected."""
    import httpx

    from mainevent.control.telemetry.app import create_app

    settings = TelemetrySettings(db_path=Path(":memory:"), session_rate=1, session_burst=3)
    service = make_harness(settings)  # type: ignore[operator]
    app = create_app(service, background=False)
    h = {"content-type": "application/cmcd"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as c:
        lines = [record(e="t", ts=TS + i, sn=i, sid="chatty", sta="p") for i in range(3)]
        assert (
            await c.post(f"/v1/cmcd/{EVENT}", content=body(*lines), headers=h)
        ).status_code == 204
        more = body(record(e="t", ts=TS + 9, sn=9, sid="chatty", sta="p"))
        r = await c.post(f"/v1/cmcd/{EVENT}", content=more, headers=h)
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"] == "session_rate"
        other = body(record(e="t", ts=TS, sn=0, sid="calm", sta="p"))
        assert (await c.post(f"/v1/cmcd/{EVENT}", content=other, headers=h)).status_code == 204


async def test_cross_origin_preflight_for_application_cmcd_is_answered(harness: Harness) -> None:
    """hls.js on the player page posts cross-origin with a non-simple type: the preflight passes."""
    r = await harness.client.options(
        f"/v1/cmcd/{EVENT}",
        headers={
            "origin": "http://player.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        },
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "*"


async def test_edge_access_batches_give_cdn_figures(harness: Harness) -> None:
    """Access records from an edge show as requests, errors by status and hit ratio per CDN."""
    recs = [
        AccessRecord(
            T0,
            "cdn-b",
            f"/live/{EVENT}/v720/{i}.m4s",
            200 if i % 4 else 503,
            1000,
            5.0,
            "HIT" if i % 2 else "MISS",
            "127.0.0.3",
            "us",
            None,
            'br=2500,sid="x"',
        )
        for i in range(8)
    ]
    recs.append(
        AccessRecord(
            T0, "cdn-b", "/live/other/v720/1.m4s", 200, 1, 1.0, "HIT", "127.0.0.3", None, None, None
        )
    )
    await post_access(harness, recs)
    harness.clock.advance(1)
    harness.tick()
    out = await harness.qoe(by="cdn,region", **{"from": T0 - 1, "to": harness.clock.now})
    (series,) = out["series"]
    # The records' "us" came from an untrusted viewer header: the address decides the region.
    assert series["labels"] == {"cdn": "cdn-b", "region": "local"}
    (p,) = series["points"]
    assert p["requests"] == 8
    assert p["error_rate"] == 0.25
    assert p["errors_by_status"] == {"503": 2}
    assert p["error_rate_by_status"] == {"503": 0.25}
    assert p["cache_hit_ratio"] == 0.5


async def test_request_cmcd_of_access_records_is_checked_and_counted(harness: Harness) -> None:
    """Request CMCD that does not parse is counted (the record still counts); query and header
    forms of good CMCD are taken alike, their unknown keys counted."""
    good = ['br=2500,ot=v,sid="q"', 'bl=2000,br=2500,foo=1,ot=v,sid="a%25b"']
    bad = ["br=2500,sid=%22unterminated", "br==1"]

    def rec(cmcd: str) -> AccessRecord:
        return AccessRecord(
            T0, "cdn-a", f"/live/{EVENT}/v720/1.m4s", 200, 1, 5.0, "HIT", "127.0.0.3", None,
            None, cmcd, 6.0,
        )  # fmt: skip

    await post_access(harness, [rec(c) for c in good + bad])
    metrics = (await harness.client.get("/metrics")).text
    assert "mainevent_telemetry_access_records_total 4.0" in metrics
    assert "mainevent_telemetry_access_cmcd_malformed_total 2.0" in metrics
    assert "mainevent_telemetry_unknown_keys_total 1.0" in metrics
    assert 'mainevent_telemetry_rejected_total{reason="malformed"} 0.0' in metrics


async def test_access_records_without_ttlb_from_older_edges_are_taken(harness: Harness) -> None:
    """A batch of 11-field records (an edge from before ttlb_ms) is accepted as before."""
    row = [T0, "cdn-a", f"/live/{EVENT}/v720/1.m4s", 200, 1, 5.0, "HIT", "127.0.0.3"]
    r = await harness.client.post(
        "/v1/access",
        content=json.dumps({"records": [[*row, None, None, None]]}).encode(),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 204, r.text


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"{", "not JSON"),
        (b'{"rows": []}', '"records" list'),
        (b'{"records": [[1, 2]]}', "record 0: expected a list of 12 fields"),
        (
            json.dumps(
                {"records": [[1.0, "a", "/p", 999, 1, 1.0, "HIT", "c", None, None, None]]}
            ).encode(),
            "status must be",
        ),
    ],
)
async def test_bad_access_batches_get_400(harness: Harness, content: bytes, needle: str) -> None:
    """A malformed access batch is refused whole with what is wrong."""
    r = await harness.client.post(
        "/v1/access", content=content, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert needle in r.json()["detail"]


def access(path: str, cmcd: str | None = None) -> AccessRecord:
    return AccessRecord(T0, "cdn-a", path, 200, 1000, 5.0, "HIT", "127.0.0.3", "eu", None, cmcd)


async def test_access_records_for_an_unknown_event_are_counted_not_used(harness: Harness) -> None:
    """Records naming an unknown event (or no event) are dropped, counted on /metrics; the rest count."""
    recs = [
        access(f"/live/{EVENT}/v720/1.m4s"),
        access("/live/nosuch/v720/1.m4s"),
        access("/live/nosuch/v720/2.m4s"),
        access("/favicon.ico"),
    ]
    await post_access(harness, recs)
    metrics = (await harness.client.get("/metrics")).text
    assert 'mainevent_telemetry_access_dropped_total{reason="unknown_event"} 2.0' in metrics
    assert 'mainevent_telemetry_access_dropped_total{reason="no_event"} 1.0' in metrics
    assert "mainevent_telemetry_access_records_total 1.0" in metrics
    harness.clock.advance(1)
    harness.tick()
    out = await harness.qoe(**{"from": T0 - 1, "to": harness.clock.now})
    assert [p["requests"] for s in out["series"] for p in s["points"]] == [1]


@pytest.mark.parametrize(
    ("content_type", "n_records", "status", "reason"),
    [
        ("application/json", 11, 413, "oversize"),  # more records than max_records (10)
        ("application/json", 40, 413, "oversize"),  # a body past max_body_bytes (2048)
        ("text/plain", 1, 415, "content_type"),
        (None, 1, 415, "content_type"),
    ],
)
async def test_oversize_and_mistyped_access_batches_are_refused_and_counted(
    make_harness: object, content_type: str | None, n_records: int, status: int, reason: str
) -> None:
    """An access batch too large gets 413, one not JSON-typed 415; counted, nothing of it used."""
    import httpx

    from mainevent.control.telemetry.app import create_app

    settings = TelemetrySettings(db_path=Path(":memory:"), max_body_bytes=2048, max_records=10)
    service = make_harness(settings)  # type: ignore[operator]
    app = create_app(service, background=False)
    content = encode_access_batch([access(f"/live/{EVENT}/v720/{i}.m4s") for i in range(n_records)])
    assert (len(content) > 2048) == (n_records == 40)
    headers = {} if content_type is None else {"content-type": content_type}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as c:
        r = await c.post("/v1/access", content=content, headers=headers)
        assert r.status_code == status, r.text
        assert r.json()["error"] == reason
        metrics = (await c.get("/metrics")).text
    assert f'mainevent_telemetry_rejected_total{{reason="{reason}"}} 1.0' in metrics
    assert "mainevent_telemetry_access_records_total 0.0" in metrics


@pytest.mark.parametrize(
    ("params", "status", "needle"),
    [
        ({"event": "nosuch"}, 404, "unknown event"),
        ({"event": EVENT, "by": "cdn,planet"}, 400, "unknown dimension 'planet'"),
        ({"event": EVENT, "from": 10, "to": 5}, 400, "from must be before to"),
        ({"event": EVENT, "from": 0, "to": 1e9, "step": 1}, 400, "exceeds"),
    ],
)
async def test_bad_queries_get_precise_answers(
    harness: Harness, params: dict[str, object], status: int, needle: str
) -> None:
    """The query API names the bad parameter."""
    r = await harness.client.get("/v1/telemetry/qoe", params=params)  # type: ignore[arg-type]
    assert r.status_code == status
    assert needle in r.json()["detail"]


async def test_the_query_api_is_in_the_openapi_document(harness: Harness) -> None:
    """/v1/telemetry/qoe with its event, by, from, to and step parameters is documented."""
    doc = (await harness.client.get("/openapi.json")).json()
    params = {p["name"] for p in doc["paths"]["/v1/telemetry/qoe"]["get"]["parameters"]}
    assert {"event", "by", "from", "to", "step"} <= params
    assert "/v1/cmcd/{event}" in doc["paths"]


def _report(sid: str, sn: int, kind: str, at: float, **kw: object) -> PlayerReport:
    return PlayerReport(sid=sid, sn=sn, kind=ReportKind(kind), ts_ms=at * 1000, **kw)  # type: ignore[arg-type]


async def _run(harness: Harness, seconds: int, feed: Any) -> list[float]:
    """Drive the collector's core second by second (``feed(second, now)`` puts reports in),
    ticking at each second's end as the timer does; returns the tick times."""
    ticks = []
    for s in range(seconds):
        feed(s, harness.clock.now)
        harness.clock.advance(1)
        harness.tick()
        ticks.append(harness.clock.now)
    return ticks


async def _alerts(harness: Harness) -> tuple[dict[str, Any], str]:
    r = await harness.client.get("/v1/telemetry/alerts")
    assert r.status_code == 200, r.text
    return r.json(), (await harness.client.get("/metrics")).text


async def test_default_cdn_rebuffering_alert_fires_for_one_cdn_in_one_region(
    harness: Harness,
) -> None:
    """Default rule: cdn-b in eu rebuffering 5 % for a while fires (start), then resolves (end)."""
    rules = {r.name: r for r in harness.service.collector.alerts.rules}
    rule = rules["cdn-rebuffering"]
    assert (rule.metric, rule.threshold, rule.for_s) == ("rebuffer_ratio", 0.02, 10)
    assert rule.by == ("event", "region", "cdn")
    agg = harness.service.collector.aggregator
    series = {
        "eu-b": Dims(EVENT, "eu", "cdn-b", "isp1", "desktop"),
        "eu-a": Dims(EVENT, "eu", "cdn-a", "isp1", "desktop"),
        "us-b": Dims(EVENT, "us", "cdn-b", "isp1", "desktop"),
    }
    fault = range(10, 20)
    sn: dict[str, int] = {}

    def feed(second: int, now: float) -> None:
        for name, dims in series.items():
            for v in range(10):
                sid = f"{name}-{v}"
                n = sn[sid] = sn.get(sid, -1) + 1
                if n == 0:
                    agg.player(dims, _report(sid, 0, "ps", now, sta="s", bitrate_kbps=2500), 1, now)
                    n = sn[sid] = 1
                agg.player(dims, _report(sid, n, "ps", now + 0.01, sta="p"), 1, now + 0.01)
                if name == "eu-b" and second in fault:  # stalled 0.955 s → next 0.01 s: 5.5 %
                    sn[sid] += 1
                    agg.player(
                        dims, _report(sid, sn[sid], "ps", now + 0.955, sta="r"), 1, now + 0.955
                    )

    fault_start = T0 + fault.start
    await _run(harness, 20, feed)
    out, metrics = await _alerts(harness)
    (firing,) = out["firing"]
    assert firing["rule"] == "cdn-rebuffering"
    assert firing["labels"] == {"event": EVENT, "region": "eu", "cdn": "cdn-b"}
    # A stall is counted in the window of the report that ends it (the next second's): the
    # 10 s ratio exceeds 2 % once 4 such seconds are in it (2.2 %; 3 give 1.65 %).
    assert firing["at"] == fault_start + 5
    assert firing["value"] > 0.02
    assert (
        'mainevent_telemetry_alert_firing{rule="cdn-rebuffering",series="event=final,region=eu,cdn=cdn-b"} 1.0'
        in metrics
    )
    assert (
        'mainevent_telemetry_alert_events_total{rule="cdn-rebuffering",state="firing"} 1.0'
        in metrics
    )
    await _run(harness, 12, lambda s, now: feed(s + 20, now))
    out, metrics = await _alerts(harness)
    assert out["firing"] == []
    assert [
        (e["rule"], e["labels"]["region"], e["labels"]["cdn"], e["state"]) for e in out["events"]
    ] == [
        ("cdn-rebuffering", "eu", "cdn-b", "firing"),
        ("cdn-rebuffering", "eu", "cdn-b", "resolved"),
    ]
    start, end = (e["at"] for e in out["events"])
    assert start == fault_start + 5
    # Resolved once no more than 3 stalled seconds remain in the 10 s window.
    assert end == T0 + fault.stop + 8
    assert end > start
    assert out["events"][1]["value"] <= 0.02
    assert (
        'mainevent_telemetry_alert_events_total{rule="cdn-rebuffering",state="resolved"} 1.0'
        in metrics
    )
    assert 'mainevent_telemetry_alert_firing{rule="cdn-rebuffering"' not in metrics


async def test_default_video_start_failures_alert_fires_above_one_percent(
    harness: Harness,
) -> None:
    """Default rule: 5 % of attempts failing to start fires for the event, then resolves."""
    rules = {r.name: r for r in harness.service.collector.alerts.rules}
    rule = rules["video-start-failures"]
    assert (rule.metric, rule.threshold, rule.for_s, rule.by) == (
        "video_start_failure_ratio",
        0.01,
        30,
        ("event",),
    )
    agg = harness.service.collector.aggregator
    dims = Dims(EVENT, "eu", "cdn-a", "isp1", "desktop")
    fault = range(30, 40)

    def feed(second: int, now: float) -> None:
        for v in range(20):  # 20 attempts a second, one failing during the fault
            sid = f"{second}-{v}"
            agg.player(dims, _report(sid, 0, "t", now, sta="s"), 1, now)
            if v == 0 and second in fault:
                agg.player(
                    dims, _report(sid, 1, "e", now + 0.5, sta="f", error="MEDIA_ERR"), 1, now + 0.5
                )
            else:
                agg.player(
                    dims, _report(sid, 1, "ps", now + 0.5, sta="p", bitrate_kbps=2500), 1, now + 0.5
                )
                agg.player(dims, _report(sid, 2, "ps", now + 0.9, sta="e"), 1, now + 0.9)

    await _run(harness, 40, feed)
    out, metrics = await _alerts(harness)
    (firing,) = out["firing"]
    assert firing["rule"] == "video-start-failures"
    assert firing["labels"] == {"event": EVENT}
    # 600 attempts in 30 s: more than 6 failures (1 %) from the 7th faulty second.
    assert firing["at"] == T0 + fault.start + 7
    assert (
        'mainevent_telemetry_alert_events_total{rule="video-start-failures",state="firing"} 1.0'
        in metrics
    )
    await _run(harness, 30, lambda s, now: feed(s + 40, now))
    out, metrics = await _alerts(harness)
    assert out["firing"] == []
    assert [(e["rule"], e["state"]) for e in out["events"]] == [
        ("video-start-failures", "firing"),
        ("video-start-failures", "resolved"),
    ]
    # Resolved once 6 failures (exactly 1 %) are left in the window: 4 faulty seconds out.
    assert out["events"][1]["at"] == T0 + fault.start + 30 + 4
    assert out["events"][1]["value"] <= 0.01
    assert (
        'mainevent_telemetry_alert_events_total{rule="video-start-failures",state="resolved"} 1.0'
        in metrics
    )
