"""Drill API of the venue feed simulator: break one feed on command, over HTTP.

    GET  /status                       what the simulator is doing
    POST /faults/drop                  kill the feed abruptly (cut cable); it comes back if restart is on
    POST /faults/restart               stop the feed cleanly and start it again (new connection)
    POST /faults/stall   {"seconds": S}            send nothing for S seconds, connection open
    POST /faults/corrupt {"packets": N, "raw_bytes": B}   garbage in N TS payloads + B raw bytes
    POST /faults/desync  {"audio_offset_ms": MS}   shift audio against video (0 = back in sync)
    POST /faults/clear                 remove every fault

Bodies are validated; a bad one is answered 422 with the field and the reason.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mainevent.media.feed import FeedProcess


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Stall(_Body):
    seconds: float = Field(gt=0, le=3600)


class Corrupt(_Body):
    packets: int = Field(default=200, ge=0, le=1_000_000)
    raw_bytes: int = Field(default=0, ge=0, le=10_000_000)


class Desync(_Body):
    audio_offset_ms: int = Field(ge=-10_000, le=10_000)


async def _body(request: Request, model: type[_Body]) -> _Body | JSONResponse:
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or "body", "reason": e["msg"]}
            for e in exc.errors()
        ]
        return JSONResponse({"error": "invalid body", "details": errors}, 422)


def create_feed_control_app(feed: FeedProcess) -> Starlette:
    """The drill API bound to one running feed."""

    def ok(action: str) -> JSONResponse:
        return JSONResponse({"ok": True, "action": action, "status": feed.status()})

    async def status(request: Request) -> JSONResponse:
        return JSONResponse(feed.status())

    async def drop(request: Request) -> JSONResponse:
        feed.drop()
        return ok("drop")

    async def restart(request: Request) -> JSONResponse:
        feed.restart()
        return ok("restart")

    async def clear(request: Request) -> JSONResponse:
        feed.clear()
        return ok("clear")

    async def stall(request: Request) -> JSONResponse:
        body = await _body(request, Stall)
        if isinstance(body, JSONResponse):
            return body
        assert isinstance(body, Stall)
        feed.stall(body.seconds)
        return ok("stall")

    async def corrupt(request: Request) -> JSONResponse:
        body = await _body(request, Corrupt)
        if isinstance(body, JSONResponse):
            return body
        assert isinstance(body, Corrupt)
        feed.inject_garbage(body.packets, body.raw_bytes)
        return ok("corrupt")

    async def desync(request: Request) -> JSONResponse:
        body = await _body(request, Desync)
        if isinstance(body, JSONResponse):
            return body
        assert isinstance(body, Desync)
        feed.desync_audio(body.audio_offset_ms)
        return ok("desync")

    routes: list[Any] = [
        Route("/status", status),
        Route("/faults/drop", drop, methods=["POST"]),
        Route("/faults/restart", restart, methods=["POST"]),
        Route("/faults/clear", clear, methods=["POST"]),
        Route("/faults/stall", stall, methods=["POST"]),
        Route("/faults/corrupt", corrupt, methods=["POST"]),
        Route("/faults/desync", desync, methods=["POST"]),
    ]
    return Starlette(routes=routes)
