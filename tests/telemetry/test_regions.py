"""Region and ISP of telemetry: the control plane's CIDR table by default (one table for
entitlement and QoE), `telemetry.networks` as an override, and a region header counted only
from a trusted proxy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from mainevent.common.telemetry import AccessRecord, encode_access_batch
from mainevent.config import NetworkRange, TelemetrySettings, load_settings
from mainevent.control.entitlement import RegionTable
from mainevent.control.settings import RegionRange, load_control_settings
from mainevent.control.telemetry.app import TelemetryService, create_app
from mainevent.control.telemetry.collector import Collector
from mainevent.control.telemetry.events import EventTiming
from mainevent.control.telemetry.store import TelemetryStore
from tests.telemetry.conftest import EVENT, T0, Clock, body, record

TS = int(T0 * 1000)

CONTROL = (
    RegionRange(cidr="10.0.0.0/8", region="eu", isp="wide"),
    RegionRange(cidr="10.1.0.0/16", region="de", isp="telekom"),
    RegionRange(cidr="2001:db8::/32", region="us", isp="v6net"),
)


def _where(c: Collector, client: str | None, header: str | None = None) -> tuple[str, str]:
    return c._where(client, header)


def test_longest_prefix_wins_for_region_and_isp_in_ipv4_and_ipv6() -> None:
    """A viewer in a more specific network is placed there, IPv6 too; no match is unknown."""
    c = Collector(TelemetrySettings(db_path=Path(":memory:")), {}, regions=CONTROL)
    assert _where(c, "10.1.2.3") == ("de", "telekom")
    assert _where(c, "10.2.0.1") == ("eu", "wide")
    assert _where(c, "2001:db8::1") == ("us", "v6net")
    assert _where(c, "192.0.2.1") == ("unknown", "unknown")
    assert _where(c, "::ffff:10.1.2.3") == ("unknown", "unknown")  # an IPv6 address, no v6 row
    assert _where(c, "not-an-ip") == ("unknown", "unknown")
    assert _where(c, None) == ("unknown", "unknown")


def test_the_collector_uses_the_control_planes_table_unless_networks_overrides_it() -> None:
    """Entitlement and QoE place a viewer in the same region: `control.regions` by default."""
    plain = TelemetrySettings(db_path=Path(":memory:"))
    assert plain.networks == ()
    # The control plane's default table (loopback is local).
    assert _where(Collector(plain, {}), "127.0.0.1") == ("local", "loopback")
    assert _where(Collector(plain, {}), "::1") == ("local", "loopback")
    # The same table the control plane resolves regions with.
    control = RegionTable((r.cidr, r.region) for r in CONTROL)
    c = Collector(plain, {}, regions=CONTROL)
    for ip in ("10.1.2.3", "10.9.9.9", "2001:db8::7", "203.0.113.9"):
        assert _where(c, ip)[0] == (control.lookup(ip) or "unknown")
    override = plain.model_copy(
        update={"networks": (NetworkRange(cidr="10.0.0.0/8", region="x", isp="y"),)}
    )
    assert _where(Collector(override, {}, regions=CONTROL), "10.1.2.3") == ("x", "y")


def test_one_config_file_gives_both_planes_the_same_table(tmp_path: Path) -> None:
    """A `[control]` regions table in the file is what `telemetry serve` and `up` hand the
    collector (the ISP column is the collector's; the control plane ignores it)."""
    cfg = tmp_path / "mainevent.toml"
    cfg.write_text('[[control.regions]]\ncidr = "198.51.100.0/24"\nregion = "fr"\nisp = "orange"\n')
    regions = load_control_settings(file=cfg, environ={}).regions
    t = load_settings(file=cfg, environ={}).telemetry
    c = Collector(t.model_copy(update={"db_path": Path(":memory:")}), {}, regions=regions)
    assert _where(c, "198.51.100.7") == ("fr", "orange")


def test_a_region_header_counts_only_from_a_trusted_proxy() -> None:
    """A viewer cannot pick its region by header; a configured proxy can set it."""
    s = TelemetrySettings(db_path=Path(":memory:"))
    untrusted = Collector(s, {}, regions=CONTROL)
    assert _where(untrusted, "10.1.2.3", "us") == ("de", "telekom")
    trusted = Collector(
        s.model_copy(update={"trusted_proxies": ("10.1.0.0/16",)}), {}, regions=CONTROL
    )
    assert _where(trusted, "10.1.2.3", "us") == ("us", "telekom")
    assert _where(trusted, "10.2.0.1", "us") == ("eu", "wide")  # outside the proxies' CIDR


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _regions_seen(trusted: tuple[str, ...], tmp_path: Path) -> dict[str, Any]:
    """Regions of the QoE series after a player report and an edge access record that both
    claim `X-Client-Region: us`, from 10.1.2.3 (the report's peer and the record's client)."""
    settings = TelemetrySettings(db_path=Path(":memory:"), trusted_proxies=trusted)
    clock = Clock()
    store = TelemetryStore(tmp_path / f"t{len(trusted)}.db")
    service = TelemetryService(
        Collector(settings, {EVENT: EventTiming(2000, 500)}, regions=CONTROL), store, clock
    )
    transport = httpx.ASGITransport(
        app=create_app(service, background=False), client=("10.1.2.3", 5)
    )
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
            r = await client.post(
                f"/v1/cmcd/{EVENT}",
                content=body(record(e="t", ts=TS, sn=0, sid="p1", sta="s", cid=EVENT, cdn="cdn-a")),
                headers={"content-type": "application/cmcd", "x-client-region": "us"},
            )
            assert r.status_code == 204, r.text
            rec = AccessRecord(
                T0, "cdn-b", f"/live/{EVENT}/v720/1.m4s", 200, 1, 1.0, "HIT", "10.1.2.3",
                "us", None, None,
            )  # fmt: skip
            r = await client.post(
                "/v1/access",
                content=encode_access_batch([rec]),
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 204, r.text
            clock.advance(1)
            service.tick()
            r = await client.get(
                "/v1/telemetry/qoe",
                params={"event": EVENT, "by": "cdn,region,isp", "from": T0 - 5, "to": clock.now},
            )
            assert r.status_code == 200, r.text
            return {s["labels"]["cdn"]: s["labels"] for s in r.json()["series"]}
    finally:
        store.close()


@pytest.mark.anyio
async def test_reports_and_access_records_ignore_an_untrusted_region_header(
    tmp_path: Path,
) -> None:
    """Both ingest paths place a viewer by address unless the header came via a trusted proxy."""
    seen = await _regions_seen((), tmp_path)
    assert seen["cdn-a"]["region"] == "de"
    assert seen["cdn-b"]["region"] == "de"
    assert seen["cdn-b"]["isp"] == "telekom"
    seen = await _regions_seen(("10.1.0.0/16",), tmp_path)
    assert seen["cdn-a"]["region"] == "us"
    assert seen["cdn-b"]["region"] == "us"
