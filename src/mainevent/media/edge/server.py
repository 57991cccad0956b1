"""The shield/edge HTTP server: an `asyncio.Protocol` with httptools, no framework on the hit path.

The same code is the shield (upstream = origin) and each CDN edge (upstream = shield). A cache hit
is answered inside `data_received`: key → entry → precomputed head + `Age`/`X-Cache` → two
`transport.write`s of bytes already in memory. A miss starts one upstream fetch whose response is
streamed, as it arrives, to the request that caused it and to every request collapsed onto it
(`inflight.Transfer`); while the cache core has the upstream marked failing (`health`), a request
with a stale copy is answered from it at once instead. Misses, collapsed waits, faults with
delays and the admin/metrics endpoints run as tasks; responses on one connection stay in request
order (pipelining-safe) because a connection handles the next request only after the current one.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import httptools

from mainevent.common.telemetry import AccessRecord, TelemetrySink
from mainevent.common.tokens import TokenVerifier, split_token_path
from mainevent.media.edge.cache import (
    Cache,
    Entry,
    Fetch,
    Finished,
    Freshness,
    Hit,
    Stale,
    UpstreamResponse,
    Wait,
    cache_key,
    is_refusal,
    object_type,
)
from mainevent.media.edge.faults import Fault, FaultDecision, FaultError, decide
from mainevent.media.edge.health import UpstreamHealth
from mainevent.media.edge.inflight import Transfer, Waiter
from mainevent.media.edge.metrics import EdgeMetrics
from mainevent.media.edge.upstream import FailoverUpstream, Upstream, UpstreamError
from mainevent.media.shedding import Admission, Budget, LiveEdgeTracker, LoadShedder

__all__ = ["ADMIN_HEADER", "EdgeConfig", "EdgeServer"]

log = logging.getLogger(__name__)

ADMIN_HEADER = "X-Edge-Admin-Secret"
REGION_HEADER = "X-Client-Region"
_ADMIN_PATH = "/_edge/fault"
_OT = {"playlist": "m", "segment": "av", "part": "av", "init": "i", "other": "o"}
_REASONS = {
    200: "OK",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    410: "Gone",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_SMALL = 16 * 1024
_SPECIAL = ("/_edge/", "/metrics", "/healthz")
_MAX_QUEUED = 32
_CMCD_HEADERS = (b"cmcd-request", b"cmcd-object", b"cmcd-status", b"cmcd-session")


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    """One shield or edge. `upstream` is the origin's or the shield's base URL."""

    name: str
    upstream: str
    regions: tuple[str, ...] = ()
    upstreams: tuple[str, ...] = ()
    """Further origins, tried in this order after `upstream` when it fails (a shield in front
    of several origins, `failover.py`); empty: `upstream` alone."""
    host: str = "127.0.0.1"
    port: int = 0
    max_bytes: int = 256 * 1024 * 1024
    negative_ttl_s: float = 1.0
    stale_if_error_s: float = 60.0
    """Stale-if-error allowance when the upstream's Cache-Control does not give one."""
    upstream_timeout_s: float = 15.0
    """Longer than the longest LL-HLS hold (3 × target duration)."""
    upstream_backoff_s: float = 1.0
    """After an upstream failure, requests with a stale copy get it without asking the upstream
    for this long (one probe per interval); each interval that ends in another failure doubles
    it."""
    upstream_max_backoff_s: float = 4.0
    """Cap on that interval, so a returning upstream is noticed within it: 4 s is two target
    durations, well inside a live player's buffer."""
    admin_secret: str | None = None
    token_keys: Mapping[str, str] | None = None
    """Key id → hex secret; when set, `/t/<token>/...` is required on `/live/` paths."""
    cors_origin: str = "*"
    shed_budget: Budget | None = None
    """Upstream fetches in progress (and bytes fetched per second) before a cache miss for a
    DVR segment gets 503 + Retry-After (a live-edge miss never does). None: nothing is shed."""
    live_edge_segments: int = 6
    forwarded_from: tuple[str, ...] = ()
    """CIDRs of balancers in front of this edge (an edge fleet's nginx): from a peer in one, the
    viewer's address for the access record is the last `X-Forwarded-For` entry (the one that
    balancer wrote), not the balancer's own. Empty: the peer address always."""
    """Segments or parts more than this many segments behind the newest one requested are DVR."""


