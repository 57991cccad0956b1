"""Operator routes of the event supervisor on the control plane's API.

    POST /v1/events/{id}/commands    one typed command (rehearse, go_live, pause, resume, end,
                                     archive, force_pipeline, drain_cdn, restore_cdn, degrade)
    POST /v1/events/{id}/preflight   run the preflight checks now; the result is stored
    GET  /v1/events/{id}/preflight   the last stored result
    GET  /v1/events/{id}/media       the media plane's state of the event (for the console)

Every command takes `Idempotency-Key` (the same key replays the first answer, nothing is
applied twice) and an optional `If-Match` with the event's ETag (412 when someone else changed
it first); each is audited as `event.command.<name>` (or the transition's own entry). Commands
to an ended or archived event are 409 `event_ended` (except `archive` of an ended one).

No `from __future__ import annotations`: FastAPI must see the dependency types the caller
passes in as real annotations.
"""

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol

import anyio
from fastapi import Body, FastAPI, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from mainevent.control.errors import Conflict, NotFound
from mainevent.control.lifecycle import EventStatus
from mainevent.control.schemas import ID_PATTERN, EventOut, Feature, Override, PipelineMode
from mainevent.control.store import Actor, ControlStore, Mutation, request_hash
from mainevent.control.supervisor.preflight import CheckResult, PreflightFacts, evaluate, failing

__all__ = [
    "CommandOut",
    "MediaPlane",
    "MediaStateOut",
    "PreflightOut",
    "add_supervisor_routes",
    "preflight_gate",
]

ID_PATH = Path(pattern=ID_PATTERN, description="Event id.")
PREFLIGHT_MAX_AGE_S = 600.0
"""A passing preflight lets the event go live for this long."""

_S = EventStatus


class MediaPlane(Protocol):
    """What the control plane asks of the media plane (implemented by the stack's adapter)."""

    def changed(self, event_id: str) -> None:
        """An event's record changed: re-read it and act (called after the commit)."""

    def media_state(self, event_id: str) -> dict[str, Any] | None:
        """The event's media (`MediaStateOut` fields), None when it runs none."""

    async def preflight_facts(self, event_id: str) -> PreflightFacts | None:
        """What preflight looks at; None when the event runs no media."""


