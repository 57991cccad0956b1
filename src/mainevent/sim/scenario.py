"""Scenario files for `mainevent simulate`: TOML (tomllib) into frozen, validated dataclasses.

Times are seconds relative to the bell (T+0); negative times are before it. Every field is
documented where it is defined; a bad file raises :class:`ScenarioError` naming each problem
(`faults[2].kind: unknown fault 'cdn_outgae' (expected one of …)`), never a traceback.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from mainevent.control.steering.model import SteeringConfig

__all__ = [
    "Audience",
    "Cdn",
    "ControlPlane",
    "Delivery",
    "Device",
    "Fault",
    "FaultKind",
    "Isp",
    "Region",
    "Scenario",
    "ScenarioError",
    "Steering",
    "load_scenario",
    "shipped_scenarios",
]


class ScenarioError(ValueError):
    """The scenario file is unreadable or invalid; the message names every bad field."""


class FaultKind(StrEnum):
    """What breaks (SPEC: cold-start storm is the join curve itself)."""

    CDN_OUTAGE = "cdn_outage"
    """`cdn` answers errors in `region` (or everywhere) from `at_s` for `duration_s`."""
    ENTITLEMENT_OUTAGE = "entitlement_outage"
    """Every entitlement-store lookup fails."""
    ENCODER_FAILURE = "encoder_failure"
    """The primary encoder stops; with `delivery.backup` the backup's segments are published."""
    MANIFEST_STALL = "manifest_stall"
    """The origin publishes nothing new (playlists stop advancing); players drain their buffers."""
    ORIGIN_OUTAGE = "origin_outage"
    """The origin refuses the shield (restart); caches serve what they have."""


@dataclass(frozen=True, slots=True)
class Region:
    name: str
    share: float
    """Share of the audience in this region (shares are normalised)."""
    rtt_ms: float = 30.0
    """Round trip viewer → edge."""
    cdns: tuple[str, ...] = ()
    """CDN preference for this region (default: the order of `[[cdns]]`)."""


@dataclass(frozen=True, slots=True)
class Isp:
    name: str
    share: float
    bandwidth_mbps: float
    """Median access throughput; quantile cohorts get 0.5× / 1× / 1.6× of it."""
    viewers_per_address: float = 1.0
    """Viewers behind one public address (CGNAT on mobile); drives the per-address rate limit."""


@dataclass(frozen=True, slots=True)
class Device:
    name: str
    share: float
    max_kbps: int = 100_000
    """Highest rung the device plays (a phone does not fetch 1080p)."""


@dataclass(frozen=True, slots=True)
class Cdn:
    name: str
    capacity_gbps: float
    """Egress capacity per region it serves (beyond it throughput is shared out)."""
    cost_per_gb: float = 0.0
    regions: tuple[str, ...] = ()
    """Regions it serves (default: all)."""
    request_capacity_rps: float = 1e9
    """Requests per second one region's edges answer before queueing (edge CPU)."""
    edge_service_ms: float = 0.2
    """Time an edge spends on one request when idle (added to each request's latency)."""
    steering_capacity: float | None = None
    """Viewers the steering policy may put on this CDN across all regions (its `capacity`
    cap; default: no cap)."""


@dataclass(frozen=True, slots=True)
class Audience:
    viewers: int
    """Everyone who watches at some point."""
    page_open_share: float = 0.5
    """Open the event page between `page_open_from_s` and T+0: pre-authorised in the waiting room."""
    page_open_from_s: float = -1800.0
    play_from_s: float = -300.0
    """Pre-authorised viewers press play between this and `storm_width_s` after the bell."""
    storm_share: float = 0.4
    """Press play (and authorise) in the storm right after the bell."""
    storm_width_s: float = 60.0
    """The storm's arrivals decay exponentially with this mean after T+0."""
    late_share: float = 0.1
    """Join uniformly from T+0 to `half_time_s` (the rest of the audience)."""
    half_time_s: float = 1800.0
    half_time_leave_share: float = 0.15
    """Of those watching at half time, the share who leave and come back (the second storm)."""
    half_time_break_s: float = 300.0
    half_time_storm_width_s: float = 30.0
    poll_interval_s: float = 30.0
    """Waiting-room pages poll `/v1/events/{id}/status` this often."""


