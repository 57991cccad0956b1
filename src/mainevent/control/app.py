"""HTTP adapter of the control plane: FastAPI routes (OpenAPI at /openapi.json) over the store,
the playback service and the purchase flow, behind a pure-ASGI admission-control layer.

Operator routes take ``Authorization: Bearer <api key>``; viewer routes take the viewer JWT.
Every mutating operator call and every purchase requires an ``Idempotency-Key`` header.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from mainevent.common.admission import (
    AdmissionController,
    Bulkhead,
    Priority,
)
from mainevent.common.histogram import BUCKETS, LatencyHistogram
from mainevent.control.admission_http import AdmissionMiddleware, watch_loop_delay
from mainevent.control.auth import DevIdentityProvider, OperatorAuth, ViewerAuth
from mainevent.control.console.routes import add_console_routes
from mainevent.control.console.runtime import ConsoleRuntime
from mainevent.control.entitlement import Denial, check_event_window
from mainevent.control.errors import ControlError, Invalid, invalid_request
from mainevent.control.highlights import MediaPush, add_highlight_routes
from mainevent.control.lifecycle import EventStatus
from mainevent.control.limits import BodyLimitMiddleware
from mainevent.control.payments import PaymentProvider
from mainevent.control.playback import PlaybackService
from mainevent.control.purchases import run_purchase
from mainevent.control.schemas import (
    ID_PATTERN,
    AccountIn,
    AccountOut,
    AuditList,
    AuditOut,
    DevTokenRequest,
    DevTokenResponse,
    ErrorResponse,
    EventCreate,
    EventList,
    EventOut,
    EventUpdate,
    Override,
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
from mainevent.control.supervisor.api import MediaPlane, add_supervisor_routes, preflight_gate

__all__ = ["ControlServices", "create_app", "error_response"]

_ERROR_TEXT = {
    400: "Bad request (e.g. `idempotency_key_required`).",
    401: "Missing, invalid or expired credentials.",
    402: "Payment declined.",
    403: "Not allowed (role, or a playback denial reason).",
    404: "Not found.",
    409: "Conflicts with the resource's state.",
    412: "`If-Match` does not match the current ETag (`etag_mismatch`).",
    413: "Request body over `max_body_bytes` (`body_too_large`).",
    422: "A field breaks a rule (`invalid_request`, `details.errors[]` names each field and rule).",
    429: "Rate limited; `Retry-After` says when to retry.",
    503: "Overloaded or a dependency is unavailable; `Retry-After` says when to retry.",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses of a route: the error envelope for each status it can answer."""
    return {c: {"model": ErrorResponse, "description": _ERROR_TEXT[c]} for c in codes}


_OPERATOR_AUTH: dict[str, Any] = {"security": [{"operatorKey": []}]}
_VIEWER_AUTH: dict[str, Any] = {"security": [{"viewerJwt": []}]}
_SECURITY_SCHEMES = {
    "operatorKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "Operator API key (roles read-only, operator, admin).",
    },
    "viewerJwt": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "Viewer JWT of the identity provider (`sub` = account id).",
    },
}
_MASK = "********"
_SESSION_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ACCOUNT_PATTERN = r"^[A-Za-z0-9._:@-]{1,128}$"

EventId = Annotated[str, Path(pattern=ID_PATTERN, description="Event id.")]
SessionId = Annotated[str, Path(pattern=_SESSION_PATTERN, description="Playback session id.")]
AccountId = Annotated[str, Path(pattern=_ACCOUNT_PATTERN, description="Account id (JWT `sub`).")]


def _sees_secrets(actor: Actor) -> bool:
    return actor.role in ("operator", "admin")


