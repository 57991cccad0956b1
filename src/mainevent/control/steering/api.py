"""Operator controls of steering on the control plane's API: drain / pin / restore a CDN per
region, each an idempotent, audited command (`steering.drain`, `steering.pin`,
`steering.restore` in `/v1/audit`), and a read-only status.

    GET    /v1/steering                             overrides, sessions per region × CDN, links
    PUT    /v1/steering/overrides/{region}/{cdn}    {"action": "drain"|"pin", "rate": 0.25}
    DELETE /v1/steering/overrides/{region}/{cdn}    restore

Overrides live in the steering server's memory (the audit log records every one).

No `from __future__ import annotations` here: FastAPI must see the dependency types the
caller passes in as real annotations.
"""

import time
from collections.abc import Callable
from typing import Any, Literal

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from mainevent.control.errors import NotFound
from mainevent.control.steering.model import Override, OverrideAction
from mainevent.control.steering.server import SteeringRuntime
from mainevent.control.store import ControlStore, Mutation, request_hash

__all__ = ["OverrideIn", "add_steering_routes"]


class OverrideIn(BaseModel):
    """An operator override of one CDN in one region."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["drain", "pin"] = Field(
        description="`drain`: move this CDN's sessions elsewhere; `pin`: move every session of the region to it."
    )
    rate: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Share of the affected sessions moved per steering TTL (default `steering.drain_share`).",
    )


def _override_out(o: Override | None) -> dict[str, Any] | None:
    if o is None:
        return None
    return {"region": o.region, "cdn": o.cdn, "action": str(o.action), "rate": o.rate, "at": o.at}


def add_steering_routes(
    app: FastAPI,
    runtime: SteeringRuntime,
    store: ControlStore,
    *,
    reader: Any,
    operator: Any,
    idem_key: Any,
    errors: Callable[..., dict[int | str, dict[str, Any]]] | None = None,
    auth: dict[str, Any] | None = None,
    clock: Callable[[], float] = time.time,
) -> None:
    """Add the routes above; `reader`/`operator`/`idem_key` are the app's dependency types,
    `errors(*codes)` the app's OpenAPI error responses and `auth` its operator security."""

    def doc(*codes: int) -> dict[str, Any]:
        return {"responses": errors(*codes) if errors else {}, "openapi_extra": auth}

    policy = runtime.policy

    def check(region: str, cdn: str) -> None:
        if cdn not in policy.cdns:
            raise NotFound(
                "cdn_not_found", f"no CDN {cdn!r}; steered CDNs: {', '.join(policy.cdns)}"
            )
        if not region or len(region) > 64:
            raise NotFound("region_not_found", "region must be 1-64 characters (or * for all)")

    def status() -> dict[str, Any]:
        st = policy.statistics()
        return {
            "ttl_s": policy.config.ttl_s,
            "cdns": {
                name: {"cost": c.cost, "capacity": c.capacity, "sessions": st.per_cdn[name]}
                for name, c in policy.cdns.items()
            },
            "sessions": [
                {"region": r, "cdn": c, "sessions": n} for (r, c), n in sorted(st.sessions.items())
            ],
            "links": [
                {"region": r, "isp": i, "cdn": c, "state": str(s)}
                for (r, i, c), s in sorted(st.links.items())
            ],
            "overrides": [_override_out(o) for o in st.overrides],
            "moves": st.moves,
        }

    @app.get("/v1/steering", tags=["steering"], **doc(401, 403, 422))
    def steering_status(_actor: reader) -> dict[str, Any]:
        """Overrides in force, sessions per region × CDN, CDN health per region."""
        return status()

    def mutation(m: Mutation) -> Response:
        headers = {"Idempotent-Replayed": "true"} if m.replayed else {}
        return JSONResponse(m.body, status_code=m.status, headers=headers)

    @app.put(
        "/v1/steering/overrides/{region}/{cdn}",
        tags=["steering"],
        **doc(400, 401, 403, 404, 409, 413, 422),
    )
    def put_override(
        region: str,
        cdn: str,
        body: OverrideIn,
        actor: operator,
        key: idem_key,
    ) -> Response:
        """Drain or pin `cdn` in `region` (`*` = every region), at `rate` per TTL; audited."""
        check(region, cdn)
        path = f"/v1/steering/overrides/{region}/{cdn}"
        fp = request_hash("PUT", path, body.model_dump_json().encode())
        now = clock()
        o = Override(
            region=region,
            cdn=cdn,
            action=OverrideAction(body.action),
            rate=body.rate or runtime.settings.drain_share,
            at=now,
        )
        applied: list[Override] = []

        def apply(s: Any) -> Mutation:
            before = _override_out(
                dict(((x.region, x.cdn), x) for x in policy.overrides()).get((region, cdn))
            )
            after = _override_out(o)
            store.record(
                s, actor, f"steering.{o.action}", "steering", f"{region}/{cdn}", before, after, key
            )
            applied.append(o)
            return Mutation(200, {"override": after, "previous": before})

        m = store.idempotent(actor, key, "PUT", path, fp, apply)
        if applied:  # committed (not a replay): now it takes effect
            policy.set_override(o)
        return mutation(m)

    @app.delete(
        "/v1/steering/overrides/{region}/{cdn}",
        tags=["steering"],
        **doc(400, 401, 403, 404, 409, 422),
    )
    def delete_override(
        region: str,
        cdn: str,
        actor: operator,
        key: idem_key,
    ) -> Response:
        """Restore `cdn` in `region`: its sessions return gradually (`return_share` per TTL)."""
        check(region, cdn)
        path = f"/v1/steering/overrides/{region}/{cdn}"
        current = {(x.region, x.cdn): x for x in policy.overrides()}.get((region, cdn))
        if current is None:
            raise NotFound(
                "override_not_found", f"nothing to restore: no override of {cdn!r} in {region!r}"
            )
        cleared: list[bool] = []

        def apply(s: Any) -> Mutation:
            before = _override_out(current)
            store.record(
                s, actor, "steering.restore", "steering", f"{region}/{cdn}", before, None, key
            )
            cleared.append(True)
            return Mutation(200, {"restored": before})

        m = store.idempotent(actor, key, "DELETE", path, request_hash("DELETE", path, b""), apply)
        if cleared:
            policy.clear_override(region, cdn, clock())
        return mutation(m)
