"""The JSON batch endpoint (the fast path) and live queries of the second in progress."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from mainevent.config import TelemetrySettings
from mainevent.control.telemetry.app import create_app
from mainevent.control.telemetry.batch import (
    ReportBatch,
    decode_report_batch,
    encode_report_batch,
)
from mainevent.control.telemetry.cmcd import decode_dict
from mainevent.control.telemetry.events import ReportKind
from mainevent.control.telemetry.sketch import Sketch
from tests.telemetry.conftest import EVENT, T0, Clock, Harness, body, record

pytestmark = pytest.mark.anyio

TS = int(T0 * 1000)
JSON = {"content-type": "application/json"}


def sessions(n: int, per: int, seed: int = 1) -> list[str]:
    """CMCD v2 event lines of `n` sessions as the headless player and hls.js write them:
    start-up, then heartbeats, response records of parts (with bl) and a stall, interleaved."""
    rng = random.Random(seed)
    lines = []
    msn = int(T0 // 2)
    for i in range(n):
        sid = f"sess-{i}"
        t = TS + rng.randrange(300)
        lines.append(record(e="t", ts=t, sn=0, sid=sid, sta="s", cid=EVENT))
        for k in range(1, per):
            t += 250
            sta = "r" if k % 7 == 0 else "p"
            kind = rng.random()
            if kind < 0.5:
                lines.append(record(e="t", ts=t, sn=k, sid=sid, sta=sta, pb=(2500,), bl=(1800,)))
            else:
                lines.append(
                    record(
                        e="rr",
                        ts=t,
                        sn=k,
                        sid=sid,
                        sta=sta,
                        url=f"http://edge-a/live/{EVENT}/v720/{msn + k // 4}.{k % 4}.m4s",
                        rc=200,
                        ttfb=20,
                        ttlb=90,
                        bl=(1500 + 10 * k,),
                        br=(2500,),
                        ot="v",
                        cdn="cdn-a",
                    )
                )
    rng.shuffle(lines)  # many sessions' records, as a relay gathers them
    return lines


def as_batch(lines: list[str], keep_all: bool = False) -> bytes:
    """The same records as the JSON batch (inner lists as plain numbers)."""
    wire = {"sid", "sn", "e", "ts", "sta", "pb", "br", "ot", "bl", "ltc", "msd", "url", "rc"}
    wire |= {"ttfb", "ttlb", "ec", "cdn", "cid"}
    out = []
    for line in lines:
        d = decode_dict(line).data
        out.append(
            {k: v[0] if isinstance(v, tuple) else v for k, v in d.items() if keep_all or k in wire}
        )
    return encode_report_batch(out)


async def _client(settings: TelemetrySettings, make_harness: Any) -> tuple[Any, httpx.AsyncClient]:
    service = make_harness(settings)
    app = create_app(service, background=False)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    return service, httpx.AsyncClient(transport=transport, base_url="http://c")


async def test_a_json_batch_gives_the_same_qoe_as_the_same_records_in_cmcd_text(
    make_harness: Any, clock: Clock
) -> None:
    """Records posted as one JSON batch aggregate exactly as the same records as CMCD text."""
    lines = sessions(40, 12)
    answers = []
    for kind in ("text", "batch", "batch+other keys"):
        clock.now = T0
        settings = TelemetrySettings(db_path=Path(":memory:"))
        service, c = await _client(settings, make_harness)
        async with c:
            if kind == "text":
                r = await c.post(
                    f"/v1/cmcd/{EVENT}",
                    content=body(*lines),
                    headers={"content-type": "application/cmcd"},
                )
            else:
                content = as_batch(lines, keep_all=kind != "batch")
                r = await c.post(f"/v1/cmcd/{EVENT}/batch", content=content, headers=JSON)
            assert r.status_code == 204, r.text
            assert r.headers["x-accepted"] == str(len(lines))
            clock.advance(1)
            service.tick()
            out = (
                await c.get(
                    "/v1/telemetry/qoe",
                    params={"event": EVENT, "by": "cdn", "from": T0 - 5, "to": clock.now},
                )
            ).json()
            answers.append(out["series"])
    text, batch, other_keys = answers
    assert text
    assert text[0]["points"][0]["play_attempts"] == 40
    assert text[0]["points"][0]["live_latency_p50_ms"] is not None
    assert text[0]["points"][0]["rebuffer_ratio"] > 0
    assert batch == text
    assert other_keys == text


async def test_a_retransmitted_batch_is_deduplicated_across_both_endpoints(
    harness: Harness,
) -> None:
    """Records already taken as CMCD text are duplicates when a relay posts them again."""
    lines = sessions(3, 4)
    r = await harness.post_cmcd(body(*lines))
    assert r.headers["x-accepted"] == str(len(lines))
    again = await harness.client.post(
        f"/v1/cmcd/{EVENT}/batch", content=as_batch(lines), headers=JSON
    )
    assert again.status_code == 204
    assert again.headers["x-duplicates"] == str(len(lines))
    assert again.headers["x-accepted"] == "0"


@pytest.mark.parametrize(
    ("content", "headers", "event", "status", "needle", "reason"),
    [
        (b'{"records": [', JSON, EVENT, 400, "not JSON", "malformed"),
        (b'{"recs": []}', JSON, EVENT, 400, "missing required field `records`", "malformed"),
        (
            encode_report_batch(
                [
                    {"sid": "a", "sn": 0, "e": "t", "ts": TS},
                    {"sid": "a", "sn": 1, "e": "t", "ts": TS},
                    {"sid": "a", "sn": -1, "e": "t", "ts": TS},
                ]
            ),
            JSON,
            EVENT,
            400,
            "record 3: sn: Expected `int` >= 0",
            "invalid_record",
        ),
        (
            encode_report_batch([{"sid": "a", "e": "t"}]),
            JSON,
            EVENT,
            400,
            "record 1: Object missing required field `ts`",
            "invalid_record",
        ),
        (
            encode_report_batch([{"sid": "", "e": "t", "ts": TS}]),
            JSON,
            EVENT,
            400,
            "record 1: sid: Expected `str` of length >= 1",
            "invalid_record",
        ),
        (
            encode_report_batch([{"sid": "a", "e": "t", "ts": TS, "x-y": 1, "pb": "fast"}]),
            JSON,
            EVENT,
            400,
            "record 1: pb: Expected `float | null`, got `str`",
            "invalid_record",
        ),
        (b'{"records": []}', JSON, "nosuch", 404, "unknown event 'nosuch'", "unknown_event"),
        (
            b'{"records": []}',
            {"content-type": "application/cmcd"},
            EVENT,
            415,
            "application/json",
            "content_type",
        ),
        (b" " * 2048, JSON, EVENT, 413, "larger than 1024 bytes", "oversize"),
        (
            encode_report_batch([{"sid": "a", "sn": n, "e": "t", "ts": TS} for n in range(11)]),
            JSON,
            EVENT,
            413,
            "more than 10 records",
            "oversize",
        ),
    ],
)
async def test_bad_batches_get_a_precise_4xx_naming_the_record_and_are_counted(
    make_harness: Any,
    content: bytes,
    headers: dict[str, str],
    event: str,
    status: int,
    needle: str,
    reason: str,
) -> None:
    """Malformed JSON, bad records (by 1-based index), unknown event, wrong type, oversize."""
    settings = TelemetrySettings(db_path=Path(":memory:"), max_body_bytes=1024, max_records=10)
    _, c = await _client(settings, make_harness)
    async with c:
        r = await c.post(f"/v1/cmcd/{event}/batch", content=content, headers=headers)
        assert r.status_code == status, r.text
        assert needle in r.json()["detail"], r.json()
        assert r.json()["error"] == reason
        metrics = (await c.get("/metrics")).text
        assert f'mainevent_telemetry_rejected_total{{reason="{reason}"}} 1.0' in metrics
        assert 'mainevent_telemetry_reports_total{outcome="accepted"} 0.0' in metrics


async def test_keys_that_are_not_cmcd_are_ignored_and_counted_in_a_batch(
    harness: Harness,
) -> None:
    """CMCD keys the collector does not read pass silently; keys CMCD lacks are counted."""
    content = encode_report_batch(
        [{"sid": "k", "sn": 0, "e": "t", "ts": TS, "v": 2, "mtp": 12000, "foo": 1, "x-y": "z"}]
    )
    r = await harness.client.post(f"/v1/cmcd/{EVENT}/batch", content=content, headers=JSON)
    assert r.status_code == 204, r.text
    assert r.headers["x-accepted"] == "1"
    assert r.headers["x-unknown-keys"] == "2"


def test_unknown_event_types_are_other_not_an_error() -> None:
    """A CMCD event type the core does not tell apart is taken as OTHER (as on the text path)."""
    out = decode_report_batch(encode_report_batch([{"sid": "a", "e": "pe", "ts": TS}]), 10)
    assert isinstance(out, ReportBatch)
    assert out.reports[0].kind is ReportKind.OTHER


async def test_a_live_query_with_partial_shows_the_second_in_progress(harness: Harness) -> None:
    """partial=true answers the open window at once; without it only ended seconds show."""
    harness.clock.now = T0 + 0.3
    lines = [
        record(e="t", ts=TS, sn=0, sid="p1", sta="s", cid=EVENT),
        record(e="t", ts=TS + 100, sn=1, sid="p1", sta="p", cdn="cdn-a"),
    ]
    assert (await harness.post_cmcd(body(*lines))).status_code == 204
    params = {"by": "cdn", "from": T0 - 3, "to": harness.clock.now + 1}
    assert (await harness.qoe(**params))["series"] == []
    live = await harness.qoe(partial="true", **params)
    (series,) = live["series"]
    (point,) = series["points"]
    assert point["start"] == T0
    assert point["play_attempts"] == 1
    assert point["started_sessions"] == 1
    assert point["concurrent_sessions"] == 1
    # Once the second ended and is stored, the same point comes from the store, no double count.
    harness.clock.advance(1)
    harness.tick()
    (series,) = (await harness.qoe(partial="true", **params))["series"]
    closed, open_now = series["points"]
    assert (closed["start"], closed["play_attempts"]) == (T0, 1)
    assert (open_now["start"], open_now["play_attempts"]) == (T0 + 1, 0)
    assert open_now["concurrent_sessions"] == 1  # still watching in the second in progress


def test_buffered_sketch_bins_match_ddsketch_value_by_value() -> None:
    """Binning a long buffer at once lands every value in the bin DDSketch would have used."""
    from ddsketch import DDSketch

    rng = random.Random(5)
    values = [rng.lognormvariate(6, 1.4) for _ in range(5000)] + [0.0, -1.0, 1e-300]
    weights = [rng.choice((1.0, 2.5, 0.5)) for _ in values]
    ours, ref = Sketch(), DDSketch(0.01)
    for v, w in zip(values, weights, strict=True):
        ours.add(v, w)
        ref.add(max(0.0, v), w)
    got = ours.to_json()
    want = {str(ref._store.offset + i): c for i, c in enumerate(ref._store.bins) if c}
    assert got["b"].keys() == want.keys()
    assert all(abs(got["b"][k] - want[k]) < 1e-9 for k in want)
    assert (got["n"], got["z"], got["lo"], got["hi"]) == (
        ref._count,
        ref._zero_count,
        ref._min,
        ref._max,
    )
    assert abs(got["s"] - ref._sum) <= 1e-9 * ref._sum