def _masked(event: dict[str, Any]) -> dict[str, Any]:
    """An event snapshot without its ingest credentials (for read-only keys)."""
    ingest = event.get("ingest")
    if not isinstance(ingest, dict):
        return event
    hidden = ingest | {
        "stream_key": _MASK,
        "passphrase": None if ingest.get("passphrase") is None else _MASK,
    }
    return event | {"ingest": hidden}


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
    console: ConsoleRuntime | None = None
    """Operations console at /console/ (login sessions, live view)."""
    media: MediaPlane | None = None
    """The media plane this control plane drives (`mainevent up` sets it): told of every
    event change; answers preflight and the media view. None: records only (no preflight gate)."""

    def changed(self, event_id: str) -> None:
        """Tell the media plane an event's record changed (after the commit)."""
        if self.media is not None:
            self.media.changed(event_id)

    media_push: MediaPush | None = None
    """Where highlights go (None: the origin named by `media_ops_url`)."""


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
    # The header is read from the request, not declared as a parameter: OpenAPI documents it as
    # the `operatorKey` security scheme instead.
    async def dep(request: Request) -> Actor:
        svc = _services(request)
        header = request.headers.get("authorization")
        if header is None and svc.console is not None and svc.console.has_session(request):
            actor = await svc.console.authorize(request, need)  # the console's session cookie
        else:
            actor = svc.operators.authenticate(header, need)
        if request.query_params:
            _refuse_unknown_query(request)
        return actor

    return dep


_QUERY_NAMES: dict[int, frozenset[str]] = {}


def _query_names(dependant: Any) -> set[str]:
    if dependant is None:
        return set()
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def _refuse_unknown_query(request: Request) -> None:
    """Operator routes refuse query parameters they do not take (a typo must not be ignored) or
    that are given twice.

    Viewer routes take none and ignore the query string: their hot path skips the check.
    """
    route = request.scope.get("route")
    names = _QUERY_NAMES.get(id(route))
    if names is None:
        names = _QUERY_NAMES[id(route)] = frozenset(_query_names(getattr(route, "dependant", None)))
    errors = [
        {"loc": ("query", k), "type": "extra_forbidden", "msg": "Unknown query parameter"}
        for k in request.query_params
        if k not in names
    ]
    seen: set[str] = set()
    for k, _ in request.query_params.multi_items():
        if k in names and k in seen:  # every query parameter here takes one value
            errors.append({"loc": ("query", k), "type": "multiple_values", "msg": "Given twice"})
        seen.add(k)
    if errors:
        raise invalid_request(errors)


def _idempotency_key_required() -> ControlError:
    return ControlError(
        "idempotency_key_required",
        "send an Idempotency-Key header (e.g. a UUID) with every change",
    )


async def _idem_key(
    idempotency_key: Annotated[
        str,
        Header(
            max_length=128,
            pattern=r"^[\x21-\x7e]+$",
            description="A unique key per change (e.g. a UUID); the same key replays the first answer. Missing: 400 `idempotency_key_required`.",
        ),
    ],
) -> str:
    return idempotency_key


