"""Fixtures of the control-plane tests: SQLite and a real PostgreSQL, services, API client, clock."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from mainevent.control.app import ControlServices, create_app
from mainevent.control.auth import hash_api_key
from mainevent.control.db import Base, Database, open_database
from mainevent.control.payments import FakePaymentProvider
from mainevent.control.server import build_services
from mainevent.control.settings import ApiKeySetting, ControlSettings
from mainevent.control.sources import FaultInjectingSource
from tests.conftest import apt_install

ADMIN, OPERATOR, READER = "admin-key-0123456789", "operator-key-0123456789", "reader-key-0123456789"
API_KEYS = (
    ApiKeySetting(name="alice", role="admin", key_sha256=hash_api_key(ADMIN)),
    ApiKeySetting(name="oscar", role="operator", key_sha256=hash_api_key(OPERATOR)),
    ApiKeySetting(name="rita", role="read-only", key_sha256=hash_api_key(READER)),
)


@pytest.fixture
def anyio_backend() -> str:
    """The API runs on asyncio (uvloop in production)."""
    return "asyncio"


# -- databases --------------------------------------------------------------------------------------


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@dataclass
class _Postgres:
    url: str
    root: Path
    bindir: Path
    user_cmd: list[str] = field(default_factory=list)

    def stop(self) -> None:
        subprocess.run(
            [
                *self.user_cmd,
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.root / "data"),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL from Debian's binaries on a unix socket in a temp dir (as a non-root user)."""
    bindir = _pg_bindir()
    if bindir is None:
        apt_install("postgresql")
        bindir = _pg_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL binaries (Debian package 'postgresql') are missing and could not be installed"
        )
    root = Path(tempfile.mkdtemp(prefix="mainevent-pg-"))
    user_cmd: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: use the package's system user
        user = "postgres" if shutil.which("runuser") else None
        if user is None:
            pytest.skip(
                "running as root without runuser; cannot start PostgreSQL as a non-root user"
            )
        shutil.chown(root, user)
        user_cmd = ["runuser", "-u", user, "--"]
    data = root / "data"
    subprocess.run(
        [
            *user_cmd,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    opts = f"-k {root} -c listen_addresses='' -F -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c max_connections=100"
    subprocess.run(
        [
            *user_cmd,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            opts,
            "-l",
            str(root / "log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pg = _Postgres(f"postgresql+psycopg://postgres@/postgres?host={root}", root, bindir, user_cmd)
    try:
        yield pg.url
    finally:
        pg.stop()


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "control.db"
    open_database(f"sqlite:///{path}").dispose()
    return path


@pytest.fixture(scope="session")
def _pg_migrated(postgres_url: str) -> str:
    open_database(postgres_url).dispose()
    return postgres_url


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated, empty database: every test using it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        target = tmp_path / "control.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), target)
        db = open_database(f"sqlite:///{target}", migrate=False)
    else:
        url = request.getfixturevalue("_pg_migrated")
        db = open_database(url, migrate=False)
        with db.write.begin() as s:
            names = ", ".join(t.name for t in Base.metadata.sorted_tables)
            s.execute(text(f"TRUNCATE {names}"))
    try:
        yield db
    finally:
        db.dispose()


# -- services -------------------------------------------------------------------------------------


class FakeClock:
    """Epoch seconds under test control."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


@dataclass
class Harness:
    """The control plane in-process with its fakes, and an HTTP client on it."""

    services: ControlServices
    client: httpx.AsyncClient
    clock: FakeClock
    payments: FakePaymentProvider
    source: FaultInjectingSource

    def viewer(self, account: str) -> dict[str, str]:
        """Headers of a signed-in viewer."""
        assert self.services.dev_idp is not None
        return {"Authorization": f"Bearer {self.services.dev_idp.mint(account, ttl_s=86_400)}"}

    async def op(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        key: str = ADMIN,
        idem: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """An operator call with a fresh Idempotency-Key unless one is given."""
        h = {"Authorization": f"Bearer {key}"} | (headers or {})
        if method != "GET":
            h["Idempotency-Key"] = idem or os.urandom(8).hex()
        return await self.client.request(method, path, json=json, headers=h)

    async def event(
        self,
        event_id: str = "final",
        status: str = "live",
        *,
        starts_in: float = -60.0,
        **spec: Any,
    ) -> dict[str, Any]:
        """Create an event and walk it to ``status``."""
        from datetime import UTC, datetime

        start = datetime.fromtimestamp(self.clock.now + starts_in, UTC)
        end = datetime.fromtimestamp(self.clock.now + starts_in + 3 * 3600, UTC)
        r = await self.op(
            "POST",
            "/v1/events",
            {
                "id": event_id,
                "title": event_id.title(),
                "starts_at": start.isoformat(),
                "ends_at": end.isoformat(),
                **spec,
            },
        )
        assert r.status_code == 201, r.text
        path = ["scheduled", "rehearsal", "live", "paused", "ended", "archived"]
        body: dict[str, Any] = r.json()
        if status != "draft":
            for step in path[: path.index(status) + 1]:
                if step == "paused" and status != "paused":
                    continue
                r = await self.op("POST", f"/v1/events/{event_id}/transitions", {"to": step})
                assert r.status_code == 200, r.text
                body = r.json()
        return body

    async def account(self, account_id: str, **fields: Any) -> None:
        """Create or replace an account."""
        r = await self.op("PUT", f"/v1/accounts/{account_id}", fields)
        assert r.status_code in (200, 201), r.text

    async def play(
        self, account: str, event_id: str = "final", device: str = "d1", **headers: str
    ) -> httpx.Response:
        """A viewer presses play."""
        return await self.client.post(
            f"/v1/events/{event_id}/playback",
            json={"device": {"id": device}},
            headers=self.viewer(account) | headers,
        )


def make_settings(**overrides: Any) -> ControlSettings:
    """Test settings: known API keys, generous rate limits unless a test narrows them."""
    base: dict[str, Any] = {
        "api_keys": API_KEYS,
        "account_rate": 1000.0,
        "account_burst": 1000.0,
        "address_rate": 100_000.0,
        "address_burst": 100_000.0,
        "payment_latency_s": 0.0,
    }
    return ControlSettings.model_validate(base | overrides)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Tests override this to change settings of the harness."""
    return {}


@pytest.fixture
async def harness(database: Database, settings_overrides: dict[str, Any]) -> AsyncIterator[Harness]:
    """The control plane on a fresh database, with a fake clock, payment provider and faulty store."""
    clock = FakeClock()
    payments = FakePaymentProvider(latency_s=0.0)
    holder: list[FaultInjectingSource] = []

    def wrap(inner: Any) -> FaultInjectingSource:
        holder.append(FaultInjectingSource(inner))
        return holder[0]

    services = build_services(
        make_settings(**settings_overrides),
        db=database,
        payments=payments,
        source=wrap,
        clock=clock,
    )
    app = create_app(services)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://control"
    ) as client:
        yield Harness(services, client, clock, payments, holder[0])
