"""HTTP adapter of the control plane: FastAPI routes (OpenAPI at /openapi.json) over the store,
the playback service and the purchase flow, behind a pure-ASGI admission-control layer.

Operator routes take ``Authorization: Bearer <api key>``; viewer routes take the viewer JWT.
Every mutating operator call and every purchase requires an ``Idempotency-Key`` header.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import generate_latest

from mainevent.common.admission import (
    AdmissionController,
    Bulkhead,
    Priority,
)
from mainevent.common.histogram import BUCKETS, LatencyHistogram
from mainevent.control.admission_http import AdmissionMiddleware, watch_loop_delay
from mainevent.control.auth import DevIdentityProvider, OperatorAuth, ViewerAuth
from mainevent.control.errors import ControlError
from mainevent.control.lifecycle import EventStatus
from mainevent.control.payments import PaymentProvider
from mainevent.control.playback import PlaybackService
from mainevent.control.purchases import run_purchase
from mainevent.control.schemas import (
    AccountIn,
    AccountOut,
    AuditList,
    DevTokenRequest,
    DevTokenResponse,
    ErrorResponse,
    EventCreate,
    EventList,
    EventOut,
    EventUpdate,
    PlaybackGrant,
    PlaybackRequest,
    PurchaseIn,
    PurchaseOut,
    RefreshRequest,
    TransitionRequest,
)
from mainevent.control.settings import ControlSettings
from mainevent.control.steering.api import add_steering_routes
from mainevent.control.steering.server import SteeringRuntime
from mainevent.control.store import Actor, ControlStore, Mutation, request_hash

__all__ = ["ControlServices", "create_app", "error_response"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 412, 422, 429, 503)
}


@dataclass
class ControlServices:
    """Everything the routes use; built by the server (or a test) and handed to :func:`create_app`."""

    settings: ControlSettings
    store: ControlStore
    playback: PlaybackService
    payments: PaymentProvider
    operators: OperatorAuth
    viewers: ViewerAuth
    dev_idp: DevIdentityProvider | None
    admission: AdmissionController = field(default_factory=AdmissionController)
    purchases: Bulkhead = field(default_factory=lambda: Bulkhead(8))
    latency: dict[Priority, LatencyHistogram] = field(
        default_factory=lambda: {p: LatencyHistogram() for p in Priority}
    )
    payment_timeout_s: float = 10.0
    purchase_wait_s: float = 10.0
    steering: SteeringRuntime | None = None
    """Content steering: manifests at /steering/, operator controls at /v1/steering."""


def error_response(err: ControlError) -> JSONResponse:
    """The JSON error envelope with Retry-After when there is one."""
    retryable = bool(err.details and err.details.get("retryable")) or err.retry_after is not None
    details = {k: v for k, v in (err.details or {}).items() if k != "retryable"} or None
    body = {
        "error": {
            "reason": err.reason,
            "message": err.message,
            "retryable": retryable,
            "details": details,
        }
    }
    headers = {}
    if err.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(err.retry_after)))
    return JSONResponse(body, status_code=err.status, headers=headers)


def _grant_response(grant: PlaybackGrant) -> Response:
    # Serialised once by pydantic-core (the response_model still documents it in OpenAPI).
    return Response(
        grant.model_dump_json(),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _mutation_response(m: Mutation) -> JSONResponse:
    headers = {}
    if m.etag:
        headers["ETag"] = m.etag
    if m.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(m.body, status_code=m.status, headers=headers)


def _services(request: Request) -> ControlServices:
    services: ControlServices = request.app.state.services
    return services


def _operator(need: str) -> Callable[..., Awaitable[Actor]]:
    async def dep(request: Request, authorization: Annotated[str | None, Header()] = None) -> Actor:
        return _services(request).operators.authenticate(authorization, need)

    return dep


async def _idem_key(idempotency_key: Annotated[str | None, Header(max_length=128)] = None) -> str:
    if not idempotency_key:
        raise ControlError(
            "idempotency_key_required",
            "send an Idempotency-Key header (e.g. a UUID) with every change",
        )
    return idempotency_key


async def _viewer(request: Request) -> str:
    svc = _services(request)
    return svc.viewers.account(request.headers.get("authorization"), svc.playback.clock())


Reader = Annotated[Actor, Depends(_operator("read-only"))]
Operator = Annotated[Actor, Depends(_operator("operator"))]
Admin = Annotated[Actor, Depends(_operator("admin"))]
IdemKey = Annotated[str, Depends(_idem_key)]
IfMatch = Annotated[str | None, Header()]
Viewer = Annotated[str, Depends(_viewer)]


def create_app(services: ControlServices) -> AdmissionMiddleware:
    """The control-plane ASGI application: admission control wrapped around the FastAPI app.

    Admission sits outside FastAPI's own middleware so a shed request costs as little as possible.
    """

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_loop_delay, services.admission)
            if services.steering is not None:
                # Its edge prober and session-expiry timer live as long as the app.
                tg.start_soon(services.steering.serve)
            yield
            tg.cancel_scope.cancel()

    app = FastAPI(
        title="mainevent control plane",
        version="0.1.0",
        description="Events, accounts, purchases and playback authorisation. Errors carry a machine-readable `reason`.",
        lifespan=lifespan,
        responses=_ERRORS,
    )
    app.state.services = services
    svc = services
    store = svc.store
    playback = svc.playback

    @app.exception_handler(ControlError)
    async def _control_error(_request: Request, exc: ControlError) -> JSONResponse:
        return error_response(exc)

    # -- health -----------------------------------------------------------------------------------

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """Liveness."""
        return {"status": "ok"}

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    def metrics() -> str:
        """Prometheus text exposition of admission, breaker and playback counters."""
        a = svc.admission.statistics()
        st = playback.stats
        lines = [
            "# TYPE mainevent_control_in_flight gauge",
            f"mainevent_control_in_flight {a.in_flight}",
            "# TYPE mainevent_control_queued gauge",
            f"mainevent_control_queued {a.queued}",
            "# TYPE mainevent_control_queue_delay_seconds gauge",
            f"mainevent_control_queue_delay_seconds {a.delay:.6f}",
            "# TYPE mainevent_control_admitted_total counter",
            *(
                f'mainevent_control_admitted_total{{priority="{p.name.lower()}"}} {a.admitted[p]}'
                for p in Priority
            ),
            "# TYPE mainevent_control_shed_total counter",
            *(
                f'mainevent_control_shed_total{{priority="{p.name.lower()}"}} {a.shed[p]}'
                for p in Priority
            ),
            "# HELP mainevent_control_shed_late_total Admitted on arrival, shed when about to run (waited too long).",
            "# TYPE mainevent_control_shed_late_total counter",
            *(
                f'mainevent_control_shed_late_total{{priority="{p.name.lower()}"}} {a.late[p]}'
                for p in Priority
            ),
            "# TYPE mainevent_playback_grants_total counter",
            f"mainevent_playback_grants_total {st.grants}",
            f"mainevent_playback_preauth_grants_total {st.preauth_grants}",
            f"mainevent_playback_refreshes_total {st.refreshes}",
            f"mainevent_playback_degraded_grants_total {st.degraded_grants}",
            f"mainevent_entitlement_lookups_total {st.store_lookups}",
            f"mainevent_entitlement_failures_total {st.store_failures}",
            "# TYPE mainevent_playback_denials_total counter",
            *(
                f'mainevent_playback_denials_total{{reason="{r}"}} {n}'
                for r, n in sorted(st.denials.items())
            ),
            f"mainevent_entitlement_breaker_open {int(playback.breaker.state != 'closed')}",
            f"mainevent_playback_sessions {len(playback.sessions)}",
            "# HELP mainevent_control_request_seconds Arrival to end of response of admitted viewer requests.",
            "# TYPE mainevent_control_request_seconds histogram",
        ]
        for p in Priority:
            h = svc.latency[p]
            label = p.name.lower()
            cumulative = 0
            for bound, n in zip(BUCKETS, h.counts, strict=False):
                cumulative += n
                lines.append(
                    f'mainevent_control_request_seconds_bucket{{priority="{label}",le="{bound:.6g}"}} {cumulative}'
                )
            lines.append(
                f'mainevent_control_request_seconds_bucket{{priority="{label}",le="+Inf"}} {h.total}'
            )
            lines.append(f'mainevent_control_request_seconds_sum{{priority="{label}"}} {h.sum:.6f}')
            lines.append(f'mainevent_control_request_seconds_count{{priority="{label}"}} {h.total}')
        text = "\n".join(lines) + "\n"
        if svc.steering is not None:
            text += generate_latest(svc.steering.registry).decode()
        return text

    # -- events -----------------------------------------------------------------------------------

    @app.post("/v1/events", status_code=201, response_model=EventOut, tags=["events"])
    def create_event(body: EventCreate, actor: Operator, key: IdemKey) -> Response:
        """Create a draft event."""
        fp = request_hash("POST", "/v1/events", body.model_dump_json(exclude_unset=True).encode())
        m = store.idempotent(
            actor, key, "POST", "/v1/events", fp, lambda s: store.create_event(s, actor, body, key)
        )
        resp = _mutation_response(m)
        resp.headers["Location"] = f"/v1/events/{body.id}"
        return resp

    @app.get("/v1/events", response_model=EventList, tags=["events"])
    def list_events(
        _actor: Reader,
        status: EventStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> EventList:
        """Events, optionally by status."""
        return EventList(events=store.list_events(status, limit))

    @app.get("/v1/events/{event_id}", response_model=EventOut, tags=["events"])
    def get_event(event_id: str, actor: Reader) -> Response:
        """One event, with its ETag (ingest credentials masked for read-only keys)."""
        out = store.get_event(event_id)
        if actor.role == "read-only":
            out.ingest.stream_key = "********"
            out.ingest.passphrase = None if out.ingest.passphrase is None else "********"
        return JSONResponse(json.loads(out.model_dump_json()), headers={"ETag": f'"{out.version}"'})

    @app.patch("/v1/events/{event_id}", response_model=EventOut, tags=["events"])
    def update_event(
        event_id: str, body: EventUpdate, actor: Operator, key: IdemKey, if_match: IfMatch = None
    ) -> Response:
        """Change some fields; `If-Match` with the ETag guards against lost updates (412)."""
        path = f"/v1/events/{event_id}"
        fp = request_hash(
            "PATCH",
            path,
            body.model_dump_json(exclude_unset=True).encode() + (if_match or "").encode(),
        )
        m = store.idempotent(
            actor,
            key,
            "PATCH",
            path,
            fp,
            lambda s: store.update_event(s, actor, event_id, body, if_match, key),
        )
        playback.invalidate_event(event_id)
        return _mutation_response(m)

    @app.post("/v1/events/{event_id}/transitions", response_model=EventOut, tags=["events"])
    def transition_event(
        event_id: str,
        body: TransitionRequest,
        actor: Operator,
        key: IdemKey,
        if_match: IfMatch = None,
    ) -> Response:
        """Move the event along draft → scheduled → rehearsal → live ⇄ paused → ended → archived (409 otherwise)."""
        path = f"/v1/events/{event_id}/transitions"
        fp = request_hash(
            "POST",
            path,
            body.model_dump_json(exclude_unset=True).encode() + (if_match or "").encode(),
        )
        m = store.idempotent(
            actor,
            key,
            "POST",
            path,
            fp,
            lambda s: store.transition_event(s, actor, event_id, body.to, if_match, key),
        )
        playback.invalidate_event(event_id)
        return _mutation_response(m)

    @app.get("/v1/audit", response_model=AuditList, tags=["events"])
    def audit(
        _actor: Reader,
        target_id: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> AuditList:
        """Operator actions, newest first."""
        return AuditList(entries=store.audit(target_id, limit))

    # -- accounts ---------------------------------------------------------------------------------

    @app.put("/v1/accounts/{account_id}", response_model=AccountOut, tags=["accounts"])
    def put_account(
        account_id: str, body: AccountIn, actor: Admin, key: IdemKey, if_match: IfMatch = None
    ) -> Response:
        """Create or replace an account (country, date of birth, plan and its validity)."""
        path = f"/v1/accounts/{account_id}"
        fp = request_hash(
            "PUT",
            path,
            body.model_dump_json(exclude_unset=True).encode() + (if_match or "").encode(),
        )
        m = store.idempotent(
            actor,
            key,
            "PUT",
            path,
            fp,
            lambda s: store.put_account(s, actor, account_id, body, if_match, key),
        )
        playback.invalidate_account(account_id)
        return _mutation_response(m)

    @app.get("/v1/accounts/{account_id}", response_model=AccountOut, tags=["accounts"])
    def get_account(account_id: str, _actor: Reader) -> Response:
        """One account, with its ETag."""
        out = store.get_account(account_id)
        return JSONResponse(json.loads(out.model_dump_json()), headers={"ETag": f'"{out.version}"'})

    # -- viewers ----------------------------------------------------------------------------------

    def client(request: Request) -> tuple[str | None, str | None]:
        peer = request.client.host if request.client else None
        return playback.region_of(
            peer,
            request.headers.get("x-forwarded-for"),
            request.headers.get(svc.settings.edge_region_header),
        )

    @app.get("/v1/events/{event_id}/status", tags=["playback"])
    async def event_status(event_id: str) -> dict[str, Any]:
        """Public waiting-room polling: status and start time (lowest priority under load)."""
        now = playback.clock()
        ev = await playback.event(event_id, now)
        return {
            "id": ev.id,
            "status": ev.status.value,
            "starts_at": ev.starts_at,
            "server_time": now,
        }

    @app.post("/v1/events/{event_id}/playback", response_model=PlaybackGrant, tags=["playback"])
    async def start_playback(
        event_id: str, body: PlaybackRequest, request: Request, account: Viewer
    ) -> Response:
        """Authorise a new playback: every check, then a signed token, manifest URL, CDNs and player config."""
        address, region = client(request)
        playback.rate_limit(account, address, playback.clock())
        grant = await playback.authorise(account, event_id, body.device, region)
        return _grant_response(grant)

    @app.post("/v1/sessions/{session_id}/refresh", response_model=PlaybackGrant, tags=["playback"])
    async def refresh(
        session_id: str, body: RefreshRequest, request: Request, account: Viewer
    ) -> Response:
        """Replace the playback token of a playing session (highest priority, fails open)."""
        address, _region = client(request)
        playback.rate_limit(account, address, playback.clock(), refresh=True)
        return _grant_response(await playback.refresh(account, session_id, body.token))

    @app.post("/v1/sessions/{session_id}/heartbeat", tags=["playback"])
    def heartbeat(session_id: str, account: Viewer) -> dict[str, float]:
        """Keep the session counted against the stream limit."""
        return {"expires_at": playback.heartbeat(account, session_id)}

    @app.delete("/v1/sessions/{session_id}", status_code=204, tags=["playback"])
    def end_session(session_id: str, account: Viewer) -> Response:
        """The player stopped: free its stream slot."""
        playback.end(account, session_id)
        return Response(status_code=204)

    @app.post("/v1/purchases", response_model=PurchaseOut, status_code=201, tags=["purchases"])
    async def purchase(
        body: PurchaseIn, request: Request, account: Viewer, key: IdemKey
    ) -> Response:
        """Buy an event's pay-per-view product; the same Idempotency-Key never charges twice."""
        address, _region = client(request)
        playback.rate_limit(account, address, playback.clock())
        return await run_purchase(svc, account, key, body.event_id)

    if svc.dev_idp is not None:
        idp = svc.dev_idp

        @app.post("/dev/idp/token", response_model=DevTokenResponse, tags=["development"])
        def dev_token(body: DevTokenRequest) -> DevTokenResponse:
            """Development identity provider: a viewer JWT for any account (disable in production)."""
            return DevTokenResponse(
                access_token=idp.mint(body.sub, ttl_s=body.ttl_s), expires_in=body.ttl_s
            )

    if svc.steering is not None:
        add_steering_routes(
            app, svc.steering, store, reader=Reader, operator=Operator, idem_key=IdemKey
        )
    admitted = AdmissionMiddleware(app, services.admission, services.latency)
    if svc.steering is not None:
        return _WithSteering(admitted, svc.steering)  # type: ignore[return-value]
    return admitted


class _WithSteering:
    """Steering manifests answered before admission control and FastAPI: the hot path of every
    playing viewer (one request per TTL each) must cost as little as possible."""

    def __init__(self, app: AdmissionMiddleware, steering: SteeringRuntime) -> None:
        self.app = app
        self.steering = steering

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.steering.app.handles(scope["path"]):
            await self.steering.app(scope, receive, send)
            return
        await self.app(scope, receive, send)