@dataclass(frozen=True, slots=True)
class ControlPlane:
    workers: int = 64
    """Playback API worker processes behind the load balancer (each its own admission controller)."""
    new_start_ms: float = 1.2
    """CPU time of one new start (JWT, checks, token) on a worker."""
    refresh_ms: float = 0.4
    poll_ms: float = 0.15
    shed_ms: float = 0.005
    """Cost of a refusal written at the door."""
    max_in_flight: int = 512
    entitlement_capacity_rps: float = 50_000.0
    """Lookups per second the entitlement store answers across the fleet."""
    entitlement_latency_ms: float = 4.0
    store_timeout_s: float = 0.5
    breaker_failures: int = 5
    breaker_open_s: float = 5.0
    decision_ttl_s: float = 60.0
    token_ttl_s: float = 3600.0
    refresh_before_s: float = 300.0
    """Players refresh this long before their token expires."""
    address_rate: float = 50.0
    address_burst: float = 500.0
    base_latency_ms: tuple[float, ...] = ()
    """Measured latency of a trivial control-plane request (`GET /healthz`) from a real run
    (`sim.calibrate`): the machine's scheduling and network delay, added to every simulated
    playback request's latency at its quantiles. Calibration input, empty by default."""


@dataclass(frozen=True, slots=True)
class Delivery:
    ladder_kbps: tuple[int, ...] = (700, 2500)
    audio_kbps: int = 128
    segment_s: float = 2.0
    hold_back_segments: float = 3.0
    """Players start this many segments behind the live edge."""
    publish_delay_s: float = 0.5
    """Capture → segment listed at the origin."""
    shield_rtt_ms: float = 20.0
    origin_rtt_ms: float = 10.0
    origin_capacity_rps: float = 2_000.0
    shield_capacity_rps: float = 50_000.0
    edge_cache_mb: int = 512
    backup: bool = True
    """A backup pipeline covers an encoder failure (no slate)."""
    startup_requests: int = 4
    """Sequential requests before playback starts, as the headless player makes them: the
    multivariant playlist, the media playlists (video and audio in parallel), the init section,
    the first segment (tracks in parallel). A rendition switch before the first segment (the
    real ABR's second answer differs from its first) adds a playlist reload."""
    request_latency_ms: tuple[float, ...] = ()
    """Measured start-up per step, as samples from a real run (`sim.calibrate`): each a player's
    own start (play request to the playhead moving, authorisation excluded) divided by
    `startup_requests`. When given, a start's media part is `startup_requests` × its quantile,
    in place of the modelled RTTs, edge service, first-segment transfer, ABR reload and cache
    waits (the measurement has them in it). Calibration input, empty by default."""
    retry_s: tuple[float, ...] = (0.5, 1.0, 2.0)
    """The player's retries before it fails over to the next CDN (headless player: 3 attempts)."""


