"""Wiring and serving: build the control-plane services from settings, run them under uvicorn."""

from __future__ import annotations

import logging
import os
import secrets
import sys
import time
from collections.abc import Callable

import uvicorn

from mainevent.common.admission import AdmissionController, AdmissionPolicy, Bulkhead
from mainevent.common.gc_tuning import tune_gc
from mainevent.control.app import ControlServices, create_app
from mainevent.control.auth import DevIdentityProvider, OperatorAuth, ViewerAuth, hash_api_key
from mainevent.control.console.runtime import build_console
from mainevent.control.console.session_stores import (
    DatabaseConsoleSessionStore,
    RedisConsoleSessionStore,
)
from mainevent.control.console.sessions import ConsoleSessionStore
from mainevent.control.db import Database, open_database
from mainevent.control.entitlement import RegionTable
from mainevent.control.front import front_protocol
from mainevent.control.payments import FakePaymentProvider, PaymentProvider
from mainevent.control.playback import PlaybackService, PlaybackStores, memory_stores
from mainevent.control.playback_front import PlaybackFront
from mainevent.control.settings import ApiKeySetting, ControlSettings
from mainevent.control.sources import EntitlementSource, StoreSource
from mainevent.control.steering.server import SteeringRuntime, build_steering
from mainevent.control.store import ControlStore

__all__ = [
    "ADMIN_KEY_FILE",
    "admin_keys",
    "build_services",
    "console_session_store",
    "ensure_admin_key",
    "playback_stores",
    "serve",
    "steering_runtime",
]

ADMIN_KEY_FILE = "control-admin.key"
log = logging.getLogger("mainevent.control")


def build_services(
    settings: ControlSettings,
    *,
    db: Database | None = None,
    payments: PaymentProvider | None = None,
    source: Callable[[EntitlementSource], EntitlementSource] | None = None,
    clock: Callable[[], float] = time.time,
) -> ControlServices:
    """Every service of the control plane, from settings; tests swap in fakes by keyword."""
    database = db or open_database(settings.database_url)
    store = ControlStore(database)
    entitlement: EntitlementSource = StoreSource(store)
    if source is not None:
        entitlement = source(entitlement)
    dev_idp = (
        DevIdentityProvider(
            secret=settings.dev_idp_secret,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
        if settings.dev_idp_secret
        else None
    )
    operators = OperatorAuth(settings.api_keys)
    return ControlServices(
        settings=settings,
        store=store,
        playback=PlaybackService(
            settings, entitlement, clock=clock, stores=playback_stores(settings)
        ),
        payments=payments
        or FakePaymentProvider(settings.payment_latency_s, settings.payment_failure_rate),
        operators=operators,
        viewers=ViewerAuth(
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            hs_secret=settings.dev_idp_secret,
            public_keys_pem=settings.jwt_public_keys_pem,
        ),
        dev_idp=dev_idp,
        admission=AdmissionController(AdmissionPolicy(max_in_flight=settings.max_in_flight)),
        purchases=Bulkhead(settings.purchase_concurrency),
        steering=steering_runtime(settings),
        console=build_console(
            settings.console, operators, clock, console_session_store(settings, database)
        ),
    )


def console_session_store(settings: ControlSettings, db: Database) -> ConsoleSessionStore:
    """Console sessions on Redis when ``redis_url`` is set, else in the control database:
    shared by every worker and kept across restarts either way."""
    if settings.redis_url is None:
        return DatabaseConsoleSessionStore(db)
    from mainevent.control.redis_state import connect

    client = connect(settings.redis_url, timeout_s=settings.redis_timeout_s, max_connections=32)
    return RedisConsoleSessionStore(client, settings.redis_prefix)


def playback_stores(settings: ControlSettings) -> PlaybackStores:
    """Embedded stores, or the Redis ones when ``redis_url`` is set (several workers)."""
    if settings.redis_url is None:
        return memory_stores(settings)
    from mainevent.control.redis_state import (
        RedisDecisionStore,
        RedisRateLimitStore,
        RedisSessionStore,
        connect,
    )

    client = connect(settings.redis_url, timeout_s=settings.redis_timeout_s)
    prefix = settings.redis_prefix
    return PlaybackStores(
        sessions=RedisSessionStore(client, settings.session_ttl_s, prefix),
        decisions=RedisDecisionStore(
            client, settings.decision_ttl_s, settings.known_good_ttl_s, prefix
        ),
        account_limits=RedisRateLimitStore(
            client, "account", settings.account_rate, settings.account_burst, prefix
        ),
        address_limits=RedisRateLimitStore(
            client, "address", settings.address_rate, settings.address_burst, prefix
        ),
        embedded=False,
        close=client.aclose,
    )


def steering_runtime(settings: ControlSettings) -> SteeringRuntime:
    """Steering over the configured CDNs, probing `steering.probe_path` on each when set."""
    st = settings.steering
    targets = (
        {n: base.rstrip("/") + st.probe_path for n, base in settings.cdns.items() if base}
        if st.probe_path
        else None
    )
    return build_steering(
        st,
        settings.cdns,
        regions=RegionTable((r.cidr, r.region) for r in settings.regions),
        probe_targets=targets,
    )


def ensure_admin_key(settings: ControlSettings) -> tuple[ControlSettings, str | None]:
    """With no API keys configured, generate an admin key into ``<data_dir>/control-admin.key``."""
    if settings.api_keys:
        return settings, None
    path = settings.data_dir / ADMIN_KEY_FILE
    if path.exists():
        key = path.read_text().strip()
    else:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        key = "me_" + secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
    admin = ApiKeySetting(name="local-admin", role="admin", key_sha256=hash_api_key(key))
    return settings.model_copy(update={"api_keys": (admin,)}), key


def admin_keys(settings: ControlSettings) -> ControlSettings:
    """:func:`ensure_admin_key`, saying so on stderr when the development key is used."""
    settings, key = ensure_admin_key(settings)
    if key is not None:
        print(
            f"no operator API keys configured: using the development admin key in "
            f"{settings.data_dir / ADMIN_KEY_FILE} (configure MAINEVENT_CONTROL__API_KEYS for production)",
            file=sys.stderr,
        )
    return settings


def serve(settings: ControlSettings) -> int:
    """Run the control plane until interrupted."""
    settings = admin_keys(settings)
    services = build_services(settings)
    app = create_app(services)
    # Everything built so far (modules, schemas, the app: ~120,000 objects) lives as long as the
    # process; left to the cyclic GC, each full collection re-scans it, a 50-90 ms pause on a
    # busy core in the middle of a join storm. Frozen, the collector only walks what requests
    # create; full collections are rarer (sessions and steering state are long-lived too).
    tune_gc()
    print(
        f"control plane on http://{settings.host}:{settings.port} (OpenAPI at /openapi.json)",
        file=sys.stderr,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=front_protocol(
            services.admission,
            PlaybackFront(services) if settings.lean_playback else None,
        ),
        log_level="warning",
        access_log=False,
    )
    services.store.db.dispose()
    return 0
