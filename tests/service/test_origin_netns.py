"""The origin-failover scenario with each origin on a host of its own: a network namespace with
its own address, joined to this one by a veth pair (`ip netns`, root only).

The packager's fan-out and the shield stay here (10.78.<i>.1); origin i listens on 10.78.<i>.2.
netem (delay/loss between "regions") is not available in this sandbox's kernel (`tc qdisc add
… netem` → "Specified qdisc kind is unknown"), so the links are plain.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.service.ingest_media import Media
from tests.service.test_origin_failover import (
    OriginProcess,
    kill_one_origin,
    settings_file,
)
from tests.service.test_origin_failover import media as media

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)


def _netns_works() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    name = f"me-probe-{os.getpid()}"
    ok = _ip("netns", "add", name).returncode == 0
    _ip("netns", "del", name)
    return ok


@pytest.fixture
async def hosts(tmp_path: Path) -> AsyncIterator[list[OriginProcess]]:
    if not _netns_works():
        pytest.skip("network namespaces need root and iproute2 (`ip netns add` failed)")
    tag = f"{os.getpid() % 10000}"
    made: list[tuple[str, str]] = []
    procs: list[OriginProcess] = []
    try:
        for i in range(2):
            ns, host_if, ns_if = f"me-o{i}-{tag}", f"meh{i}{tag}", f"men{i}{tag}"
            subnet = 100 + (os.getpid() + i) % 150
            for cmd in (
                ("netns", "add", ns),
                ("link", "add", host_if, "type", "veth", "peer", "name", ns_if),
                ("link", "set", ns_if, "netns", ns),
                ("addr", "add", f"10.78.{subnet}.1/24", "dev", host_if),
                ("link", "set", host_if, "up"),
                ("-n", ns, "addr", "add", f"10.78.{subnet}.2/24", "dev", ns_if),
                ("-n", ns, "link", "set", ns_if, "up"),
                ("-n", ns, "link", "set", "lo", "up"),
            ):
                r = _ip(*cmd)
                assert r.returncode == 0, (cmd, r.stderr)
                if cmd[0] == "netns":
                    made.append((ns, host_if))
            procs.append(
                OriginProcess(
                    settings_file(tmp_path, f"o{i}"), 8080, host=f"10.78.{subnet}.2", netns=ns
                )
            )
        for p in procs:
            await p.start()
        yield procs
    finally:
        for p in procs:
            p.kill()
        for ns, host_if in made:
            _ip("link", "del", host_if)
            _ip("netns", "del", ns)


async def test_one_origin_host_killed_mid_stream(hosts: list[OriginProcess], media: Media) -> None:
    """Origins on their own addresses: the same guarantees as on loopback (no MSN lost or
    reused, shield failover, the restarted origin caught up and preferred again)."""
    await kill_one_origin(hosts, media)