@dataclass(frozen=True, slots=True)
class Steering:
    """The production steering policy's configuration (`SteeringConfig`) and the number of
    representative sessions it steers (see `sim/steering_model.py`)."""

    sessions: int = 600
    """Representative sessions for the whole audience (each stands for audience / sessions
    viewers, at least one); cost is sessions × TTL windows of `SteeringPolicy.steer`."""
    ttl_s: int = 10
    quorum: int = 2
    min_dwell_s: float = 30.0
    recover_hold_s: float = 30.0
    failure_drain_share: float = 0.5
    return_share: float = 0.2

    def policy_config(self) -> SteeringConfig:
        """The policy's configuration (raises ValueError for a bad value)."""
        return SteeringConfig(
            ttl_s=self.ttl_s,
            quorum=self.quorum,
            min_dwell_s=self.min_dwell_s,
            recover_hold_s=self.recover_hold_s,
            failure_drain_share=self.failure_drain_share,
            return_share=self.return_share,
            session_timeout_s=max(60.0, 3.0 * self.ttl_s),
        )


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    at_s: float
    duration_s: float
    cdn: str | None = None
    region: str | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    audience: Audience
    regions: tuple[Region, ...]
    isps: tuple[Isp, ...]
    devices: tuple[Device, ...]
    cdns: tuple[Cdn, ...]
    control: ControlPlane = field(default_factory=ControlPlane)
    delivery: Delivery = field(default_factory=Delivery)
    steering: Steering = field(default_factory=Steering)
    faults: tuple[Fault, ...] = ()
    description: str = ""
    start_s: float = -1800.0
    end_s: float = 3600.0
    seed: int = 1

    def with_viewers(self, viewers: int) -> Scenario:
        """The same event with another audience size (benchmark scaling)."""
        from dataclasses import replace

        return replace(self, audience=replace(self.audience, viewers=viewers))


def shipped_scenarios() -> dict[str, Path]:
    """Scenario name → file of the scenarios that ship with mainevent."""
    root = resources.files("mainevent.sim") / "scenarios"
    out: dict[str, Path] = {}
    for item in root.iterdir():
        if item.name.endswith(".toml"):
            out[item.name.removesuffix(".toml")] = Path(str(item))
    return dict(sorted(out.items()))


def load_scenario(source: str | Path) -> Scenario:
    """Load a scenario file, or a shipped scenario by name (`fight-night-20m`)."""
    path = Path(source)
    if not path.exists():
        shipped = shipped_scenarios()
        if str(source) in shipped:
            path = shipped[str(source)]
        else:
            names = ", ".join(shipped) or "none"
            raise ScenarioError(f"no scenario file {source!s} (shipped scenarios: {names})")
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"scenario {path} is not valid TOML: {exc}") from exc
    return parse_scenario(data, origin=str(path))


def parse_scenario(data: Mapping[str, Any], origin: str = "<scenario>") -> Scenario:
    """Validate a decoded TOML document; every problem is listed in one ScenarioError."""
    errors: list[str] = []
    top = dict(data)
    meta = _table(top.pop("scenario", {}), "scenario", errors)
    audience = _build(Audience, top.pop("audience", None), "audience", errors, required=True)
    regions = _array(Region, top.pop("regions", None), "regions", errors)
    isps = _array(Isp, top.pop("isps", None), "isps", errors)
    devices = _array(Device, top.pop("devices", None), "devices", errors)
    cdns = _array(Cdn, top.pop("cdns", None), "cdns", errors)
    control = _build(ControlPlane, top.pop("control", {}), "control", errors) or ControlPlane()
    delivery = _build(Delivery, top.pop("delivery", {}), "delivery", errors) or Delivery()
    steering = _build(Steering, top.pop("steering", {}), "steering", errors) or Steering()
    faults = _array(Fault, top.pop("faults", []), "faults", errors, allow_empty=True)
    for key in top:
        errors.append(
            f"{key}: unknown table (expected scenario, audience, regions, isps, "
            "devices, cdns, control, delivery, steering, faults)"
        )
    name = meta.pop("name", Path(origin).stem)
    description = meta.pop("description", "")
    start_s = meta.pop("start_s", -1800.0)
    end_s = meta.pop("end_s", 3600.0)
    seed = meta.pop("seed", 1)
    for key in meta:
        errors.append(f"scenario.{key}: unknown field")
    if (
        not isinstance(start_s, int | float)
        or not isinstance(end_s, int | float)
        or end_s <= start_s
    ):
        errors.append("scenario.end_s must be a number after scenario.start_s")
    if not isinstance(seed, int):
        errors.append("scenario.seed must be an integer")
    if errors:
        raise ScenarioError(f"invalid scenario {origin}:\n  " + "\n  ".join(errors))
    assert audience is not None
    sc = Scenario(
        name=str(name),
        description=str(description),
        audience=audience,
        regions=tuple(regions),
        isps=tuple(isps),
        devices=tuple(devices),
        cdns=tuple(cdns),
        control=control,
        delivery=delivery,
        steering=steering,
        faults=tuple(faults),
        start_s=float(start_s),
        end_s=float(end_s),
        seed=int(seed),
    )
    _check(sc, errors)
    if errors:
        raise ScenarioError(f"invalid scenario {origin}:\n  " + "\n  ".join(errors))
    return sc