@dataclass(slots=True)
class _Request:
    method: str
    path: str
    query: str | None
    keep_alive: bool
    region: str | None = None
    admin_secret: str | None = None
    body: bytes = b""
    started: float = 0.0
    user_agent: str | None = None
    client: str = ""
    received: float = 0.0
    """Monotonic time the request was read whole (only with a telemetry sink; 0 otherwise)."""
    cmcd_headers: str | None = None
    """CMCD-Request/Object/Status/Session values, `%` escaped, joined (only with a sink)."""
    # Filled in as the response is sent, for the access record (only with a telemetry sink).
    status: int = 0
    cache_result: str = ""
    nbytes: int = 0
    head_at: float = 0.0
    """Monotonic time the response head was written (0: written whole when it finished)."""


_PERSONAL_MANIFESTS = ("/master.m3u8", "/manifest.mpd")


@dataclass(slots=True, eq=False)
class _Protocol(asyncio.Protocol):
    server: EdgeServer
    transport: asyncio.Transport | None = None
    parser: Any = None
    url: bytes = b""
    region: str | None = None
    admin: str | None = None
    user_agent: str | None = None
    cmcd: list[str] = field(default_factory=list)
    peer: str = ""
    forwarded: str | None = None
    """This request's `X-Forwarded-For`, kept only from a peer in `forwarded_from`."""
    peer_forwards: bool = False
    """The peer is a balancer of `forwarded_from` (decided once per connection)."""
    body: list[bytes] = field(default_factory=list)
    queue: deque[_Request] = field(default_factory=deque)
    busy: bool = False
    closed: bool = False
    reading_paused: bool = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.parser = httptools.HttpRequestParser(self)
        if self.server.sink is not None:
            peer = transport.get_extra_info("peername")
            self.peer = str(peer[0]) if peer else ""
            self.peer_forwards = self.server.forwards(self.peer)
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)

    def pause_writing(self) -> None:
        if self.transport is not None and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.write_simple(400, b"bad request\n", keep_alive=False)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.region = None
        self.admin = None
        self.user_agent = None
        self.forwarded = None
        if self.cmcd:
            self.cmcd.clear()
        self.body.clear()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 15:
            low = name.lower()
            if low == b"x-client-region":
                self.region = value.decode("latin-1")
            elif low == b"x-forwarded-for" and self.peer_forwards:
                self.forwarded = value.decode("latin-1")
        elif len(name) == 19 and name.lower() == b"x-edge-admin-secret":
            self.admin = value.decode("latin-1")
        elif len(name) == 10 and self.server.sink is not None and name.lower() == b"user-agent":
            self.user_agent = value.decode("latin-1")
        elif (
            len(name) >= 11
            and self.server.sink is not None
            and name[:5].lower() == b"cmcd-"
            and name.lower() in _CMCD_HEADERS
            and value.strip()
        ):
            # CTA-5004 header mode. Escaped so the record's CMCD is in one form, the query's:
            # the collector percent-decodes it whichever way it came.
            self.cmcd.append(value.decode("latin-1").strip().replace("%", "%25"))

    def on_body(self, body: bytes) -> None:
        if sum(map(len, self.body)) < 65536:
            self.body.append(body)

    def on_message_complete(self) -> None:
        url = self.url.decode("latin-1")
        path, _, query = url.partition("?")
        req = _Request(
            self.parser.get_method().decode("latin-1"),
            path,
            query or None,
            self.parser.should_keep_alive(),
            self.region,
            self.admin,
            b"".join(self.body) if self.body else b"",
            user_agent=self.user_agent,
            client=self.peer if self.forwarded is None else _last_hop(self.forwarded, self.peer),
        )
        if self.server.sink is not None:
            req.received = time.monotonic()
            if self.cmcd:
                req.cmcd_headers = ",".join(self.cmcd)
        if self.busy or self.queue:
            self.queue.append(req)
            if len(self.queue) > _MAX_QUEUED and self.transport is not None:
                self.reading_paused = True
                self.transport.pause_reading()
            return
        # Idle connection (the common case): answer now, no queueing.
        pending = self.server.handle(self, req)
        if pending is not None:
            self.busy = True
            self.server.spawn(self._finish(pending))

    def drain(self) -> None:
        while self.queue and not self.closed and not self.busy:
            req = self.queue.popleft()
            pending = self.server.handle(self, req)
            if pending is not None:
                self.busy = True
                self.server.spawn(self._finish(pending))
                return
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    async def _finish(self, pending: Awaitable[None]) -> None:
        try:
            await pending
        finally:
            self.busy = False
        if not self.closed:
            self.drain()

    def write(self, head: bytes, body: bytes, keep_alive: bool) -> None:
        t = self.transport
        if t is None or self.closed:
            return
        if len(body) <= _SMALL:
            t.write(head + body)
        else:
            t.write(head)
            t.write(body)
        if not keep_alive:
            self.closed = True
            t.close()

    def write_simple(
        self,
        status: int,
        body: bytes,
        *,
        keep_alive: bool = True,
        content_type: str = "text/plain; charset=utf-8",
        extra: str = "",
        head_only: bool = False,
    ) -> None:
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"Cache-Control: no-store\r\n{self.server.cors}{extra}"
            f"{'' if keep_alive else 'Connection: close' + chr(13) + chr(10)}\r\n"
        ).encode("latin-1")
        self.write(head, b"" if head_only else body, keep_alive)


