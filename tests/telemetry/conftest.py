"""Shared pieces of the telemetry tests: a collector on a fake clock, CMCD bodies as hls.js writes them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mainevent.config import TelemetrySettings
from mainevent.control.telemetry.app import TelemetryService, create_app
from mainevent.control.telemetry.cmcd import CmcdValue, encode_dict
from mainevent.control.telemetry.collector import Collector
from mainevent.control.telemetry.events import EventTiming
from mainevent.control.telemetry.store import TelemetryStore

EVENT = "final"
T0 = 1_800_000_000.0


@dataclass
class Clock:
    """Epoch seconds that only move when a test says so."""

    now: float = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, s: float) -> None:
        self.now += s


def record(**kw: CmcdValue) -> str:
    """One event-mode line as cml-cmcd encodes it (keys sorted, tokens bare, v=2)."""
    return encode_dict({"v": 2, **kw})


def body(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


@dataclass
class Harness:
    service: TelemetryService
    client: httpx.AsyncClient
    clock: Clock

    async def post_cmcd(self, content: bytes, event: str = EVENT, **headers: str) -> httpx.Response:
        h = {"content-type": "application/cmcd", **headers}
        return await self.client.post(f"/v1/cmcd/{event}", content=content, headers=h)

    def tick(self) -> None:
        self.service.tick()

    async def qoe(self, **params: Any) -> dict[str, Any]:
        r = await self.client.get("/v1/telemetry/qoe", params={"event": EVENT, **params})
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings() -> TelemetrySettings:
    return TelemetrySettings(db_path=Path(":memory:"))


@pytest.fixture
def make_harness(clock: Clock, tmp_path: Path) -> Iterator[Any]:
    stores: list[TelemetryStore] = []

    def make(settings: TelemetrySettings) -> TelemetryService:
        collector = Collector(settings, {EVENT: EventTiming(2000, 500)})
        store = TelemetryStore(tmp_path / f"t{len(stores)}.db")
        stores.append(store)
        return TelemetryService(collector, store, clock)

    yield make
    for s in stores:
        s.close()


@pytest.fixture
async def harness(
    make_harness: Any, settings: TelemetrySettings, clock: Clock
) -> AsyncIterator[Harness]:
    service = make_harness(settings)
    app = create_app(service, background=False)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://collector") as client:
        yield Harness(service, client, clock)