def _table(value: Any, where: str, errors: list[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        errors.append(f"{where}: must be a table")
        return {}
    return dict(value)


def _build(
    cls: type[Any], value: Any, where: str, errors: list[str], *, required: bool = False
) -> Any:
    if value is None:
        if required:
            errors.append(f"{where}: missing table [{where}]")
        return None
    if not isinstance(value, dict):
        errors.append(f"{where}: must be a table")
        return None
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    ok = True
    for key, raw in value.items():
        f = known.get(key)
        if f is None:
            errors.append(f"{where}.{key}: unknown field (known: {', '.join(known)})")
            ok = False
            continue
        try:
            kwargs[key] = _coerce(f.type, raw)
        except (TypeError, ValueError) as exc:
            errors.append(f"{where}.{key}: {exc}")
            ok = False
    missing = [
        n
        for n, f in known.items()
        if n not in kwargs
        and f.default is MISSING
        and f.default_factory is MISSING
        and n not in value
    ]
    for n in missing:
        errors.append(f"{where}.{n}: required")
        ok = False
    if not ok:
        return None
    return cls(**kwargs)


def _array(
    cls: type[Any], value: Any, where: str, errors: list[str], *, allow_empty: bool = False
) -> list[Any]:
    if value is None:
        errors.append(f"{where}: missing (an array of tables [[{where}]])")
        return []
    if not isinstance(value, list) or (not value and not allow_empty):
        errors.append(f"{where}: must be a non-empty array of tables [[{where}]]")
        return []
    out = []
    for i, item in enumerate(value):
        built = _build(cls, item, f"{where}[{i}]", errors, required=True)
        if built is not None:
            out.append(built)
    return out


def _coerce(annotation: Any, raw: Any) -> Any:
    text = str(annotation)
    if text == "str":
        if not isinstance(raw, str) or not raw:
            raise TypeError(f"expected a non-empty string, got {raw!r}")
        return raw
    if text == "str | None":
        if raw is not None and not isinstance(raw, str):
            raise TypeError(f"expected a string, got {raw!r}")
        return raw
    if text == "float | None":
        if raw is None:
            return None
        return _coerce("float", raw)
    if text == "bool":
        if not isinstance(raw, bool):
            raise TypeError(f"expected true or false, got {raw!r}")
        return raw
    if text == "int":
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise TypeError(f"expected an integer, got {raw!r}")
        if raw < 0:
            raise ValueError(f"must not be negative, got {raw}")
        return raw
    if text == "float":
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            raise TypeError(f"expected a number, got {raw!r}")
        return float(raw)
    if text.startswith("tuple[str"):
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            raise TypeError(f"expected a list of strings, got {raw!r}")
        return tuple(raw)
    if text.startswith("tuple[int"):
        if (
            not isinstance(raw, list)
            or not raw
            or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in raw)
        ):
            raise TypeError(f"expected a non-empty list of positive integers, got {raw!r}")
        return tuple(raw)
    if text.startswith("tuple[float"):
        if not isinstance(raw, list) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) and x >= 0 for x in raw
        ):
            raise TypeError(f"expected a list of non-negative numbers, got {raw!r}")
        return tuple(float(x) for x in raw)
    if text == "FaultKind":
        try:
            return FaultKind(raw)
        except ValueError:
            kinds = ", ".join(k.value for k in FaultKind)
            raise ValueError(f"unknown fault {raw!r} (expected one of {kinds})") from None
    raise TypeError(f"unsupported field type {text}")  # pragma: no cover - schema bug


