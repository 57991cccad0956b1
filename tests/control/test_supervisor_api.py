"""Operator commands, preflight and the media view on the control plane's API, with the
media plane behind its `MediaPlane` interface (the e2e test runs the real one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from mainevent.control.supervisor.preflight import PreflightFacts
from tests.control.conftest import READER, Harness

pytestmark = pytest.mark.anyio

GOOD = PreflightFacts(
    pipelines={"primary": True, "backup": True},
    rejected_segments=0,
    since_publish_s={"v360": 0.5},
    target_duration_s=2,
    cdn_problems={"cdn-a": None},
)


@dataclass
class FakeMediaPlane:
    facts: PreflightFacts | None = GOOD
    changes: list[str] = field(default_factory=list)

    def changed(self, event_id: str) -> None:
        self.changes.append(event_id)

    def media_state(self, event_id: str) -> dict[str, Any] | None:
        if self.facts is None:
            return None
        return {
            "event_id": event_id,
            "phase": "rehearsal",
            "error": None,
            "published_pipeline": "primary",
            "pipeline_mode": "auto",
            "degraded": [],
            "pipelines": [
                {
                    "name": "primary",
                    "healthy": True,
                    "state": "transcoding",
                    "verdict": "healthy",
                    "reason": "",
                    "connected": True,
                    "bitrate_kbps": 1500.0,
                    "fps": 30.0,
                    "dropped_frames": 0,
                    "av_drift_ms": 3.0,
                    "since_last_packet_s": 0.01,
                    "ingest_url": "srt://127.0.0.1:9000",
                    "transcoder_restarts": 0,
                }
            ],
            "renditions": [{"rendition": "v360", "last_msn": 7, "since_publish_s": 0.5}],
            "rehearsal_path": f"/rehearsal/k/{event_id}/master.m3u8",
            "live_path": f"/live/{event_id}/master.m3u8",
            "ended": False,
        }

    async def preflight_facts(self, event_id: str) -> PreflightFacts | None:
        return self.facts


@pytest.fixture
def plane(harness: Harness) -> FakeMediaPlane:
    p = FakeMediaPlane()
    harness.services.media = p
    return p


async def live(h: Harness) -> None:
    """An event already live (walked there before the media plane was attached)."""
    plane = h.services.media
    h.services.media = None
    await h.event("final", "live")
    h.services.media = plane


async def rehearsal(h: Harness) -> None:
    await h.event("final", "rehearsal", starts_in=600)


async def test_go_live_needs_a_preflight(harness: Harness, plane: FakeMediaPlane) -> None:
    """No stored preflight: go-live is 409 preflight_required (commands and /transitions)."""
    await rehearsal(harness)
    r = await harness.op("POST", "/v1/events/final/commands", {"command": "go_live"})
    assert r.status_code == 409
    assert r.json()["error"]["reason"] == "preflight_required"
    r = await harness.op("POST", "/v1/events/final/transitions", {"to": "live"})
    assert r.json()["error"]["reason"] == "preflight_required"
    assert (await harness.op("GET", "/v1/events/final/preflight")).status_code == 404


async def test_a_failing_check_blocks_go_live_unless_overridden(
    harness: Harness, plane: FakeMediaPlane
) -> None:
    """A failing preflight: 409 naming the failing checks; with override.reason it goes live,
    audited with what failed; the same Idempotency-Key replays without applying twice."""
    await rehearsal(harness)
    plane.facts = PreflightFacts(
        pipelines={"primary": True, "backup": False},
        rejected_segments=0,
        since_publish_s={"v360": 0.5},
        target_duration_s=2,
        cdn_problems={"cdn-a": "segment 7 answered 404"},
    )
    pf = await harness.op("POST", "/v1/events/final/preflight")
    assert pf.status_code == 200
    assert pf.json()["passed"] is False
    assert pf.json()["failing"] == ["feeds_healthy", "cdn_paths_fresh"]
    stored = await harness.op("GET", "/v1/events/final/preflight", key=READER)
    assert stored.json() == pf.json()
    r = await harness.op("POST", "/v1/events/final/commands", {"command": "go_live"})
    assert r.status_code == 409
    err = r.json()["error"]
    assert err["reason"] == "preflight_failed"
    assert [c["name"] for c in err["details"]["failing"]] == ["feeds_healthy", "cdn_paths_fresh"]
    body = {"command": "go_live", "override": {"reason": "backup venue link down, going anyway"}}
    r = await harness.op("POST", "/v1/events/final/commands", body, idem="go-1")
    assert r.status_code == 200, r.text
    assert r.json()["event"]["status"] == "live"
    again = await harness.op("POST", "/v1/events/final/commands", body, idem="go-1")
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    audit = (await harness.op("GET", "/v1/audit?target_id=final")).json()["entries"]
    overrides = [e for e in audit if e["action"] == "event.preflight.override"]
    assert len(overrides) == 1
    assert overrides[0]["after"]["reason"] == body["override"]["reason"]  # type: ignore[index]
    assert overrides[0]["after"]["preflight"]["failing"] == ["feeds_healthy", "cdn_paths_fresh"]
    assert [e["action"] for e in audit].count("event.transition.live") == 1


async def test_a_passing_preflight_lets_it_go_live(harness: Harness, plane: FakeMediaPlane) -> None:
    """Every check passes: go-live without override; a stale preflight is required again."""
    await rehearsal(harness)
    pf = await harness.op("POST", "/v1/events/final/preflight")
    assert pf.json()["passed"] is True, pf.json()
    harness.clock.advance(601)
    r = await harness.op("POST", "/v1/events/final/commands", {"command": "go_live"})
    assert r.json()["error"]["reason"] == "preflight_required"
    await harness.op("POST", "/v1/events/final/preflight")
    r = await harness.op("POST", "/v1/events/final/commands", {"command": "go_live"})
    assert r.status_code == 200, r.text
    assert "final" in plane.changes


async def test_waiting_room_closed_fails_its_check(harness: Harness, plane: FakeMediaPlane) -> None:
    """An event starting beyond the pre-authorisation window: the waiting-room check fails."""
    await harness.event("final", "rehearsal", starts_in=7200)
    pf = (await harness.op("POST", "/v1/events/final/preflight")).json()
    assert pf["failing"] == ["waiting_room_warm"]


async def test_preflight_only_in_rehearsal(harness: Harness, plane: FakeMediaPlane) -> None:
    """Preflight of a scheduled event is 409 not_in_rehearsal."""
    await harness.event("final", "scheduled", starts_in=600)
    r = await harness.op("POST", "/v1/events/final/preflight")
    assert r.status_code == 409
    assert r.json()["error"]["reason"] == "not_in_rehearsal"


async def test_commands_pause_resume_end_and_refusals(
    harness: Harness, plane: FakeMediaPlane
) -> None:
    """Lifecycle commands act once; a stale ETag is 412; an ended event refuses commands."""
    await live(harness)
    r = await harness.op("POST", "/v1/events/final/commands", {"command": "resume"})
    assert r.status_code == 409
    assert r.json()["error"]["reason"] == "already_in_state"
    etag = (await harness.op("GET", "/v1/events/final")).headers["ETag"]
    r = await harness.op(
        "POST", "/v1/events/final/commands", {"command": "pause"}, headers={"If-Match": etag}
    )
    assert r.status_code == 200
    assert r.json()["event"]["status"] == "paused"
    r = await harness.op(
        "POST", "/v1/events/final/commands", {"command": "resume"}, headers={"If-Match": etag}
    )
    assert r.status_code == 412
    r = await harness.op("POST", "/v1/events/final/commands", {"command": "pause"})
    assert r.status_code == 409
    assert r.json()["error"]["reason"] == "already_in_state"
    r = await harness.op("POST", "/v1/events/final/commands", {"command": "go_live"})
    assert r.status_code == 409
    assert r.json()["error"]["reason"] == "illegal_command"  # paused: resume, not go_live
    r = await harness.op("POST", "/v1/events/final/commands", {"command": "end"})
    assert r.json()["event"]["status"] == "ended"
    for body in (
        {"command": "force_pipeline", "mode": "backup"},
        {"command": "degrade", "features": ["dvr"]},
        {"command": "drain_cdn", "region": "eu", "cdn": "cdn-a"},
    ):
        r = await harness.op("POST", "/v1/events/final/commands", body)
        assert r.status_code == 409, body
        assert r.json()["error"]["reason"] == "event_ended"
    r = await harness.op("POST", "/v1/events/final/commands", {"command": "archive"})
    assert r.status_code == 200


async def test_force_pipeline_and_degrade_are_flags_on_the_event(
    harness: Harness, plane: FakeMediaPlane
) -> None:
    """force_pipeline and degrade change the record (new ETag, audited) and tell the media plane."""
    await live(harness)
    r = await harness.op(
        "POST", "/v1/events/final/commands", {"command": "force_pipeline", "mode": "backup"}
    )
    assert r.status_code == 200
    assert r.json()["event"]["pipeline_mode"] == "backup"
    r = await harness.op(
        "POST", "/v1/events/final/commands", {"command": "degrade", "features": ["dvr", "dvr"]}
    )
    assert r.json()["event"]["degraded"] == ["dvr"]
    assert r.json()["result"] == {"degraded": ["dvr"]}
    audit = (await harness.op("GET", "/v1/audit?target_id=final")).json()["entries"]
    assert audit[0]["action"] == "event.command.degrade"
    assert audit[1]["action"] == "event.command.force_pipeline"
    assert plane.changes.count("final") >= 2


async def test_drain_and_restore_a_cdn_per_region(harness: Harness, plane: FakeMediaPlane) -> None:
    """drain_cdn / restore_cdn set and clear the steering override (audited on the event)."""
    await live(harness)
    policy = harness.services.steering.policy  # type: ignore[union-attr]
    cdn = next(iter(policy.cdns))
    r = await harness.op(
        "POST", "/v1/events/final/commands", {"command": "drain_cdn", "region": "eu", "cdn": cdn}
    )
    assert r.status_code == 200, r.text
    assert [(o.region, o.cdn) for o in policy.overrides()] == [("eu", cdn)]
    r = await harness.op(
        "POST", "/v1/events/final/commands", {"command": "restore_cdn", "region": "eu", "cdn": cdn}
    )
    assert r.status_code == 200
    assert policy.overrides() == [] or all(o.region != "eu" for o in policy.overrides())
    r = await harness.op(
        "POST", "/v1/events/final/commands", {"command": "drain_cdn", "region": "eu", "cdn": "nope"}
    )
    assert r.status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"command": "explode"},
        {"command": "force_pipeline", "mode": "tertiary"},
        {"command": "degrade", "features": ["video"]},
        {"command": "go_live", "override": {"reason": ""}},
        {"command": "pause", "extra": 1},
        {},
    ],
)
async def test_bad_command_bodies_are_422(
    harness: Harness, plane: FakeMediaPlane, body: dict[str, Any]
) -> None:
    """Every malformed command is a precise 422 in the error envelope."""
    await live(harness)
    r = await harness.op("POST", "/v1/events/final/commands", body)
    assert r.status_code == 422
    assert r.json()["error"]["reason"] == "invalid_request"


async def test_read_only_sees_media_but_cannot_command(
    harness: Harness, plane: FakeMediaPlane
) -> None:
    """Read-only keys get the media view; commands are 403; no media is 404 no_media."""
    await rehearsal(harness)
    m = await harness.op("GET", "/v1/events/final/media", key=READER)
    assert m.status_code == 200
    assert m.json()["pipelines"][0]["av_drift_ms"] == 3.0
    r = await harness.op("POST", "/v1/events/final/commands", {"command": "end"}, key=READER)
    assert r.status_code == 403
    plane.facts = None
    m = await harness.op("GET", "/v1/events/final/media")
    assert m.status_code == 404
    assert m.json()["error"]["reason"] == "no_media"
    assert (await harness.op("GET", "/v1/events/nope/media")).status_code == 404
