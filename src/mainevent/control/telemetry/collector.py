"""The collector's state without I/O: wire bodies in (with ``now``), answers and windows out.

Turns a CMCD v2 event-mode body or an edge access batch into reports with their dimensions
(region/ISP from the client address via the CIDR table, device from the user agent, CDN from
the report or the host of the media URL), runs admission, feeds the aggregator and, on
``tick``, hands closed windows to the store and the alert engine.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol
from urllib.parse import unquote

from mainevent.common.telemetry import AccessRecord, decode_access_batch
from mainevent.config import NetworkRange, TelemetrySettings
from mainevent.control.entitlement import RegionTable
from mainevent.control.settings import ControlSettings, RegionRange
from mainevent.control.telemetry.aggregate import Aggregator, ClosedWindow
from mainevent.control.telemetry.alerts import (
    AlertEngine,
    AlertRule,
    Firing,
    HealthAlertEngine,
    HealthRule,
)
from mainevent.control.telemetry.batch import BatchError, decode_report_batch
from mainevent.control.telemetry.cmcd import CmcdError, decode_body, decode_dict
from mainevent.control.telemetry.events import (
    EventTiming,
    PlayerReport,
    event_of_path,
    report_from_cmcd,
)
from mainevent.control.telemetry.intake import Intake, Verdict
from mainevent.control.telemetry.model import UNKNOWN, AlertEvent, Dims

__all__ = ["AggregateSink", "Collector", "Outcome", "Rejected", "device_class"]

CMCD_CONTENT_TYPE = "application/cmcd"

_AUTHORITY = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*:)?//([^/?#]*)")


class Rejected(StrEnum):
    """Why input was refused (the ``reason`` label of the rejection counter)."""

    MALFORMED = "malformed"
    INVALID_RECORD = "invalid_record"
    UNKNOWN_EVENT = "unknown_event"
    OVERSIZE = "oversize"
    CONTENT_TYPE = "content_type"
    SESSION_RATE = "session_rate"
    OVERLOADED = "overloaded"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer to one POST: status, a message, counts, and Retry-After for 429."""

    status: int
    message: str
    accepted: int = 0
    duplicates: int = 0
    shed: int = 0
    unknown_keys: int = 0
    retry_after_s: float = 0.0
    reason: Rejected | None = None


class AggregateSink(Protocol):
    """Where admitted inputs go: the collector's own :class:`Aggregator` (in process), or a
    stream for aggregators elsewhere (:class:`~mainevent.control.telemetry.stream.StreamSink`)."""

    def player(self, dims: Dims, r: PlayerReport, weight: float, now: float) -> None: ...

    def players(
        self,
        dims_of: Sequence[Dims],
        reports: Sequence[PlayerReport],
        weights: Sequence[float],
        now: float,
    ) -> None: ...

    def shed(self, dims: Dims, now: float, sid: str | None = None) -> None: ...

    def access(self, dims: Dims, rec: AccessRecord, now: float) -> None: ...


def device_class(user_agent: str | None) -> str:
    """desktop, mobile, tv or headless from a User-Agent (unknown without one)."""
    if not user_agent:
        return UNKNOWN
    ua = user_agent
    if "HeadlessChrome" in ua or "mainevent-player" in ua or ua.startswith("python-"):
        return "headless"
    if any(k in ua for k in ("SmartTV", "SMART-TV", "Tizen", "Web0S", "AppleTV", "CrKey")):
        return "tv"
    if any(k in ua for k in ("Mobi", "Android", "iPhone", "iPad")):
        return "mobile"
    return "desktop"