def _check(sc: Scenario, errors: list[str]) -> None:
    a = sc.audience
    if a.viewers < 1:
        errors.append("audience.viewers: must be at least 1")
    shares = (a.page_open_share, a.storm_share, a.late_share, a.half_time_leave_share)
    if any(not 0 <= s <= 1 for s in shares):
        errors.append("audience: shares must be between 0 and 1")
    if a.page_open_share + a.storm_share + a.late_share > 1.000001:
        errors.append("audience: page_open_share + storm_share + late_share must not exceed 1")
    if a.storm_width_s <= 0 or a.half_time_storm_width_s <= 0 or a.poll_interval_s <= 0:
        errors.append("audience: storm widths and poll_interval_s must be positive")
    cdn_names = [c.name for c in sc.cdns]
    region_names = [r.name for r in sc.regions]
    for label, names in (
        ("regions", region_names),
        ("cdns", cdn_names),
        ("isps", [i.name for i in sc.isps]),
        ("devices", [d.name for d in sc.devices]),
    ):
        if len(set(names)) != len(names):
            errors.append(f"{label}: names must be unique")
    share_groups: tuple[tuple[str, list[float]], ...] = (
        ("regions", [x.share for x in sc.regions]),
        ("isps", [x.share for x in sc.isps]),
        ("devices", [x.share for x in sc.devices]),
    )
    for label, shares_of in share_groups:
        if sum(shares_of) <= 0:
            errors.append(f"{label}: shares must add up to more than 0")
        for i, share in enumerate(shares_of):
            if share < 0:
                errors.append(f"{label}[{i}].share: must not be negative")
    for i, r in enumerate(sc.regions):
        for name in r.cdns:
            if name not in cdn_names:
                errors.append(
                    f"regions[{i}].cdns: unknown cdn {name!r} (known: {', '.join(cdn_names)})"
                )
    for i, c in enumerate(sc.cdns):
        if c.capacity_gbps <= 0:
            errors.append(f"cdns[{i}].capacity_gbps: must be positive")
        for served in c.regions:
            if served not in region_names:
                errors.append(f"cdns[{i}].regions: unknown region {served!r}")
    for i, isp in enumerate(sc.isps):
        if isp.bandwidth_mbps <= 0 or isp.viewers_per_address < 1:
            errors.append(f"isps[{i}]: bandwidth_mbps must be positive, viewers_per_address ≥ 1")
    d = sc.delivery
    if d.segment_s <= 0 or list(d.ladder_kbps) != sorted(d.ladder_kbps):
        errors.append("delivery: segment_s must be positive and ladder_kbps ascending")
    if sc.control.workers < 1 or sc.control.max_in_flight < 1:
        errors.append("control: workers and max_in_flight must be at least 1")
    if sc.control.refresh_before_s >= sc.control.token_ttl_s:
        errors.append("control.refresh_before_s must be below control.token_ttl_s")
    for i, c in enumerate(sc.cdns):
        if c.steering_capacity is not None and c.steering_capacity < 0:
            errors.append(f"cdns[{i}].steering_capacity: must not be negative")
    st = sc.steering
    if st.sessions < 1:
        errors.append("steering.sessions: must be at least 1")
    try:
        st.policy_config()
    except ValueError as exc:
        errors.append(f"steering: {exc}")
    for i, f in enumerate(sc.faults):
        if f.duration_s <= 0:
            errors.append(f"faults[{i}].duration_s: must be positive")
        if f.kind is FaultKind.CDN_OUTAGE and f.cdn not in cdn_names:
            errors.append(f"faults[{i}].cdn: cdn_outage needs a known cdn (got {f.cdn!r})")
        if f.region is not None and f.region not in region_names:
            errors.append(f"faults[{i}].region: unknown region {f.region!r}")
