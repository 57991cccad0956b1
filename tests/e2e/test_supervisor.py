"""The event record drives the media plane (issue #12): one `mainevent up` with its control
plane runs the demo event and a second event at once, each with its own ingest and pipelines;
rehearsal media is hidden from viewers; preflight gates go-live; pause lists the slate; end
puts ENDLIST on every playlist; a kill -9 and restart resumes every event in its recorded
state with the media sequence continuing."""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from mainevent.testing.stack import RunningStack, start_stack

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SECOND = "second"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class Ops:
    """The operator API of a running stack."""

    def __init__(self, stack: RunningStack) -> None:
        assert stack.control_url
        assert stack.control_admin_key
        self.http = httpx.Client(
            base_url=stack.control_url,
            headers={"Authorization": f"Bearer {stack.control_admin_key}"},
            timeout=15,
        )

    def call(self, method: str, path: str, body: Any = None, **headers: str) -> httpx.Response:
        h = {"Idempotency-Key": str(uuid.uuid4())} | {
            k.replace("_", "-"): v for k, v in headers.items()
        }
        return self.http.request(method, path, json=body, headers=h)

    def command(self, event: str, body: dict[str, Any], **headers: str) -> httpx.Response:
        return self.call("POST", f"/v1/events/{event}/commands", body, **headers)

    def event(self, event: str) -> dict[str, Any]:
        r = self.http.get(f"/v1/events/{event}")
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    def media(self, event: str) -> dict[str, Any] | None:
        r = self.http.get(f"/v1/events/{event}/media")
        return r.json() if r.status_code == 200 else None


def playlist(url: str) -> str:
    r = httpx.get(url, timeout=10)
    return r.text if r.status_code == 200 else ""


