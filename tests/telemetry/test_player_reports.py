"""The headless player's CMCD v2 event reports: the keys and transport of hls.js 1.7, read by
the real collector app into the same session figures the player measured."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from mainevent.config import TelemetrySettings
from mainevent.control.telemetry.app import TelemetryService, create_app
from mainevent.control.telemetry.cmcd import decode_body
from mainevent.control.telemetry.collector import Collector
from mainevent.control.telemetry.events import EventTiming
from mainevent.control.telemetry.store import TelemetryStore
from mainevent.player import play
from mainevent.player.cmcd import CmcdReporter, CmcdTarget
from tests.service.test_player_session import LADDER, LiveOrigin, ScaledClock

# What hls.js 1.7 with eventTargets events ["t", "e", "bc", "rr"] puts in event records:
# cml-cmcd's persistent data (update()) plus each event's own keys.
HLSJS_EVENT_KEYS = frozenset(
    "v sid cid sf st sta mtp pr bl e ts sn br ot url rc ttfb ttlb ec msd".split()
)


class _Recording(httpx.ASGITransport):
    def __init__(self, app: object) -> None:
        super().__init__(app=app)  # type: ignore[arg-type]
        self.posts: list[httpx.Request] = []
        self.answers: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.posts.append(request)
        response = await super().handle_async_request(request)
        self.answers.append(response.status_code)
        return response


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_headless_player_reports_like_hlsjs_and_the_collector_sees_its_session(
    tmp_path: Path,
) -> None:
    clock = ScaledClock()
    origin = LiveOrigin(clock)
    settings = TelemetrySettings(db_path=Path(":memory:"), cdn_hosts={"cdn-a": "cdn-a"})
    service = TelemetryService(
        Collector(settings, {"demo": EventTiming(2000)}), TelemetryStore(tmp_path / "t.db"), clock
    )
    collector = _Recording(create_app(service, background=False))
    mounts = {"http://cdn-a": httpx.ASGITransport(app=origin.app), "http://collector": collector}
    async with httpx.AsyncClient(mounts=mounts) as client:
        report = await play(
            "http://cdn-a/live/demo/master.m3u8",
            duration_s=10.0,
            client=client,
            clock=clock,
            sleep=clock.sleep,
            cmcd=CmcdTarget("http://collector/v1/cmcd/demo", interval_s=1.0),
            session_id="headless-1",
        )
    assert report.fatal is None
    assert report.startup_s is not None
    # Transport: POST application/cmcd to the event target, one record per line, all accepted.
    assert collector.posts
    assert all(r.method == "POST" for r in collector.posts)
    assert {r.headers["content-type"] for r in collector.posts} == {"application/cmcd"}
    assert set(collector.answers) == {204}
    records = []
    for r in collector.posts:
        text = r.content.decode()
        assert text.endswith("\n")
        decoded = decode_body(text, 1000)
        assert all(d.unknown_keys == 0 for d in decoded)
        records += [d.data for d in decoded]
    # Keys: exactly what hls.js sends; sequence numbers from 0 without gaps.
    assert set().union(*records) <= HLSJS_EVENT_KEYS
    assert [r["sn"] for r in records] == list(range(len(records)))
    assert {r["sid"] for r in records} == {"headless-1"}
    assert {r["cid"] for r in records} == {"demo"}
    kinds = {r["e"] for r in records}
    assert {"t", "bc", "rr"} <= kinds
    rr = [r for r in records if r["e"] == "rr"]
    assert len(rr) >= report.segments_fetched // 2
    assert all(str(r["url"]).startswith("http://cdn-a/live/demo/") for r in rr)
    assert all(r["rc"] == 200 and 0 <= r["ttfb"] <= r["ttlb"] for r in rr)  # type: ignore[operator]
    assert records[0]["sta"] == "s"
    assert records[-1]["sta"] == "q"  # the viewer left after duration_s
    # The collector's view of the session agrees with what the player measured.
    view = service.collector.aggregator.session("headless-1")
    assert view is not None
    assert view.dims.cdn == "cdn-a"
    assert view.dims.device == "headless"
    assert view.video_start_time_ms is not None
    # Start-up from reports is bracketed by the records around the first frame (≤ 1 interval).
    assert abs(view.video_start_time_ms / 1000 - report.startup_s) <= 1.0
    assert view.bitrate_kbps in {round((bps + 128_000) / 1000) for bps in LADDER.values()}
    assert view.live_latency_ms is not None
    assert report.latency.p50_s is not None
    assert abs(view.live_latency_ms / 1000 - report.latency.p50_s) <= 0.25 * report.latency.p50_s


def test_a_refused_batch_is_resent_first_with_its_sequence_numbers_after_retry_after() -> None:
    t0 = 1_800_000_000.0
    rep = CmcdReporter(CmcdTarget("http://c/v1/cmcd/x", interval_s=1.0), "s", "x", t0)
    first = rep.take(t0)
    assert first is not None
    assert b"e=t" in first
    assert b"sn=0" in first
    assert rep.take(t0) is None  # one POST in flight at a time
    rep.answered(429, t0, retry_after_s=2.0)
    rep.record("bc", t0 + 0.5, br=(2500,), ot="v")
    assert rep.take(t0 + 1.0) is None  # backing off as the collector asked
    assert rep.next_deadline() == t0 + 1.0  # the next heartbeat comes first
    again = rep.take(t0 + 2.0)
    assert again == first  # the same record, same sn: the collector deduplicates a retry
    rep.answered(204, t0 + 2.0)
    assert rep.sent == 1
    nxt = rep.take(t0 + 2.0)
    assert nxt is not None
    assert b"e=bc" in nxt
    assert b"sn=1" in nxt
    rep.answered(410, t0 + 2.1)  # the collector says this target is gone: stop reporting
    assert rep.disposed
    assert rep.next_deadline() is None
    rep.record("t", t0 + 3)
    assert rep.take(t0 + 3) is None


def test_time_interval_records_follow_the_interval() -> None:
    t0 = 1_800_000_000.0
    rep = CmcdReporter(CmcdTarget("http://c", interval_s=1.0, batch_size=3), "s", "x", t0)
    assert rep.take(t0) is None  # one record, batch of three
    for k in (1, 2):
        assert rep.next_deadline() == t0 + k
        rep.tick(t0 + k)
    body = rep.take(t0 + 2)
    assert body is not None
    assert body.count(b"\n") == 3
    assert all(b"e=t" in line for line in body.splitlines())
    assert [line.split(b"sn=")[1][:1] for line in body.splitlines()] == [b"0", b"1", b"2"]
    with pytest.raises(ValueError, match="batch size"):
        CmcdTarget("http://c", batch_size=0)
