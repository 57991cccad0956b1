"""Wiring and serving: build the control-plane services from settings, run them under uvicorn."""

from __future__ import annotations

import logging
import os
import secrets
import sys
import time
from collections.abc import Callable
from typing import ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mainevent.common.admission import AdmissionController, AdmissionPolicy, Bulkhead, Shed
from mainevent.control.admission_http import ADMITTED, ARRIVAL, classify, shed_response
from mainevent.control.app import ControlServices, create_app
from mainevent.control.auth import DevIdentityProvider, OperatorAuth, ViewerAuth, hash_api_key
from mainevent.control.db import Database, open_database
from mainevent.control.payments import FakePaymentProvider, PaymentProvider
from mainevent.control.playback import PlaybackService
from mainevent.control.settings import ApiKeySetting, ControlSettings
from mainevent.control.sources import EntitlementSource, StoreSource
from mainevent.control.store import ControlStore

__all__ = ["ADMIN_KEY_FILE", "build_services", "ensure_admin_key", "serve"]

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
    return ControlServices(
        settings=settings,
        store=store,
        playback=PlaybackService(settings, entitlement, clock=clock),
        payments=payments
        or FakePaymentProvider(settings.payment_latency_s, settings.payment_failure_rate),
        operators=OperatorAuth(settings.api_keys),
        viewers=ViewerAuth(
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            hs_secret=settings.dev_idp_secret,
            public_keys_pem=settings.jwt_public_keys_pem,
        ),
        dev_idp=dev_idp,
        admission=AdmissionController(AdmissionPolicy(max_in_flight=settings.max_in_flight)),
        purchases=Bulkhead(settings.purchase_concurrency),
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


class AdmittingProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with admission control at parse time.

    It stamps when each request began to arrive (``scope["extensions"]["mainevent.arrival"]``) and,
    when ``admission`` is set and no other request is in progress on the connection, decides
    admission as soon as the headers are parsed: a shed request is answered with a canned 503
    written straight to the socket, without an ASGI task, which is what keeps a single worker
    responsive at several times its capacity. Admitted requests carry their ticket to the ASGI
    middleware (``mainevent.admitted``), which releases it.
    """

    admission: ClassVar[AdmissionController | None] = None
    _arrival = 0.0
    _shedding = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arrival = time.monotonic()
        self.scope["extensions"] = {ARRIVAL: {"monotonic": self._arrival}}

    def on_headers_complete(self) -> None:
        controller = self.admission
        # Only when no other response is pending on this connection (keeps responses in order) and
        # the client is not waiting for 100-continue (it may then never send the body we skip).
        idle = self.cycle is None or self.cycle.response_complete
        if controller is not None and idle and not self.expect_100_continue:
            priority = classify(
                self.parser.get_method().decode("ascii"),
                self.url.split(b"?", 1)[0].decode("latin-1"),
            )
            if priority is not None:
                waited = time.monotonic() - self._arrival
                controller.observe_delay(waited)
                decision = controller.admit(priority, waited)
                if isinstance(decision, Shed):
                    keep_alive = self.parser.should_keep_alive()
                    self._shedding = True
                    self.transport.write(
                        shed_response(priority, decision.retry_after, keep_alive=keep_alive)
                    )
                    if not keep_alive:
                        self.transport.close()
                    return
                self.scope["extensions"][ADMITTED] = {"ticket": decision}
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._shedding:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._shedding:
            self._shedding = False
            self.on_response_complete()
            return
        super().on_message_complete()


def serve(settings: ControlSettings) -> int:
    """Run the control plane until interrupted."""
    settings, key = ensure_admin_key(settings)
    if key is not None:
        print(
            f"no operator API keys configured: using the development admin key in "
            f"{settings.data_dir / ADMIN_KEY_FILE} (configure MAINEVENT_CONTROL__API_KEYS for production)",
            file=sys.stderr,
        )
    services = build_services(settings)
    app = create_app(services)
    AdmittingProtocol.admission = services.admission
    print(
        f"control plane on http://{settings.host}:{settings.port} (OpenAPI at /openapi.json)",
        file=sys.stderr,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
    services.store.db.dispose()
    return 0