class _Cmd(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Rehearse(_Cmd):
    """scheduled → rehearsal: ingest opens, pipelines start, media on the rehearsal path."""

    command: Literal["rehearse"]


class GoLive(_Cmd):
    """rehearsal → live (preflight must pass, or `override.reason` is given and audited)."""

    command: Literal["go_live"]
    override: Override | None = None


class Pause(_Cmd):
    """live → paused: every viewer sees the slate; the pipelines keep running."""

    command: Literal["pause"]


class Resume(_Cmd):
    """paused → live."""

    command: Literal["resume"]


class End(_Cmd):
    """live/paused → ended: ENDLIST on every playlist, pipelines stopped, ingest closed."""

    command: Literal["end"]


class Archive(_Cmd):
    """ended → archived."""

    command: Literal["archive"]


class ForcePipeline(_Cmd):
    """Publish the primary's or the backup's segments, or let health decide (`auto`)."""

    command: Literal["force_pipeline"]
    mode: PipelineMode


class DrainCdn(_Cmd):
    """Steer sessions of `region` (`*` = all) off `cdn`, `rate` of them per steering TTL."""

    command: Literal["drain_cdn"]
    region: str = Field(pattern=r"^(\*|[A-Za-z0-9_-]{1,32})$")
    cdn: str = Field(pattern=ID_PATTERN)
    rate: float | None = Field(default=None, gt=0, le=1)


class RestoreCdn(_Cmd):
    """Undo a drain of `cdn` in `region`."""

    command: Literal["restore_cdn"]
    region: str = Field(pattern=r"^(\*|[A-Za-z0-9_-]{1,32})$")
    cdn: str = Field(pattern=ID_PATTERN)


class Degrade(_Cmd):
    """The optional features switched off for the event (the whole set; [] restores all)."""

    command: Literal["degrade"]
    features: list[Feature] = Field(max_length=2)


Command = Annotated[
    Rehearse
    | GoLive
    | Pause
    | Resume
    | End
    | Archive
    | ForcePipeline
    | DrainCdn
    | RestoreCdn
    | Degrade,
    Field(discriminator="command"),
]

_TRANSITION: dict[str, EventStatus] = {
    "rehearse": _S.REHEARSAL,
    "go_live": _S.LIVE,
    "pause": _S.PAUSED,
    "resume": _S.LIVE,
    "end": _S.ENDED,
    "archive": _S.ARCHIVED,
}
_FROM = {"go_live": (_S.REHEARSAL,), "resume": (_S.PAUSED,)}


class CommandOut(BaseModel):
    """The answer to a command: the event after it, and what the command did."""

    command: str
    event: EventOut
    result: dict[str, Any] | None = None


class CheckOut(BaseModel):
    name: str
    passed: bool
    detail: str


class PreflightOut(BaseModel):
    """One preflight run (stored in the audit log as `event.preflight`)."""

    event_id: str
    at: datetime
    passed: bool
    checks: list[CheckOut]
    failing: list[str]


class PipelineHealthOut(BaseModel):
    """Ingest and transcoder health of one pipeline."""

    name: str
    healthy: bool
    state: str
    verdict: str
    reason: str
    connected: bool
    bitrate_kbps: float | None
    fps: float | None
    dropped_frames: int | None
    av_drift_ms: float | None
    since_last_packet_s: float | None
    ingest_url: str
    transcoder_restarts: int


class RenditionOut(BaseModel):
    """Manifest freshness of one rendition."""

    rendition: str
    last_msn: int | None
    since_publish_s: float | None


class MediaStateOut(BaseModel):
    """What the media plane does for an event now."""

    event_id: str
    phase: str = Field(description="idle, rehearsal, live, paused, ended, archived.")
    error: str | None = Field(
        description="What the operator must know (e.g. a pipeline failing to start)."
    )
    published_pipeline: str | None = Field(description="Whose segments viewers get now.")
    pipeline_mode: str
    degraded: list[str]
    pipelines: list[PipelineHealthOut]
    renditions: list[RenditionOut]
    rehearsal_path: str | None = Field(
        description="Where operators watch the rehearsal (origin and CDNs; viewers cannot reach it)."
    )
    live_path: str
    ended: bool


def _results_out(event_id: str, results: tuple[CheckResult, ...], at: float) -> PreflightOut:
    return PreflightOut(
        event_id=event_id,
        at=datetime.fromtimestamp(at, UTC),
        passed=not failing(results),
        checks=[CheckOut(name=r.name.value, passed=r.passed, detail=r.detail) for r in results],
        failing=list(failing(results)),
    )


def preflight_gate(
    store: ControlStore,
    event_id: str,
    override: Override | None,
    now: float,
) -> dict[str, Any] | None:
    """Conflict unless the last preflight passed within `PREFLIGHT_MAX_AGE_S`; with an
    override, the audit record of it (what failed and why it went live anyway)."""
    last = store.latest_audit(event_id, "event.preflight")
    stored = None if last is None or last.after is None else PreflightOut.model_validate(last.after)
    fresh = stored is not None and now - stored.at.timestamp() <= PREFLIGHT_MAX_AGE_S
    if stored is not None and stored.passed and fresh:
        return None
    failing_checks = (
        [] if stored is None else [c.model_dump() for c in stored.checks if not c.passed]
    )
    if override is not None:
        return {
            "reason": override.reason,
            "preflight": None if stored is None else stored.model_dump(mode="json"),
        }
    if stored is None or not fresh:
        raise Conflict(
            "preflight_required",
            f"run the preflight (POST /v1/events/{event_id}/preflight) before going live, "
            "or give override.reason",
            details={"max_age_s": PREFLIGHT_MAX_AGE_S, "failing": failing_checks},
        )
    raise Conflict(
        "preflight_failed",
        "preflight checks fail: "
        + ", ".join(stored.failing)
        + "; fix them, or give override.reason",
        details={"failing": failing_checks},
    )


def add_supervisor_routes(
    app: FastAPI,
    store: ControlStore,
    media: Callable[[], MediaPlane | None],
    *,
    playback_facts: Callable[[str, float], Any],
    transition: Callable[
        [Actor, str, EventStatus, Override | None, str | None, str, str, str], Mutation
    ],
    steering: Any,
    reader: Any,
    operator: Any,
    idem_key: Any,
    if_match: Any,
    errors: Callable[..., dict[int | str, dict[str, Any]]],
    auth: dict[str, Any],
    respond: Callable[[Mutation], Response],
    clock: Callable[[], float] = time.time,
) -> None:
    """Add the routes above. `transition(actor, id, to, override, if_match, key, path, fp)` is the app's
    guarded transition; `playback_facts(id, now)` awaits the playback service's answers
    (problem strings) for preflight; `steering` the steering runtime (None: no CDN drains);
    `respond` the app's answer to a mutation (status, body, ETag, replay header)."""

    def changed(event_id: str) -> None:
        plane = media()
        if plane is not None:
            plane.changed(event_id)

    answer = respond

    def wrap(name: str, m: Mutation, result: dict[str, Any] | None = None) -> Mutation:
        if m.status >= 300:
            return m
        body = {"command": name, "event": m.body, "result": result}
        return Mutation(m.status, body, m.etag, m.replayed)

    @app.post(
        "/v1/events/{event_id}/commands",
        response_model=CommandOut,
        tags=["supervisor"],
        responses=errors(400, 401, 403, 404, 409, 412, 413, 422),
        openapi_extra=auth,
    )
    def command(
        event_id: Annotated[str, ID_PATH],
        body: Annotated[Command, Body()],
        actor: operator,
        key: idem_key,
        if_match: if_match = None,
    ) -> Response:
        """Run one operator command on the event (idempotent, audited, `If-Match` guarded)."""
        name = body.command
        path = f"/v1/events/{event_id}/commands"
        fp = request_hash("POST", path, body.model_dump_json().encode() + (if_match or "").encode())
        if name in _TRANSITION:
            to = _TRANSITION[name]
            override = body.override if isinstance(body, GoLive) else None
            allowed_from = _FROM.get(name)
            if allowed_from is not None:
                current = store.get_event(event_id).status
                if current not in allowed_from and current is not to:
                    raise Conflict(
                        "illegal_command",
                        f"{name} applies to an event in {', '.join(allowed_from)}; it is {current}",
                        details={"from": current.value, "command": name},
                    )
            m = transition(actor, event_id, to, override, if_match, key, path, fp)
            return answer(wrap(name, m))
        if isinstance(body, ForcePipeline):
            m = store.idempotent(
                actor,
                key,
                "POST",
                path,
                fp,
                lambda s: store.command_event(
                    s, actor, event_id, name, {"pipeline_mode": body.mode}, if_match, key
                ),
            )
            changed(event_id)
            return answer(wrap(name, m, {"pipeline_mode": body.mode}))
        if isinstance(body, Degrade):
            features = sorted(set(body.features))
            m = store.idempotent(
                actor,
                key,
                "POST",
                path,
                fp,
                lambda s: store.command_event(
                    s, actor, event_id, name, {"degraded": features}, if_match, key
                ),
            )
            changed(event_id)
            return answer(wrap(name, m, {"degraded": features}))
        assert isinstance(body, DrainCdn | RestoreCdn)
        return answer(cdn_command(actor, event_id, body, key, if_match, path, fp))

    def cdn_command(
        actor: Actor,
        event_id: str,
        body: "DrainCdn | RestoreCdn",
        key: str,
        if_match: str | None,
        path: str,
        fp: str,
    ) -> Mutation:
        from mainevent.control.steering.model import Override as SteeringOverride
        from mainevent.control.steering.model import OverrideAction

        if steering is None:
            raise NotFound("no_steering", "this control plane steers no CDNs")
        policy = steering.policy
        if body.cdn not in policy.cdns:
            raise NotFound(
                "cdn_not_found", f"no CDN {body.cdn!r}; steered CDNs: {', '.join(policy.cdns)}"
            )
        now = clock()
        current = {(x.region, x.cdn): x for x in policy.overrides()}.get((body.region, body.cdn))
        applied: list[bool] = []
        if isinstance(body, DrainCdn):
            o = SteeringOverride(
                region=body.region,
                cdn=body.cdn,
                action=OverrideAction.DRAIN,
                rate=body.rate or steering.settings.drain_share,
                at=now,
            )
            result: dict[str, Any] = {
                "region": o.region,
                "cdn": o.cdn,
                "action": "drain",
                "rate": o.rate,
            }
        else:
            o = None
            result = {
                "region": body.region,
                "cdn": body.cdn,
                "action": "restore",
                "was_drained": current is not None,
            }

        def apply(s: Any) -> Mutation:
            m = store.command_event(
                s, actor, event_id, body.command, None, if_match, key, result=result
            )
            applied.append(True)
            return m

        m = store.idempotent(actor, key, "POST", path, fp, apply)
        if applied:  # committed (not a replay): now it takes effect
            if o is not None:
                policy.set_override(o)
            elif current is not None:
                policy.clear_override(body.region, body.cdn, now)
        return wrap(body.command, m, result)

    @app.post(
        "/v1/events/{event_id}/preflight",
        response_model=PreflightOut,
        tags=["supervisor"],
        responses=errors(400, 401, 403, 404, 409, 413, 422),
        openapi_extra=auth,
    )
    async def run_preflight(
        event_id: Annotated[str, ID_PATH], actor: operator, key: idem_key
    ) -> Response:
        """Check feeds, segments, manifests, every CDN path, playback and the waiting room now;
        the result is stored (`GET` returns it) and gates go-live."""
        ev = await anyio.to_thread.run_sync(store.get_event, event_id)
        if ev.status is not _S.REHEARSAL:
            raise Conflict(
                "not_in_rehearsal",
                f"preflight runs in rehearsal; event {event_id!r} is {ev.status}",
            )
        out = await run_checks(event_id)
        body = json.loads(out.model_dump_json())
        path = f"/v1/events/{event_id}/preflight"

        def apply(s: Any) -> Mutation:
            store.record(s, actor, "event.preflight", "event", event_id, None, body, key)
            return Mutation(200, body)

        fp = request_hash("POST", path, b"")
        m = await anyio.to_thread.run_sync(
            lambda: store.idempotent(actor, key, "POST", path, fp, apply)
        )
        return answer(m)

    async def run_checks(event_id: str) -> PreflightOut:
        now = clock()
        plane = media()
        facts = None if plane is None else await plane.preflight_facts(event_id)
        if facts is None:
            facts = PreflightFacts(
                pipelines={}, rejected_segments=0, since_publish_s={}, target_duration_s=1
            )
        playback_problem, waiting_problem = await playback_facts(event_id, now)
        facts = PreflightFacts(
            pipelines=facts.pipelines,
            rejected_segments=facts.rejected_segments,
            since_publish_s=facts.since_publish_s,
            target_duration_s=facts.target_duration_s,
            cdn_problems=facts.cdn_problems,
            playback_problem=playback_problem,
            waiting_room_problem=waiting_problem,
        )
        return _results_out(event_id, evaluate(facts), now)

    @app.get(
        "/v1/events/{event_id}/preflight",
        response_model=PreflightOut,
        tags=["supervisor"],
        responses=errors(401, 403, 404, 422),
        openapi_extra=auth,
    )
    def last_preflight(event_id: Annotated[str, ID_PATH], _actor: reader) -> PreflightOut:
        """The last stored preflight of the event (404 `preflight_not_run` before the first)."""
        store.get_event(event_id)
        last = store.latest_audit(event_id, "event.preflight")
        if last is None or last.after is None:
            raise NotFound("preflight_not_run", f"no preflight stored for event {event_id!r}")
        return PreflightOut.model_validate(last.after)

    @app.get(
        "/v1/events/{event_id}/media",
        response_model=MediaStateOut,
        tags=["supervisor"],
        responses=errors(401, 403, 404, 422),
        openapi_extra=auth,
    )
    async def media_state(event_id: Annotated[str, ID_PATH], _actor: reader) -> MediaStateOut:
        """Per pipeline ingest health (bitrate, fps, drops, A/V drift), the published pipeline,
        manifest freshness (404 `no_media` when this process runs no media for the event)."""
        # The media plane's state is read on the event loop it runs on (not a worker thread).
        await anyio.to_thread.run_sync(store.get_event, event_id)
        plane = media()
        state = None if plane is None else plane.media_state(event_id)
        if state is None:
            raise NotFound("no_media", f"the media plane runs nothing for event {event_id!r}")
        return MediaStateOut.model_validate(state)