def _only_missing_idempotency_key(errors: Sequence[Any]) -> bool:
    return bool(errors) and all(
        e.get("type") == "missing" and tuple(e.get("loc", ())) == ("header", "idempotency-key")
        for e in errors
    )


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
        await services.playback.aclose()
        if services.console is not None:
            await services.console.sessions.store.aclose()

    app = FastAPI(
        title="mainevent control plane",
        version="0.1.0",
        description="Events, accounts, purchases and playback authorisation. Errors carry a machine-readable `reason`.",
        lifespan=lifespan,
    )
    app.state.services = services
    svc = services
    store = svc.store
    playback = svc.playback

    @app.exception_handler(ControlError)
    async def _control_error(_request: Request, exc: ControlError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # Never FastAPI's {"detail": [...]}: that shape echoes the input back.
        errors = exc.errors()
        if _only_missing_idempotency_key(errors):
            return error_response(_idempotency_key_required())
        return error_response(invalid_request(errors))

    def allowed_methods(scope: Scope) -> str:
        # Starlette names only the first partially matching route's methods; a path served by
        # several routes (GET and PATCH /v1/events/{id}) allows all of theirs.
        methods: set[str] = set()
        for route in app.router.routes:
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                methods |= getattr(route, "methods", None) or set()
        return ", ".join(sorted(methods))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's "error parsing the body" (not UTF-8, unreadable): a body that breaks
            # the JSON rule, answered like every other invalid body.
            return error_response(
                invalid_request(
                    [
                        {
                            "loc": ("body",),
                            "type": "json_invalid",
                            "msg": "the body is not valid JSON",
                        }
                    ]
                )
            )
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        message = {
            404: "no such route; see /openapi.json",
            405: "this route does not take that method; see /openapi.json",
        }.get(exc.status_code, "the request could not be handled")
        resp = error_response(ControlError(reason, message, status=exc.status_code))
        if exc.headers:
            resp.headers.update(exc.headers)
        if exc.status_code == 405:
            resp.headers["Allow"] = allowed_methods(request.scope)
        return resp

    @app.exception_handler(Exception)
    async def _internal_error(_request: Request, _exc: Exception) -> JSONResponse:
        return error_response(
            ControlError("internal_error", "internal error; it has been logged", status=500)
        )

    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        schema = base_openapi()
        schema.setdefault("components", {})["securitySchemes"] = _SECURITY_SCHEMES
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

    def check_cdns(cdns: list[str]) -> None:
        configured = svc.settings.cdns
        for i, name in enumerate(cdns):
            if name not in configured:
                raise Invalid(
                    "invalid_request",
                    "invalid request: body.cdns: names a CDN that is not configured",
                    details={
                        "errors": [
                            {
                                "field": f"body.cdns.{i}",
                                "rule": "unknown_cdn",
                                "message": "not one of the configured CDNs",
                            }
                        ],
                        "configured_cdns": list(configured),
                    },
                )

    # -- health -----------------------------------------------------------------------------------

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """Liveness."""
        return {"status": "ok"}

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def metrics() -> str:
        """Prometheus text exposition of admission, breaker and playback counters."""
        a = svc.admission.statistics()
        sessions = await playback.sessions.count()
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
            f"mainevent_playback_shared_state_failures_total {st.shared_state_failures}",
            "# HELP mainevent_control_lean_playback_total Admitted playback starts the HTTP front answered itself, or passed on to the route.",
            "# TYPE mainevent_control_lean_playback_total counter",
            f'mainevent_control_lean_playback_total{{outcome="answered"}} {st.front_answered}',
            f'mainevent_control_lean_playback_total{{outcome="passed"}} {st.front_passed}',
            *([] if sessions is None else [f"mainevent_playback_sessions {sessions}"]),
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

    @app.post(
        "/v1/events",
        status_code=201,
        response_model=EventOut,
        tags=["events"],
        responses=_errors(400, 401, 403, 409, 413, 422),
        openapi_extra=_OPERATOR_AUTH,
    )
    def create_event(body: EventCreate, actor: Operator, key: IdemKey) -> Response:
        """Create a draft event (`cdns` defaults to every configured CDN)."""
        fp = request_hash("POST", "/v1/events", body.model_dump_json(exclude_unset=True).encode())
        if "cdns" in body.model_fields_set:
            check_cdns(body.cdns)
        else:
            body.cdns = list(svc.settings.cdns)
        m = store.idempotent(
            actor, key, "POST", "/v1/events", fp, lambda s: store.create_event(s, actor, body, key)
        )
        svc.changed(body.id)
        resp = _mutation_response(m)
        resp.headers["Location"] = f"/v1/events/{body.id}"
        return resp

    def event_view(out: EventOut, actor: Actor) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(out.model_dump_json())
        return data if _sees_secrets(actor) else _masked(data)

    @app.get(
        "/v1/events",
        response_model=EventList,
        tags=["events"],
        responses=_errors(401, 403, 422),
        openapi_extra=_OPERATOR_AUTH,
    )
    def list_events(
        actor: Reader,
        status: EventStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Response:
        """Events, optionally by status (ingest credentials masked for read-only keys)."""
        events = [event_view(e, actor) for e in store.list_events(status, limit)]
        return JSONResponse({"events": events})

    @app.get(
        "/v1/events/{event_id}",
        response_model=EventOut,
        tags=["events"],
        responses=_errors(401, 403, 404, 422),
        openapi_extra=_OPERATOR_AUTH,
    )
    def get_event(event_id: EventId, actor: Reader) -> Response:
        """One event, with its ETag (ingest credentials masked for read-only keys)."""
        out = store.get_event(event_id)
        return JSONResponse(event_view(out, actor), headers={"ETag": f'"{out.version}"'})

    @app.patch(
        "/v1/events/{event_id}",
        response_model=EventOut,
        tags=["events"],
        responses=_errors(400, 401, 403, 404, 409, 412, 413, 422),
        openapi_extra=_OPERATOR_AUTH,
    )
    def update_event(
        event_id: EventId,
        body: EventUpdate,
        actor: Operator,
        key: IdemKey,
        if_match: IfMatch = None,
    ) -> Response:
        """Change some fields; `If-Match` with the ETag guards against lost updates (412)."""
        path = f"/v1/events/{event_id}"
        fp = request_hash(
            "PATCH",
            path,
            body.model_dump_json(exclude_unset=True).encode() + (if_match or "").encode(),
        )
        if body.cdns is not None:
            check_cdns(body.cdns)
        m = store.idempotent(
            actor,
            key,
            "PATCH",
            path,
            fp,
            lambda s: store.update_event(s, actor, event_id, body, if_match, key),
        )
        playback.invalidate_event(event_id)
        svc.changed(event_id)
        return _mutation_response(m)

    @app.post(
        "/v1/events/{event_id}/transitions",
        response_model=EventOut,
        tags=["events"],
        responses=_errors(400, 401, 403, 404, 409, 412, 413, 422),
        openapi_extra=_OPERATOR_AUTH,
    )
    def transition_event(
        event_id: EventId,
        body: TransitionRequest,
        actor: Operator,
        key: IdemKey,
        if_match: IfMatch = None,
    ) -> Response:
        """Move the event along draft → scheduled → rehearsal → live ⇄ paused → ended → archived (409 otherwise).

        Going live from rehearsal needs a passing preflight within 10 min (409 `preflight_failed`
        / `preflight_required` naming the failing checks) unless `override.reason` is given."""
        path = f"/v1/events/{event_id}/transitions"
        fp = request_hash(
            "POST",
            path,
            body.model_dump_json(exclude_unset=True).encode() + (if_match or "").encode(),
        )
        m = guarded_transition(actor, event_id, body.to, body.override, if_match, key, path, fp)
        return _mutation_response(m)

    def guarded_transition(
        actor: Actor,
        event_id: str,
        to: EventStatus,
        override: Override | None,
        if_match: str | None,
        key: str,
        path: str,
        fp: str,
    ) -> Mutation:
        """A lifecycle move, behind the preflight gate when a media plane runs the event."""

        def apply(s: Any) -> Mutation:
            if to is EventStatus.LIVE and svc.media is not None:
                current = store.get_event(event_id).status
                if current is EventStatus.REHEARSAL:
                    audit = preflight_gate(store, event_id, override, playback.clock())
                    if audit is not None:
                        store.record(
                            s,
                            actor,
                            "event.preflight.override",
                            "event",
                            event_id,
                            None,
                            audit,
                            key,
                        )
            return store.transition_event(s, actor, event_id, to, if_match, key)

        m = store.idempotent(actor, key, "POST", path, fp, apply)
        playback.invalidate_event(event_id)
        svc.changed(event_id)
        return m

    async def playback_facts(event_id: str, now: float) -> tuple[str | None, str | None]:
        """Preflight's view of playback: (authorisation problem, waiting-room problem)."""
        playback.invalidate_event(event_id)
        try:
            facts = await playback.event(event_id, now)
        except ControlError as exc:
            return f"{exc.reason}: {exc.message}", "event not cached"
        problem = None
        if playback.breaker.state != "closed":
            problem = f"entitlement breaker {playback.breaker.state}"
        window = check_event_window(facts, now, svc.settings.preauth_window_s)
        waiting = None
        if isinstance(window, Denial):
            waiting = f"waiting room answers {window.value}"
        return problem, waiting

    add_supervisor_routes(
        app,
        store,
        lambda: svc.media,
        playback_facts=playback_facts,
        transition=guarded_transition,
        steering=svc.steering,
        reader=Reader,
        operator=Operator,
        idem_key=IdemKey,
        if_match=IfMatch,
        errors=_errors,
        auth=_OPERATOR_AUTH,
        respond=_mutation_response,
        clock=playback.clock,
    )

    def audit_view(entry: AuditOut, actor: Actor) -> AuditOut:
        if _sees_secrets(actor) or entry.target_type != "event":
            return entry
        return entry.model_copy(
            update={
                "before": None if entry.before is None else _masked(entry.before),
                "after": None if entry.after is None else _masked(entry.after),
            }
        )

    @app.get(
        "/v1/audit",
        response_model=AuditList,
        tags=["events"],
        responses=_errors(401, 403, 422),
        openapi_extra=_OPERATOR_AUTH,
    )
    def audit(
        actor: Reader,
        target_id: Annotated[str | None, Query(max_length=128)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> AuditList:
        """Operator actions, newest first (event credentials masked for read-only keys)."""
        return AuditList(entries=[audit_view(e, actor) for e in store.audit(target_id, limit)])

    # -- accounts ---------------------------------------------------------------------------------

    @app.put(
        "/v1/accounts/{account_id}",
        response_model=AccountOut,
        tags=["accounts"],
        responses=_errors(400, 401, 403, 409, 412, 413, 422)
        | {201: {"model": AccountOut, "description": "Created."}},
        openapi_extra=_OPERATOR_AUTH,
    )
    def put_account(
        account_id: AccountId, body: AccountIn, actor: Admin, key: IdemKey, if_match: IfMatch = None
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
        # A sync route runs in a worker thread: the (possibly Redis) store is the loop's.
        anyio.from_thread.run(playback.invalidate_account, account_id)
        return _mutation_response(m)

    @app.get(
        "/v1/accounts/{account_id}",
        response_model=AccountOut,
        tags=["accounts"],
        responses=_errors(401, 403, 404, 422),
        openapi_extra=_OPERATOR_AUTH,
    )
    def get_account(account_id: AccountId, _actor: Reader) -> Response:
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

    @app.get("/v1/events/{event_id}/status", tags=["playback"], responses=_errors(404, 422, 503))
    async def event_status(event_id: EventId) -> dict[str, Any]:
        """Public waiting-room polling: status and start time (lowest priority under load)."""
        now = playback.clock()
        ev = await playback.event(event_id, now)
        return {
            "id": ev.id,
            "status": ev.status.value,
            "starts_at": ev.starts_at,
            "server_time": now,
        }

    @app.post(
        "/v1/events/{event_id}/playback",
        response_model=PlaybackGrant,
        tags=["playback"],
        responses=_errors(401, 403, 404, 413, 422, 429, 503),
        openapi_extra=_VIEWER_AUTH,
    )
    async def start_playback(
        event_id: EventId, body: PlaybackRequest, request: Request, account: Viewer
    ) -> Response:
        """Authorise a new playback: every check, then a signed token, manifest URL, CDNs and player config."""
        address, region = client(request)
        await playback.rate_limit(account, address, playback.clock())
        grant = await playback.authorise(account, event_id, body.device, region)
        return _grant_response(grant)

    @app.post(
        "/v1/sessions/{session_id}/refresh",
        response_model=PlaybackGrant,
        tags=["playback"],
        responses=_errors(401, 403, 404, 413, 422, 429, 503),
        openapi_extra=_VIEWER_AUTH,
    )
    async def refresh(
        session_id: SessionId, body: RefreshRequest, request: Request, account: Viewer
    ) -> Response:
        """Replace the playback token of a playing session (highest priority, fails open)."""
        address, _region = client(request)
        await playback.rate_limit(account, address, playback.clock(), refresh=True)
        return _grant_response(await playback.refresh(account, session_id, body.token))

    @app.post(
        "/v1/sessions/{session_id}/heartbeat",
        tags=["playback"],
        responses=_errors(401, 403, 404, 413, 422, 503),
        openapi_extra=_VIEWER_AUTH,
    )
    async def heartbeat(session_id: SessionId, account: Viewer) -> dict[str, float]:
        """Keep the session counted against the stream limit."""
        return {"expires_at": await playback.heartbeat(account, session_id)}

    @app.delete(
        "/v1/sessions/{session_id}",
        status_code=204,
        tags=["playback"],
        responses=_errors(401, 404, 413, 422, 503),
        openapi_extra=_VIEWER_AUTH,
    )
    async def end_session(session_id: SessionId, account: Viewer) -> Response:
        """The player stopped: free its stream slot (404 for an unknown or another account's session)."""
        await playback.end(account, session_id)
        return Response(status_code=204)

    @app.post(
        "/v1/purchases",
        response_model=PurchaseOut,
        status_code=201,
        tags=["purchases"],
        responses=_errors(400, 401, 402, 403, 404, 409, 413, 422, 429, 503),
        openapi_extra=_VIEWER_AUTH,
    )
    async def purchase(
        body: PurchaseIn, request: Request, account: Viewer, key: IdemKey
    ) -> Response:
        """Buy an event's pay-per-view product; the same Idempotency-Key never charges twice."""
        address, _region = client(request)
        await playback.rate_limit(account, address, playback.clock())
        return await run_purchase(svc, account, key, body.event_id)

    if svc.dev_idp is not None:
        idp = svc.dev_idp

        @app.post(
            "/dev/idp/token",
            response_model=DevTokenResponse,
            tags=["development"],
            responses=_errors(413, 422),
        )
        def dev_token(body: DevTokenRequest) -> DevTokenResponse:
            """Development identity provider: a viewer JWT for any account (disable in production)."""
            return DevTokenResponse(
                access_token=idp.mint(body.sub, ttl_s=body.ttl_s), expires_in=body.ttl_s
            )

    if svc.console is not None and svc.console.settings.enabled:
        add_console_routes(
            app,
            svc.console,
            svc.operators,
            store,
            metrics,
            lambda: playback.sessions.per_event(playback.clock()),
            _errors,
        )
    if svc.steering is not None:
        add_steering_routes(
            app,
            svc.steering,
            store,
            reader=Reader,
            operator=Operator,
            idem_key=IdemKey,
            errors=_errors,
            auth=_OPERATOR_AUTH,
        )
    if services.media_push is None:
        services.media_push = MediaPush(svc.settings.media_ops_url, svc.settings.media_admin_secret)
    add_highlight_routes(
        app,
        store,
        services.media_push,
        reader=Reader,
        operator=Operator,
        idem_key=IdemKey,
        errors=_errors,
        auth=_OPERATOR_AUTH,
    )
    # The body cap sits inside admission: a request the front door already admitted keeps its
    # ticket accounted for whatever the cap answers.
    capped = BodyLimitMiddleware(app, svc.settings.max_body_bytes)
    admitted = AdmissionMiddleware(capped, services.admission, services.latency)
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