def _last_hop(forwarded: str, peer: str) -> str:
    """The address the balancer in front wrote last into `X-Forwarded-For` (the viewer as it
    saw them); the peer itself if that entry is not an address."""
    last = forwarded.rsplit(",", 1)[-1].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return peer


class EdgeServer:
    """A caching HTTP proxy in front of `config.upstream`; `start()` binds, `close()` stops."""

    def __init__(self, config: EdgeConfig, sink: TelemetrySink | None = None) -> None:
        self.config = config
        self.name = config.name
        self.sink = sink
        self._forwarded_from = tuple(
            ipaddress.ip_network(c, strict=False) for c in config.forwarded_from
        )
        """Where access records go (None: none are made, the hit path is unchanged)."""
        self.cache = Cache(
            max_bytes=config.max_bytes,
            negative_ttl=config.negative_ttl_s,
            default_stale_if_error=config.stale_if_error_s,
            health=UpstreamHealth(config.upstream_backoff_s, config.upstream_max_backoff_s),
        )
        self.fault: Fault | None = None
        self._drill_changed = asyncio.Event()
        """Set (and replaced) whenever the drill changes: wakes the requests it is holding."""
        self.metrics = EdgeMetrics(
            config.name, self.cache.stats, lambda: self.fault, self.cache.health.stats
        )
        self.verifier = TokenVerifier(dict(config.token_keys)) if config.token_keys else None
        self.upstream: Upstream | FailoverUpstream = (
            FailoverUpstream(
                (config.upstream, *config.upstreams), timeout_s=config.upstream_timeout_s
            )
            if config.upstreams
            else Upstream(config.upstream, timeout_s=config.upstream_timeout_s)
        )
        self.connections: set[_Protocol] = set()
        self.cors = (
            f"Access-Control-Allow-Origin: {config.cors_origin}\r\n"
            "Access-Control-Expose-Headers: Age, X-Cache, CMSD-Static, CMSD-Dynamic\r\n"
        )
        self._flights: dict[str, Transfer] = {}
        self.shedder = None if config.shed_budget is None else LoadShedder(config.shed_budget)
        self.live_edge = LiveEdgeTracker(config.live_edge_segments)
        self._admissions: dict[int, Admission] = {}  # id(transfer) -> its fetch's admission
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._random = random.Random()
        self.port = 0
        self.waiting = 0
        """Requests waiting for an upstream fetch (leaders and collapsed waiters)."""

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Protocol(self), self.config.host, self.config.port, backlog=4096
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self.spawn(self._expire_loop())
        log.info("edge %s listening on %s (upstream %s)", self.name, self.url, self.config.upstream)

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for p in list(self.connections):
            if p.transport is not None:
                p.transport.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        await self.upstream.aclose()

    def forwards(self, peer: str) -> bool:
        """Whether `peer` is a balancer of `forwarded_from` (its `X-Forwarded-For` is used)."""
        if not self._forwarded_from or not peer:
            return False
        try:
            addr = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(addr in net for net in self._forwarded_from)

    def spawn(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("edge %s task failed", self.name, exc_info=task.exception())

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.cache.expire(time.monotonic())

    # --- request handling -------------------------------------------------------------

    def handle(self, conn: _Protocol, req: _Request) -> Awaitable[None] | None:
        """Answer `req` now (hit) or return the awaitable that will; with a telemetry sink,
        each `/live/` response also becomes an access record."""
        if self.sink is None or "/live/" not in req.path:
            return self._handle(conn, req)
        # Timed from when the request was read, so a pipelined request's wait behind the one
        # before it on its connection counts, as the client sees it.
        now = time.monotonic()
        t0 = req.received or now
        wall = time.time() - (now - t0)
        pending = self._handle(conn, req)
        if pending is None:
            self._access(req, wall, t0)
            return None
        return self._logged(pending, req, wall, t0)

    async def _logged(
        self, pending: Awaitable[None], req: _Request, wall: float, t0: float
    ) -> None:
        try:
            await pending
        finally:
            self._access(req, wall, t0)

    def _access(self, req: _Request, wall: float, t0: float) -> None:
        """The record of a response that has been written whole (now)."""
        if not req.status or self.sink is None:
            return
        end = time.monotonic()
        # Responses written in one piece (errors, denials, simple answers) leave `head_at`
        # unset: their head went out in this same step.
        head = req.head_at or end
        cmcd = req.cmcd_headers
        q = req.query
        if q is not None and "CMCD=" in q:
            query = q[q.index("CMCD=") + 5 :].split("&", 1)[0]
            cmcd = query if cmcd is None else f"{query},{cmcd}"
        path = req.path
        if path.startswith("/t/"):
            path = split_token_path(path)[1] or path
        self.sink.offer(
            AccessRecord(
                wall,
                self.name,
                path,
                req.status,
                req.nbytes,
                max(0.0, head - t0) * 1000,
                req.cache_result,
                req.client,
                req.region,
                req.user_agent,
                cmcd,
                (end - t0) * 1000,
            )
        )

    def _handle(self, conn: _Protocol, req: _Request) -> Awaitable[None] | None:
        method = req.method
        path = req.path
        if (method != "GET" and method != "HEAD") or path.startswith(_SPECIAL):
            return self._handle_other(conn, req)
        tokened = False
        if path.startswith("/t/") or (self.verifier is not None and path.startswith("/live/")):
            denied = self._check_token(path)
            if isinstance(denied, bytes):
                self.metrics.requests[(object_type(path), "DENIED")] += 1
                req.status, req.cache_result = 403, "DENIED"
                reason = denied.decode()
                conn.write_simple(
                    403,
                    json.dumps({"error": "token", "reason": reason}).encode() + b"\n",
                    keep_alive=req.keep_alive,
                    content_type="application/json",
                    extra=f"X-Token-Denied: {reason}\r\n",
                    head_only=method == "HEAD",
                )
                return None
            tokened = path != denied
            path = denied
        key = path if req.query is None else cache_key(path, req.query)
        if (tokened or "pathway=" in (req.query or "")) and path.endswith(_PERSONAL_MANIFESTS):
            # A steered manifest names the viewer's token (and starting pathway) in every
            # pathway's URLs: fetched for this request as it came (the origin marks it
            # no-store), never shared from the cache.
            key = req.path if req.query is None else f"{req.path}?{req.query}"
        fault = self.fault
        if fault is not None:
            decision = decide(fault, req.region, self._random.random())
            if decision.blackhole:
                self.metrics.faults_applied += 1
                conn.busy = True  # never answer this connection again
                return None
            if (
                decision.error_status
                or decision.delay_s
                or decision.rate_bytes_s
                or decision.serve_stale
            ):
                self.metrics.faults_applied += 1
                return self._faulted(conn, req, key, decision)
        now = time.monotonic()
        entry = self.cache.fresh(key, now)
        if entry is not None:
            self._send_entry(conn, req, entry, now, "HIT")
            return None
        req.started = now
        admission = None
        if self.shedder is not None:
            request_class, media = self.live_edge.classify(path)
            if media and key not in self._flights and self.cache.peek(key, now) is None:
                # A true miss (nothing stored, nothing in flight to join): it costs an
                # upstream fetch, which a DVR request gets only within the budget.
                admission = self.shedder.admit(request_class, now)
                if not admission.admitted:
                    self._shed(conn, req, path, admission)
                    return None
        action = self.cache.lookup(key, now)
        if admission is not None and type(action) is not Fetch:
            assert self.shedder is not None
            self.shedder.done(admission, 0, now)
            admission = None
        if type(action) is Hit:
            self._send_entry(conn, req, action.entry, now, "HIT")
            return None
        if type(action) is Stale:
            self._send_entry(conn, req, action.entry, now, "STALE")
            if action.upstream_failing:
                self.metrics.stale_upstream_failing[action.entry.kind] += 1
            if action.revalidate:
                self._start_fetch(key)
            return None
        if type(action) is Fetch:
            transfer = self._start_fetch(key)
            if admission is not None:
                self._admissions[id(transfer)] = admission
            result = "MISS"
        else:
            assert type(action) is Wait
            transfer = self._flights[key]
            result = "COLLAPSED"
        # Joined now, not when the task runs: a transfer already under way sends its head and
        # the bytes so far at once. The HTTP version (may it take chunked?) is the connection's,
        # read here rather than per request so the hit path does not pay for it.
        http11 = conn.parser.get_http_version() != "1.0"
        waiter = Waiter(conn, method == "GET", http11, req.keep_alive, result, now)
        transfer.join(waiter, now)
        return self._await_fetch(conn, req, key, transfer, waiter)

    def _shed(self, conn: _Protocol, req: _Request, path: str, admission: Admission) -> None:
        """503 + Retry-After for a DVR miss over the budget (never cached: it is about load)."""
        assert self.shedder is not None
        assert admission.reason is not None
        kind = object_type(path)
        self.metrics.requests[(kind, "ERROR")] += 1
        self.metrics.shed[admission.reason.value] += 1
        req.status, req.cache_result = 503, "SHED"
        retry = self.shedder.budget.retry_after_s
        conn.write_simple(
            503,
            f"{self.name} over its {admission.reason.value} budget: DVR requests are shed "
            f"first; retry in {retry} s\n".encode(),
            keep_alive=req.keep_alive,
            extra=f"Retry-After: {retry}\r\n",
            head_only=req.method == "HEAD",
        )

    def _check_token(self, path: str) -> str | bytes:
        """The stripped path, or the denial reason as bytes."""
        token, rest = split_token_path(path)
        if token == "":
            return b"malformed"
        if self.verifier is None:
            return rest
        if token is None:
            return b"missing"
        check = self.verifier.verify(token, rest, time.time())
        if not check.ok:
            return str(check.reason).encode()
        return rest

    def _start_fetch(self, key: str) -> Transfer:
        done: asyncio.Future[Finished] = asyncio.get_running_loop().create_future()
        transfer = Transfer(object_type(key.partition("?")[0]), self.metrics, done)
        self._flights[key] = transfer
        self.spawn(self._fetch(key, transfer))
        return transfer

    async def _fetch(self, key: str, transfer: Transfer) -> None:
        kind = transfer.kind
        self.metrics.upstream_fetches[kind] += 1
        t0 = time.monotonic()
        response: UpstreamResponse | None = None
        arrived = t0
        try:
            async with self.upstream.open(key) as up:
                arrived = time.monotonic()
                decision = self.cache.arrived(up.status, up.header("cache-control"), up.age)
                if decision.stream:
                    framing = (
                        b"Transfer-Encoding: chunked\r\n"
                        if up.length is None
                        else b"Content-Length: %d\r\n" % up.length
                    )
                    head = self._head(up.status, up.headers, kind, framing)
                    transfer.begin(head, up.length, arrived - up.age, decision.stale, arrived)
                async for chunk in up.chunks():
                    transfer.feed(chunk)
                response = UpstreamResponse(up.status, up.headers, transfer.body(), up.age)
        except UpstreamError as exc:
            log.warning("edge %s: upstream %s failed: %s", self.name, key, exc)
        finally:
            # However the fetch ended (cancellation included), every waiter is answered or cut.
            self.metrics.upstream_latency[kind].observe(time.monotonic() - t0)
            if response is None or (response.status >= 500 and not is_refusal(key, response)):
                self.metrics.upstream_errors[kind] += 1
            self._end(key, transfer, response, arrived if response is not None else None)

    def _end(
        self,
        key: str,
        transfer: Transfer,
        response: UpstreamResponse | None,
        arrived: float | None,
    ) -> None:
        # A whole response is stored as of its head's arrival (its Age was measured then).
        health = self.cache.health
        failing, backoff_s, since = health.failing, health.backoff_s, health.failing_since
        finished = self.cache.finish(
            key, response, time.monotonic() if arrived is None else arrived
        )
        if health.failing and health.backoff_s != backoff_s:
            log.warning(
                "edge %s: upstream %s marked failing for %.1f s (%s failed)",
                self.name,
                self.config.upstream,
                health.backoff_s,
                key,
            )
        elif failing and not health.failing:
            log.warning(
                "edge %s: upstream %s answers again after %.1f s",
                self.name,
                self.config.upstream,
                time.monotonic() - since,
            )
        if self._flights.get(key) is transfer:
            del self._flights[key]
        admission = self._admissions.pop(id(transfer), None)
        if admission is not None and self.shedder is not None:
            sent = 0 if response is None else len(response.body)
            self.shedder.done(admission, sent, time.monotonic())
        if response is not None:
            transfer.complete()
        else:
            transfer.abort()
        if not transfer.done.done():
            transfer.done.set_result(finished)

    async def _await_fetch(
        self, conn: _Protocol, req: _Request, key: str, transfer: Transfer, waiter: Waiter
    ) -> None:
        self.waiting += 1
        try:
            finished = await asyncio.shield(transfer.done)
        finally:
            self.waiting -= 1
        kind = transfer.kind
        if waiter.result == "COLLAPSED":
            self.metrics.collapsed[kind] += 1
        if waiter.streamed and finished.response is not None:
            req.head_at = waiter.head_at
            req.status = finished.response.status
            req.cache_result = "STALE" if finished.stale else waiter.result
            req.nbytes = len(finished.response.body)
        if not waiter.streamed:
            self._send_finished(conn, req, key, finished, waiter.result, kind)

    def _send_finished(
        self, conn: _Protocol, req: _Request, key: str, finished: Finished, result: str, kind: str
    ) -> None:
        now = time.monotonic()
        if finished.response is None:
            self.metrics.requests[(kind, "ERROR")] += 1
            req.status, req.cache_result = 504, "ERROR"
            conn.write_simple(
                504,
                b"upstream unavailable\n",
                keep_alive=req.keep_alive,
                head_only=req.method == "HEAD",
            )
            return
        if finished.stale:
            result = "STALE"
        if finished.entry is not None:
            self._send_entry(conn, req, finished.entry, now, result)
            return
        # Not storable (no-store, 5xx passed through, bigger than the budget): same bytes,
        # serialised once per waiter.
        entry = Entry(key, finished.response, now - finished.response.age, _NO_FRESHNESS, 0, kind)
        self._send_entry(conn, req, entry, now, result)

    def _head(
        self, status: int, headers: tuple[tuple[str, str], ...], kind: str, framing: bytes
    ) -> bytes:
        """Status line and headers up to (not including) Age/X-Cache; `framing` is the
        Content-Length or Transfer-Encoding line."""
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"]
        dynamic = None
        for k, v in headers:
            if k.lower() == "cmsd-dynamic":
                dynamic = v
                continue
            lines.append(f"{k}: {v}\r\n")
        own = f'"{self.name}"'
        lines.append(f"CMSD-Dynamic: {dynamic + ', ' + own if dynamic else own}\r\n")
        lines.append(f'CMSD-Static: ot={_OT.get(kind, "o")},n="{self.name}"\r\n')
        lines.append(self.cors)
        return "".join(lines).encode("latin-1") + framing

    def _wire(self, entry: Entry) -> _Wire:
        wire = entry.wire
        if isinstance(wire, _Wire):
            return wire
        r = entry.response
        framing = b"Content-Length: %d\r\n" % len(r.body)
        wire = _Wire(self._head(r.status, r.headers, entry.kind, framing), entry.kind)
        entry.wire = wire
        return wire

    def _send_entry(
        self, conn: _Protocol, req: _Request, entry: Entry, now: float, result: str
    ) -> None:
        wire = self._wire(entry)
        body = entry.response.body
        age = int(now - entry.born)
        m = self.metrics
        m.requests[wire.kind_keys[result]] += 1
        req.status, req.cache_result, req.nbytes = entry.response.status, result, len(body)
        req.head_at = now
        if req.started:
            m.latency[entry.kind].observe(now - req.started)
        else:
            m.latency[entry.kind].counts[0] += 1
        if result == "HIT" and req.keep_alive and req.method == "GET" and type(conn) is _Protocol:
            # The hot path: one prebuilt head (+ body) per entry and whole second of Age.
            if wire.hit_age != age:
                wire.hit_age = age
                wire.hit_head = wire.head + b"Age: %d\r\nX-Cache: HIT\r\n\r\n" % age
                wire.hit_small = wire.hit_head + body if len(body) <= _SMALL else b""
            m.bytes_sent[entry.kind] += len(body)
            t = conn.transport
            if t is None or conn.closed:
                return
            if wire.hit_small:
                t.write(wire.hit_small)
            else:
                t.write(wire.hit_head)
                t.write(body)
            return
        head = wire.head + b"Age: %d\r\nX-Cache: %s\r\n%s\r\n" % (
            age,
            result.encode(),
            b"" if req.keep_alive else b"Connection: close\r\n",
        )
        if req.method == "HEAD":
            body = b""
        m.bytes_sent[entry.kind] += len(body)
        conn.write(head, body, req.keep_alive)

    def _set_fault(self, fault: Fault | None) -> None:
        self.fault = fault
        changed, self._drill_changed = self._drill_changed, asyncio.Event()
        changed.set()

    async def _hold(self, req: _Request, decision: FaultDecision) -> FaultDecision:
        """Hold a request for the drill's added latency, and decide it again if the drill
        changes meanwhile: a CDN that starts failing fails the requests it is holding too (the
        new drill's errors answer them at once), and one that recovers stops holding them. The
        added latency counts from the request's arrival under whichever drill is set."""
        arrived = time.monotonic()
        while True:
            left = decision.delay_s - (time.monotonic() - arrived)
            if left <= 0:
                return decision
            try:
                await asyncio.wait_for(self._drill_changed.wait(), left)
            except TimeoutError:
                return decision
            decision = decide(self.fault, req.region, self._random.random())

    async def _faulted(
        self, conn: _Protocol, req: _Request, key: str, decision: FaultDecision
    ) -> None:
        if decision.delay_s:
            decision = await self._hold(req, decision)
            if decision.blackhole:
                conn.busy = True  # the new drill never answers
                return
        kind = object_type(req.path)
        if decision.error_status:
            self.metrics.requests[(kind, "FAULT")] += 1
            req.status, req.cache_result = decision.error_status, "FAULT"
            conn.write_simple(
                decision.error_status,
                f"fault injected at {self.name}\n".encode(),
                keep_alive=req.keep_alive,
                extra="X-Edge-Fault: error\r\n",
                head_only=req.method == "HEAD",
            )
            return
        now = time.monotonic()
        if decision.serve_stale:
            entry = self.cache.peek(key, now)
            if entry is None:
                self.metrics.requests[(kind, "FAULT")] += 1
                req.status, req.cache_result = 504, "FAULT"
                conn.write_simple(
                    504, b"serve-stale drill: not cached\n", keep_alive=req.keep_alive
                )
                return
            finished = Finished(entry.response, entry, True, 0)
        else:
            req.started = now
            action = self.cache.lookup(key, now)
            if isinstance(action, Hit | Stale):
                finished = Finished(
                    action.entry.response, action.entry, isinstance(action, Stale), 0
                )
                if isinstance(action, Stale) and action.upstream_failing:
                    self.metrics.stale_upstream_failing[action.entry.kind] += 1
                if isinstance(action, Stale) and action.revalidate:
                    self._start_fetch(key)
            else:
                # Drill responses are paced or delayed whole: wait for the complete outcome.
                transfer = (
                    self._start_fetch(key) if isinstance(action, Fetch) else self._flights[key]
                )
                finished = await asyncio.shield(transfer.done)
        if not decision.rate_bytes_s:
            self._send_finished(
                conn, req, key, finished, "STALE" if decision.serve_stale else "HIT", kind
            )
            return
        # Throughput cap: serialise into a buffer, then pace it out.
        sink = _Capture()
        self._send_finished(sink, req, key, finished, "HIT", kind)  # type: ignore[arg-type]
        data = sink.data
        req.head_at = time.monotonic()  # the first paced chunk carries the head
        chunk = max(1024, int(decision.rate_bytes_s / 20))
        for i in range(0, len(data), chunk):
            if conn.closed or conn.transport is None:
                return
            conn.transport.write(data[i : i + chunk])
            await asyncio.sleep(chunk / decision.rate_bytes_s)
        if not req.keep_alive and conn.transport is not None:
            conn.closed = True
            conn.transport.close()

    def _handle_other(self, conn: _Protocol, req: _Request) -> Awaitable[None] | None:
        if req.method == "OPTIONS":
            conn.write_simple(
                204,
                b"",
                keep_alive=req.keep_alive,
                extra="Access-Control-Allow-Methods: GET, HEAD, OPTIONS\r\n"
                "Access-Control-Allow-Headers: *\r\nAccess-Control-Max-Age: 86400\r\n",
            )
            return None
        if req.path == "/healthz":
            body = {
                "status": "ok",
                "edge": self.name,
                "regions": list(self.config.regions),
                "upstream": self.config.upstream,
                "fault": self.fault.to_json() if self.fault else None,
                "upstream_healthy": not self.cache.health.failing,
                "upstreams": [
                    {"url": u.url, "breaker": u.breaker.value, "failovers": u.failovers}
                    for u in self.upstream.statistics()
                ]
                if isinstance(self.upstream, FailoverUpstream)
                else None,
                "cache": {"objects": self.cache.stats().objects, "bytes": self.cache.stats().bytes},
            }
            conn.write_simple(
                200,
                json.dumps(body).encode(),
                keep_alive=req.keep_alive,
                content_type="application/json",
            )
            return None
        if req.path == "/metrics":
            conn.write_simple(
                200,
                self.metrics.render(),
                keep_alive=req.keep_alive,
                content_type="text/plain; version=0.0.4; charset=utf-8",
            )
            return None
        if req.path == _ADMIN_PATH:
            self._admin(conn, req)
            return None
        if req.method not in ("GET", "HEAD"):
            conn.write_simple(
                405,
                b"method not allowed\n",
                keep_alive=req.keep_alive,
                extra="Allow: GET, HEAD, OPTIONS\r\n",
            )
            return None
        conn.write_simple(404, b"not found\n", keep_alive=req.keep_alive)
        return None

    def _admin(self, conn: _Protocol, req: _Request) -> None:
        secret = self.config.admin_secret
        if not secret:
            conn.write_simple(
                404,
                b"fault admin disabled: start the edge with an admin secret\n",
                keep_alive=req.keep_alive,
            )
            return
        if req.admin_secret is None or not hmac.compare_digest(
            req.admin_secret.encode(), secret.encode()
        ):
            conn.write_simple(
                401, b"missing or wrong X-Edge-Admin-Secret\n", keep_alive=req.keep_alive
            )
            return
        if req.method in ("POST", "PUT"):
            try:
                data = json.loads(req.body or b"{}")
                if not isinstance(data, dict):
                    raise FaultError("fault body must be a JSON object")
                fault = Fault.from_json(data)
            except (json.JSONDecodeError, FaultError) as exc:
                conn.write_simple(400, f"bad fault: {exc}\n".encode(), keep_alive=req.keep_alive)
                return
            self._set_fault(fault)
            log.warning("edge %s: fault set %s", self.name, fault)
        elif req.method == "DELETE":
            self._set_fault(None)
            log.warning("edge %s: fault cleared", self.name)
        elif req.method != "GET":
            conn.write_simple(405, b"GET, POST or DELETE\n", keep_alive=req.keep_alive)
            return
        body = json.dumps(
            {"edge": self.name, "fault": self.fault.to_json() if self.fault else None}
        )
        conn.write_simple(
            200, body.encode(), keep_alive=req.keep_alive, content_type="application/json"
        )


class _Wire:
    """An entry's serialised head, and its last full HIT response (rebuilt when Age ticks)."""

    __slots__ = ("head", "hit_age", "hit_head", "hit_small", "kind_keys")

    def __init__(self, head: bytes, kind: str) -> None:
        self.head = head
        self.hit_age = -1
        self.hit_head = b""
        self.hit_small = b""
        self.kind_keys = {r: (kind, r) for r in ("HIT", "MISS", "COLLAPSED", "STALE")}


class _Capture:
    """Stands in for a connection to serialise one response into bytes (throughput drill)."""

    closed = False

    def __init__(self) -> None:
        self.data = b""

    def write(self, head: bytes, body: bytes, keep_alive: bool) -> None:
        self.data += head + body

    def write_simple(self, status: int, body: bytes, **kw: Any) -> None:
        self.data += (
            f"HTTP/1.1 {status} Error\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        )


_NO_FRESHNESS = Freshness(False, 0.0)