def msns(text: str) -> list[int]:
    """Media sequence numbers listed in a media playlist (segment URIs are `<msn>.m4s`)."""
    return [int(m) for m in re.findall(r"^(\d+)\.m4s$", text, re.M)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    data = tmp_path_factory.mktemp("supervised")
    s = start_stack(
        data / "data",
        steering=True,
        extra_args=("--segment-duration", "1"),
        timeout=180,
    )
    try:
        yield s
    finally:
        if s.proc.poll() is None:
            s.stop()


@pytest.fixture(scope="module")
def ops(stack: RunningStack) -> Iterator[Ops]:
    o = Ops(stack)
    yield o
    o.http.close()


def test_the_demo_event_is_created_through_the_api_and_goes_live_on_its_own(
    stack: RunningStack, ops: Ops
) -> None:
    """`mainevent up` creates the demo through the control plane; it reaches live by itself:
    through a passing preflight, or (feeds still unhealthy after the bounded wait) by an
    override whose audited reason names the failing checks."""
    ev = ops.event(stack.event)
    assert ev["status"] == "live"
    entries = ops.http.get("/v1/audit", params={"target_id": stack.event}).json()["entries"]
    actions = [e["action"] for e in entries]
    assert "event.create" in actions
    assert "event.transition.rehearsal" in actions
    assert "event.transition.live" in actions
    overrides = [e for e in entries if e["action"] == "event.preflight.override"]
    if overrides:
        reason = overrides[0]["after"]["reason"]
        assert reason.startswith("demo event of mainevent up: preflight still failing after")
    else:
        preflights = [e for e in entries if e["action"] == "event.preflight"]
        assert any(p["after"]["passed"] for p in preflights)
    media = ops.media(stack.event)
    assert media is not None
    assert media["phase"] == "live"
    assert media["pipelines"][0]["ingest_url"].startswith("srt://")
    assert "#EXTM3U" in playlist(stack.edge_master_url("cdn-a"))


def test_degrading_dvr_refuses_what_is_behind_the_live_edge_and_restoring_brings_it_back(
    stack: RunningStack, ops: Ops
) -> None:
    """DVR off on the live demo: a segment far behind the live edge and the start-over
    playlist answer 503 + Retry-After at the origin and through an edge, the live playlist
    keeps advancing and its newest segment is served; DVR back on, the old segment is served
    again."""
    origin_pl = f"{stack.base_url}/live/{stack.event}/v180/index.m3u8"
    startover = f"{stack.base_url}/live/{stack.event}/v180/startover.m3u8"

    def far_behind() -> int | None:
        archived, live = msns(playlist(startover)), msns(playlist(origin_pl))
        return min(archived) if archived and live and max(live) - min(archived) > 8 else None

    old = wait_for("an archived segment far behind the live edge", far_behind)
    edge_msn = max(msns(playlist(origin_pl)))
    assert ops.command(stack.event, {"command": "degrade", "features": ["dvr"]}).status_code == 200
    wait_for("DVR off applied", lambda: (ops.media(stack.event) or {}).get("degraded") == ["dvr"])
    edge = stack.edges["cdn-a"]
    for base in (stack.base_url, edge):
        r = httpx.get(f"{base}/live/{stack.event}/v180/{old}.m4s", timeout=10)
        assert r.status_code == 503, (base, r.status_code, r.text[:200])
        assert r.headers["retry-after"] == "30"
        assert "DVR is switched off" in r.text
    assert httpx.get(startover, timeout=10).status_code == 503
    wait_for("the live playlist advancing", lambda: max(msns(playlist(origin_pl))) >= edge_msn + 2)
    newest = max(msns(playlist(origin_pl)))
    assert httpx.get(f"{edge}/live/{stack.event}/v180/{newest}.m4s", timeout=10).status_code == 200
    metrics = httpx.get(f"{stack.base_url}/metrics", timeout=10).text
    assert f'mainevent_degraded{{event="{stack.event}",feature="dvr"}} 1.0' in metrics

    assert ops.command(stack.event, {"command": "degrade", "features": []}).status_code == 200
    wait_for("DVR back on", lambda: (ops.media(stack.event) or {}).get("degraded") == [])
    assert httpx.get(f"{edge}/live/{stack.event}/v180/{old}.m4s", timeout=10).status_code == 200


def test_two_events_at_once_rehearsal_hidden_preflight_gate_pause_end(
    stack: RunningStack, ops: Ops
) -> None:
    """A second event runs beside the demo: hidden in rehearsal, gated at go-live, slate on
    pause, ENDLIST at the end; commands to the ended event are refused."""
    now = datetime.now(UTC)
    body = {
        "id": SECOND,
        "title": "Second bout",
        "starts_at": (now + timedelta(minutes=30)).isoformat(),
        "ends_at": (now + timedelta(hours=3)).isoformat(),
        "ladder": [{"id": "v180", "width": 320, "height": 180, "bitrate_kbps": 200}],
        "segment_duration_ms": 1000,
        "latency_mode": "standard",
        "rehearsal_lead_s": 3600,  # already inside the lead time: rehearsal at once
        "ingest": {"protocol": "srt", "stream_key": "second-venue-key"},
    }
    assert ops.call("POST", "/v1/events", body).status_code == 201
    assert (
        ops.call("POST", f"/v1/events/{SECOND}/transitions", {"to": "scheduled"}).status_code == 200
    )

    # The supervisor moves it to rehearsal and starts its own ingest and pipeline.
    wait_for("rehearsal", lambda: ops.event(SECOND)["status"] == "rehearsal")
    media = wait_for(
        "rehearsal media",
        lambda: (
            (m := ops.media(SECOND))
            and m["renditions"]
            and all(r["last_msn"] for r in m["renditions"])
            and m
        ),
        timeout=90,
    )
    demo_ingest = ops.media(stack.event)["pipelines"][0]["ingest_url"]  # type: ignore[index]
    assert media["pipelines"][0]["ingest_url"] != demo_ingest  # its own listener
    assert "streamid=second-venue-key" in media["pipelines"][0]["ingest_url"]
    rehearsal = media["rehearsal_path"]
    assert rehearsal
    assert rehearsal.startswith("/rehearsal/")

    # Viewers cannot reach it; operators can, through the origin and every CDN.
    for base in (stack.base_url, *stack.edges.values()):
        r = httpx.get(f"{base}/live/{SECOND}/master.m3u8", timeout=10)
        assert r.status_code == 404, base
        assert httpx.get(f"{base}/live/{SECOND}/v180/index.m3u8", timeout=10).status_code == 404
        assert "#EXTM3U" in playlist(f"{base}{rehearsal}")
    guessed = rehearsal.replace(rehearsal.split("/")[2], "0" * 32)
    assert httpx.get(f"{stack.base_url}{guessed}", timeout=10).status_code == 404

    # Both events stream at once: each media playlist advances while the other does.
    demo_pl = f"{stack.base_url}/live/{stack.event}/v180/index.m3u8"
    second_pl = f"{stack.base_url}{rehearsal.rsplit('/', 1)[0]}/v180/index.m3u8"
    d0, s0 = max(msns(playlist(demo_pl))), max(msns(playlist(second_pl)))
    wait_for(
        "both events advancing",
        lambda: max(msns(playlist(demo_pl))) >= d0 + 2 and max(msns(playlist(second_pl))) >= s0 + 2,
    )

    # Go-live is gated on a stored passing preflight.
    r = ops.command(SECOND, {"command": "go_live"})
    assert r.status_code == 409
    assert r.json()["error"]["reason"] in ("preflight_required", "preflight_failed")
    pf = ops.call("POST", f"/v1/events/{SECOND}/preflight")
    assert pf.status_code == 200
    names = [c["name"] for c in pf.json()["checks"]]
    assert names == [
        "feeds_healthy",
        "segments_validating",
        "manifests_advancing",
        "cdn_paths_fresh",
        "playback_answering",
        "waiting_room_warm",
    ]
    assert ops.http.get(f"/v1/events/{SECOND}/preflight").json()["at"] == pf.json()["at"]
    etag = ops.http.get(f"/v1/events/{SECOND}").headers["ETag"]
    go = {"command": "go_live", "override": {"reason": "e2e: go live whatever the checks say"}}
    r = ops.command(SECOND, go, If_Match=etag)
    assert r.status_code == 200, r.text
    assert r.json()["event"]["status"] == "live"
    audit = ops.http.get("/v1/audit", params={"target_id": SECOND}).json()["entries"]
    if not pf.json()["passed"]:
        override = next(e for e in audit if e["action"] == "event.preflight.override")
        assert override["after"]["reason"] == go["override"]["reason"]
    # The old ETag is stale now: a second operator's command is refused, nothing applied.
    r = ops.command(SECOND, {"command": "pause"}, If_Match=etag)
    assert r.status_code == 412

    # Live: on /live/ through the CDNs; the rehearsal path is closed.
    live_pl = f"{stack.edges['cdn-a']}/live/{SECOND}/v180/index.m3u8"
    wait_for("live playlist on cdn-a", lambda: msns(playlist(live_pl)))
    assert httpx.get(f"{stack.base_url}{rehearsal}", timeout=10).status_code == 404

    # Pause: the slate for every viewer (set off by discontinuities), pipelines still running.
    origin_pl = f"{stack.base_url}/live/{SECOND}/v180/index.m3u8"
    assert ops.command(SECOND, {"command": "pause"}).status_code == 200
    paused_from = max(msns(playlist(origin_pl)))

    def slated() -> bool:
        text = playlist(origin_pl)
        after = text.split(f"\n{paused_from}.m4s", 1)[-1]
        return "#EXT-X-DISCONTINUITY" in after and len(msns(after)) >= 2

    wait_for("slate listed", slated)
    metrics = httpx.get(f"{stack.base_url}/metrics", timeout=10).text
    assert re.search(
        rf'mainevent_slate_segments_total{{event="{SECOND}",rendition="v180"}} [1-9]', metrics
    )
    assert ops.media(SECOND)["pipelines"][0]["state"] != "stopped"  # type: ignore[index]
    assert ops.command(SECOND, {"command": "resume"}).status_code == 200

    # End: ENDLIST on every playlist, the pipeline stopped; later commands refused.
    assert ops.command(SECOND, {"command": "end"}).status_code == 200
    wait_for("ENDLIST", lambda: "#EXT-X-ENDLIST" in playlist(origin_pl))
    assert "#EXT-X-ENDLIST" in playlist(f"{stack.base_url}/live/{SECOND}/a128/index.m3u8")
    final = ops.media(SECOND)
    assert final is not None
    assert final["ended"] is True
    assert final["pipelines"] == []
    r = ops.command(SECOND, {"command": "degrade", "features": ["dvr"]})
    assert r.status_code == 409
    assert r.json()["error"]["reason"] == "event_ended"
    assert ops.command(SECOND, {"command": "pause"}).status_code == 409


def test_a_pipeline_that_cannot_start_is_reported_and_the_event_stays_in_rehearsal(
    stack: RunningStack, ops: Ops
) -> None:
    """Its ingest port is taken: the event shows a clear error and stays in rehearsal."""
    now = datetime.now(UTC)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        body = {
            "id": "blocked",
            "title": "Blocked venue",
            "starts_at": (now + timedelta(minutes=30)).isoformat(),
            "ends_at": (now + timedelta(hours=3)).isoformat(),
            "ladder": [{"id": "v180", "width": 320, "height": 180, "bitrate_kbps": 200}],
            "segment_duration_ms": 1000,
            "latency_mode": "standard",
            "rehearsal_lead_s": 3600,
            "ingest": {"protocol": "srt", "port": taken.getsockname()[1]},
        }
        assert ops.call("POST", "/v1/events", body).status_code == 201
        assert (
            ops.call("POST", "/v1/events/blocked/transitions", {"to": "scheduled"}).status_code
            == 200
        )
        media = wait_for(
            "the error on the event",
            lambda: (m := ops.media("blocked")) and m["error"] and m,
            timeout=90,
        )
        assert "pipeline primary failed" in media["error"]
        assert ops.event("blocked")["status"] == "rehearsal"
    # Clean up: live by override, then end (stops its pipeline).
    go = {"command": "go_live", "override": {"reason": "e2e cleanup"}}
    assert ops.command("blocked", go).status_code == 200
    assert ops.command("blocked", {"command": "end"}).status_code == 200


def test_kill_9_and_restart_resumes_every_event_without_reusing_a_sequence_number(
    stack: RunningStack, ops: Ops
) -> None:
    """kill -9 mid-event: after a restart the demo is still live and its media sequence
    continues above everything published before; the ended event stays ended (VOD)."""
    pl = f"{stack.base_url}/live/{stack.event}/v180/index.m3u8"
    before = msns(playlist(pl))
    assert before
    last_before = max(before)
    seg_before = httpx.get(
        f"{stack.base_url}/live/{stack.event}/v180/{last_before}.m4s", timeout=10
    ).content
    stack.proc.kill()  # SIGKILL: no graceful shutdown, the children die with it
    stack.proc.wait(30)
    stack.stop()  # collects its output reader; nothing left to stop

    again = start_stack(
        stack.data_dir,
        steering=True,
        extra_args=("--segment-duration", "1"),
        timeout=180,
    )
    ops2 = Ops(again)
    try:
        assert ops2.event(stack.event)["status"] == "live"
        assert ops2.event(SECOND)["status"] == "ended"
        pl2 = f"{again.base_url}/live/{stack.event}/v180/index.m3u8"
        after = wait_for(
            "new segments after the restart",
            lambda: (m := msns(playlist(pl2))) and max(m) > last_before + 1 and m,
            timeout=120,
        )
        assert after == sorted(set(after))  # strictly increasing: no number listed twice
        if last_before in after:  # still in the window: the same bytes, not a re-encode
            same = httpx.get(
                f"{again.base_url}/live/{stack.event}/v180/{last_before}.m4s", timeout=10
            )
            assert same.content == seg_before
        ended = playlist(f"{again.base_url}/live/{SECOND}/v180/index.m3u8")
        assert "#EXT-X-ENDLIST" in ended
        assert msns(ended)
    finally:
        ops2.http.close()
        again.stop()