class Collector:
    """Everything the collector knows; every method takes ``now`` (epoch seconds)."""

    def __init__(
        self,
        settings: TelemetrySettings,
        events: Mapping[str, EventTiming],
        sink: AggregateSink | None = None,
        regions: Sequence[RegionRange] | None = None,
    ) -> None:
        """``regions``: the control plane's client-address table (``control.regions``), used
        unless ``settings.networks`` overrides it; None: the control plane's default table."""
        self.settings = settings
        timings = {
            ev: EventTiming(ms, settings.part_target_ms) for ev, ms in settings.events.items()
        }
        timings.update(events)
        self.events = timings
        self.aggregator = Aggregator(
            timings,
            session_timeout_s=settings.session_timeout_s,
            max_sessions=settings.max_sessions,
        )
        self.sink: AggregateSink = sink if sink is not None else self.aggregator
        """Admitted inputs go here (the aggregator unless the stream adapter is configured)."""
        self.intake = Intake(
            capacity_per_s=settings.capacity_per_s,
            keep_capacity_per_s=settings.keep_capacity_per_s,
            session_rate=settings.session_rate,
            session_burst=settings.session_burst,
            max_sessions=settings.max_sessions,
        )
        self.alerts = AlertEngine(
            [
                AlertRule(
                    a.name,
                    a.metric,
                    a.threshold,
                    a.above,
                    a.for_s,
                    a.by,
                    tuple(sorted(a.where.items())),
                )
                for a in settings.alerts
            ]
        )
        self.health_alerts = HealthAlertEngine(
            [
                HealthRule(h.name, h.metric, h.threshold, h.above, h.for_s, h.rate, h.target)
                for h in settings.health_alerts
            ]
        )
        table: Sequence[RegionRange | NetworkRange] = settings.networks or (
            ControlSettings().regions if regions is None else regions
        )
        self.regions = RegionTable((n.cidr, n.region) for n in table)
        self.isps = RegionTable((n.cidr, n.isp) for n in table)
        self.cdn_hosts = dict(settings.cdn_hosts)
        self.rejected: dict[Rejected, int] = dict.fromkeys(Rejected, 0)
        self.unknown_keys = 0
        self.access_records = 0
        self.access_cmcd_malformed = 0
        """Access records whose request CMCD (query or headers) did not parse: the record
        still counts, its CMCD is dropped."""
        self.access_dropped: dict[str, int] = {"unknown_event": 0, "no_event": 0}
        """Access records not aggregated: for an event this collector does not know, or for a
        path that names no event (an admitted batch's other records are still used)."""
        self.alert_log: deque[AlertEvent] = deque(maxlen=10_000)
        self.recent: deque[list[ClosedWindow]] = deque(maxlen=10)
        """The last 10 s of closed windows (for /metrics)."""

    def add_event(self, event: str, timing: EventTiming) -> None:
        self.events[event] = timing
        self.aggregator.events[event] = timing

    def _reject(self, reason: Rejected, status: int, message: str, **kw: float) -> Outcome:
        self.rejected[reason] += 1
        return Outcome(status, message, reason=reason, **kw)  # type: ignore[arg-type]

    def _where(self, client: str | None, region_header: str | None) -> tuple[str, str]:
        """(region, ISP) of a client address by the CIDR table (longest prefix wins; unknown
        without a match); a region header counts only from a ``trusted_proxies`` address."""
        region = None
        if region_header and client and self.settings.trusted_proxies:
            if self.regions.contains(client, self.settings.trusted_proxies):
                region = region_header
        return (
            region or self.regions.lookup(client) or UNKNOWN,
            self.isps.lookup(client) or UNKNOWN,
        )

    def cdn_of_url(self, url: str | None) -> str:
        """The CDN whose host serves ``url`` (``cdn_hosts``), else unknown."""
        if not url:
            return UNKNOWN
        if url.startswith(("http://", "https://")):  # the usual URL: a split is cheaper
            host = url.split("/", 3)[2]
            if "?" not in host and "#" not in host:
                return self.cdn_hosts.get(host, UNKNOWN)
        m = _AUTHORITY.match(url)  # what urlsplit calls the netloc, at a tenth of the cost
        return UNKNOWN if m is None else self.cdn_hosts.get(m.group(1), UNKNOWN)

    # --- player reports -----------------------------------------------------------------------

    def _refused(
        self, event: str, content_type: str | None, expected: str, body: bytes
    ) -> Outcome | None:
        """The answer to a player POST refused before its body is read, else None."""
        if event not in self.events:
            return self._reject(
                Rejected.UNKNOWN_EVENT, 404, f"unknown event {event!r}: no such live event here"
            )
        if (content_type or "").split(";")[0].strip().lower() != expected:
            return self._reject(
                Rejected.CONTENT_TYPE,
                415,
                f"Content-Type must be {expected} (got {content_type or 'none'!r})",
            )
        if len(body) > self.settings.max_body_bytes:
            return self._reject(
                Rejected.OVERSIZE, 413, f"body larger than {self.settings.max_body_bytes} bytes"
            )
        return None

    def cmcd_report(
        self,
        event: str,
        body: bytes,
        content_type: str | None,
        *,
        client: str | None,
        user_agent: str | None,
        region_header: str | None,
        now: float,
        cdn: str | None = None,
    ) -> Outcome:
        """One ``POST /v1/cmcd/{event}`` (CMCD v2 event mode); ``cdn``: the report URL's
        ``?cdn=`` default for records that name none (a heartbeat carries no media URL)."""
        refused = self._refused(event, content_type, CMCD_CONTENT_TYPE, body)
        if refused is not None:
            return refused
        try:
            text = body.decode("ascii")
            decoded = decode_body(text, self.settings.max_records)
        except UnicodeDecodeError:
            return self._reject(Rejected.MALFORMED, 400, "CMCD body must be ASCII text")
        except CmcdError as exc:
            status = 413 if "records in one report" in str(exc) else 400
            reason = Rejected.OVERSIZE if status == 413 else Rejected.MALFORMED
            return self._reject(reason, status, f"malformed CMCD: {exc}")
        reports: list[PlayerReport] = []
        unknown = 0
        for n, d in enumerate(decoded, start=1):
            r = report_from_cmcd(d.data)
            if isinstance(r, str):
                return self._reject(Rejected.INVALID_RECORD, 400, f"record {n}: {r}")
            reports.append(r)
            unknown += d.unknown_keys
        return self._admit(event, reports, unknown, client, user_agent, region_header, now, cdn)

    def cmcd_batch(
        self,
        event: str,
        body: bytes,
        content_type: str | None,
        *,
        client: str | None,
        user_agent: str | None,
        region_header: str | None,
        now: float,
        cdn: str | None = None,
    ) -> Outcome:
        """One ``POST /v1/cmcd/{event}/batch``: the same CMCD v2 event records as JSON objects
        (``{"records": [{"sid": …, "sn": …, "e": "t", "ts": …, "sta": "p", …}, …]}``), decoded
        in one call into :class:`PlayerReport` values (the batch's fast path). Keys that are
        not CMCD keys are ignored and counted; CMCD keys the collector does not read are
        ignored."""
        refused = self._refused(event, content_type, "application/json", body)
        if refused is not None:
            return refused
        batch = decode_report_batch(body, self.settings.max_records)
        if isinstance(batch, BatchError):
            if batch.oversize:
                return self._reject(Rejected.OVERSIZE, 413, batch.message)
            reason = Rejected.INVALID_RECORD if batch.record is not None else Rejected.MALFORMED
            return self._reject(reason, 400, batch.message)
        return self._admit(
            event, batch.reports, batch.unknown_keys, client, user_agent, region_header, now, cdn
        )

    def _admit(
        self,
        event: str,
        reports: list[PlayerReport],
        unknown: int,
        client: str | None,
        user_agent: str | None,
        region_header: str | None,
        now: float,
        cdn: str | None,
    ) -> Outcome:
        """Reports of one POST, decoded and valid: admission, dimensions, aggregation."""
        self.unknown_keys += unknown
        if not reports:
            return Outcome(204, "empty report", unknown_keys=unknown)
        adm = self.intake.admit(reports, now)
        if adm.retry_after_s:
            reason = Rejected(adm.reason)
            return self._reject(
                reason,
                429,
                "too many reports for this session"
                if reason is Rejected.SESSION_RATE
                else "collector over capacity: retry later",
                retry_after_s=adm.retry_after_s,
                unknown_keys=unknown,
            )
        region, isp = self._where(client, region_header)
        device = device_class(user_agent)
        cdn_of_url = self.cdn_of_url
        cdns = [r.cdn or cdn_of_url(r.url) for r in reports]
        # A record naming no CDN takes the one another record of its session in this batch names.
        batch_cdn = {r.sid: c for r, c in zip(reports, cdns, strict=True) if c != UNKNOWN}
        per_cdn: dict[str, Dims] = {}  # one Dims per CDN of the batch, not one per record
        sink = self.sink
        if adm.all_accepted:  # the usual batch: no verdict to read, every report goes on
            batch_get = batch_cdn.get
            named = [
                c if c != UNKNOWN else (batch_get(r.sid) or cdn or UNKNOWN)
                for r, c in zip(reports, cdns, strict=True)
            ]
            for c in set(named):
                per_cdn[c] = Dims(event, region, c, isp, device)
            sink.players([per_cdn[c] for c in named], reports, adm.weights, now)
            return Outcome(204, "ok", len(reports), 0, 0, unknown)
        dims_of: list[Dims] = []
        taken: list[PlayerReport] = []
        weights: list[float] = []
        shed: list[tuple[Dims, str]] = []
        accept, shed_verdict = Verdict.ACCEPT, Verdict.SHED
        for r, c, verdict, weight in zip(reports, cdns, adm.verdicts, adm.weights, strict=True):
            if c == UNKNOWN:
                c = batch_cdn.get(r.sid) or cdn or UNKNOWN
            dims = per_cdn.get(c)
            if dims is None:
                dims = per_cdn[c] = Dims(event, region, c, isp, device)
            if verdict is accept:
                dims_of.append(dims)
                taken.append(r)
                weights.append(weight)
            elif verdict is shed_verdict:
                shed.append((dims, r.sid))
        if taken:
            sink.players(dims_of, taken, weights, now)
        for dims, sid in shed:
            sink.shed(dims, now, sid)
        return Outcome(
            204,
            "ok",
            len(taken),
            len(reports) - len(taken) - len(shed),
            len(shed),
            unknown,
        )

    # --- edge access records -------------------------------------------------------------------

    def access_batch(self, body: bytes, content_type: str | None, now: float) -> Outcome:
        """One ``POST /v1/access`` from an edge or the shield."""
        if (content_type or "").split(";")[0].strip().lower() != "application/json":
            return self._reject(Rejected.CONTENT_TYPE, 415, "Content-Type must be application/json")
        if len(body) > self.settings.max_body_bytes:
            return self._reject(
                Rejected.OVERSIZE, 413, f"body larger than {self.settings.max_body_bytes} bytes"
            )
        try:
            records = decode_access_batch(body, self.settings.max_records)
        except ValueError as exc:
            oversize = "records in one batch" in str(exc)
            return self._reject(
                Rejected.OVERSIZE if oversize else Rejected.MALFORMED,
                413 if oversize else 400,
                f"malformed access batch: {exc}",
            )
        self.ingest_access(records, now)
        return Outcome(204, "ok", accepted=len(records))

    def ingest_access(self, records: Sequence[AccessRecord], now: float) -> None:
        agg = self.sink
        for rec in records:
            event = event_of_path(rec.path)
            if event is None or event not in self.events:
                self.access_dropped["no_event" if event is None else "unknown_event"] += 1
                continue
            # The viewer's region header reached the edge unverified: it counts only when the
            # edge's own peer (rec.client) is a trusted proxy, as on player reports.
            region, isp = self._where(rec.client, rec.region)
            dims = Dims(event, region, rec.cdn, isp, device_class(rec.user_agent))
            agg.access(dims, rec, now)
            if rec.cmcd:
                self._request_cmcd(dims, rec)
            self.access_records += 1

    def _request_cmcd(self, dims: Dims, rec: AccessRecord) -> None:
        # CMCD on a media request (v1, or v2 request mode as hls.js sends with version 2), from
        # the query or the CMCD-* headers: the keys are validated and counted; unknown keys are
        # ignored. A bad one is counted apart from refused POSTs: the record itself was taken.
        try:
            d = decode_dict(unquote(rec.cmcd or ""))
        except CmcdError:
            self.access_cmcd_malformed += 1
            return
        self.unknown_keys += d.unknown_keys

    # --- time ----------------------------------------------------------------------------------

    def tick(self, now: float) -> tuple[list[ClosedWindow], list[AlertEvent]]:
        """Close finished windows, evaluate the alert rules on them."""
        windows = self.aggregator.tick(now)
        return windows, self.closed(windows, now)

    def closed(self, windows: Sequence[ClosedWindow], now: float) -> list[AlertEvent]:
        """Windows closed here or by stream aggregators: alert rules, recent (for /metrics)."""
        alerts = self.alerts.handle(windows, now) if windows or self.alerts.firing() else []
        for start in sorted({w.start for w in windows}):
            self.recent.append([w for w in windows if w.start == start])
        self.alert_log.extend(alerts)
        return alerts

    def next_deadline(self) -> float | None:
        return self.aggregator.next_deadline()

    def health(
        self,
        samples: Mapping[str, Mapping[str, float]],
        up: Mapping[str, bool],
        now: float,
    ) -> list[AlertEvent]:
        """One scrape round of platform health: evaluate the health alert rules on it."""
        alerts = self.health_alerts.handle(samples, up, now)
        self.alert_log.extend(alerts)
        return alerts

    def firing(self) -> list[Firing]:
        """QoE and health alerts firing now."""
        return [*self.alerts.firing(), *self.health_alerts.firing()]
