"""Scale-out on one machine: the shield's choice between origins, the edge balancer's nginx config,
and the settings `mainevent up` hands its origin replicas."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mainevent.cli import build_parser
from mainevent.commands.scaleout import (
    CdnPool,
    EdgeFleet,
    edge_lb_config,
    replica_settings,
    shield_processes,
)
from mainevent.commands.up import overrides_from_args
from mainevent.common.breaker import BreakerState
from mainevent.common.nginx import find_nginx
from mainevent.config import ConfigError, load_settings
from mainevent.media.edge.failover import OriginChoice


def test_shield_prefers_the_first_origin_and_fails_over_in_order() -> None:
    """Healthy: always origin 0; after it fails, origin 1 until 0's probe succeeds again."""
    c = OriginChoice(("http://o0", "http://o1", "http://o2"), open_s=2.0)
    assert c.next(0.0, frozenset()) == 0
    c.record(0, False, 0.0, moved_on=True)
    assert c.next(0.1, frozenset({0})) == 1  # the same request moves on
    assert c.next(0.5, frozenset()) == 1  # later requests skip the open breaker
    c.record(1, False, 0.5, moved_on=True)
    assert c.next(0.6, frozenset()) == 2
    assert c.next(2.1, frozenset()) == 0  # 0's probe
    assert c.next(2.15, frozenset()) == 2  # 1 is still open; the probe to 0 is out
    c.record(0, True, 2.2)
    assert c.next(2.3, frozenset()) == 0
    stats = c.statistics()
    assert stats[0].breaker is BreakerState.CLOSED
    assert [s.failovers for s in stats] == [1, 1, 0]


def test_no_origin_available_means_the_fetch_fails_for_stale_if_error() -> None:
    """Every breaker open and every origin tried: None, so the cache serves its stale copy."""
    c = OriginChoice(("http://o0", "http://o1"), open_s=5.0)
    c.record(0, False, 0.0)
    c.record(1, False, 0.0)
    assert c.next(1.0, frozenset()) is None
    with pytest.raises(ValueError, match="at least one upstream"):
        OriginChoice(())


def test_edge_balancer_config_fails_over_between_a_cdns_edges() -> None:
    """One server per CDN on its port, its edges as upstream with passive health checks; GETs
    a dead edge failed go to the next one, a 503 passes through."""
    pools = [
        CdnPool("cdn-a", "127.0.0.1", 9001, ("127.0.0.1:9101", "127.0.0.1:9102")),
        CdnPool("cdn-b", "127.0.0.1", 9002, ("127.0.0.1:9201", "127.0.0.1:9202")),
    ]
    text = edge_lb_config(pools, Path("/w"), None)
    assert "listen 127.0.0.1:9001" in text
    assert "listen 127.0.0.1:9002" in text
    assert "server 127.0.0.1:9102 max_fails=1 fail_timeout=2s;" in text
    assert "proxy_next_upstream error timeout http_502 http_504;" in text
    assert "http_503" not in text
    assert text.count("upstream edges_cdn_") == 2


@pytest.mark.skipif(find_nginx() is None, reason="Debian nginx is not installed")
def test_edge_balancer_config_passes_nginx_t(tmp_path: Path) -> None:
    """nginx itself accepts the edge balancer's config."""
    pools = [CdnPool("cdn-a", "127.0.0.1", 9001, ("127.0.0.1:9101", "127.0.0.1:9102"))]
    for sub in ("client_body", "proxy_temp", "fastcgi_temp", "uwsgi_temp", "scgi_temp"):
        (tmp_path / sub).mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(edge_lb_config(pools, tmp_path, None))
    nginx = find_nginx()
    assert nginx is not None
    r = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 0, r.stderr


def test_replicas_get_the_stacks_settings_with_their_own_port_and_directory(
    tmp_path: Path,
) -> None:
    """A replica serves the same event (ladder, timing, tokens) from its own port and data
    directory, requires the ingest secret, and starts no replicas of its own."""
    s = load_settings(
        overrides={
            "origin": {"replicas": 2, "data_dir": str(tmp_path)},
            "event": {"latency": "low"},
        }
    )
    data = replica_settings(s, 1, 9123, "sek")
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    r = load_settings(overrides=json.loads(path.read_text()))
    assert (r.origin.port, r.origin.ingest_secret, r.origin.replicas) == (9123, "sek", 1)
    assert r.origin.data_dir == tmp_path / "origin-1"
    assert r.event == s.event
    assert r.origin.token_keys == s.origin.token_keys


def test_scaleout_settings_are_validated() -> None:
    """Embedded defaults: one origin, one in-process edge per CDN; bad values are named."""
    s = load_settings()
    assert (s.origin.replicas, s.origin.ingest_urls, s.delivery.edges_per_cdn) == (1, (), 1)
    with pytest.raises(ConfigError, match=r"origin\.replicas"):
        load_settings(overrides={"origin": {"replicas": 0}})
    with pytest.raises(ConfigError, match="must start with http"):
        load_settings(overrides={"origin": {"ingest_urls": ["ftp://x"]}})
    with pytest.raises(ConfigError, match=r"delivery\.edges_per_cdn"):
        load_settings(environ={"MAINEVENT_DELIVERY__EDGES_PER_CDN": "0"})
    env = load_settings(environ={"MAINEVENT_ORIGIN__REPLICAS": "2"})
    assert env.origin.replicas == 2
    args = build_parser().parse_args(["up", "--origins", "2", "--edges-per-cdn", "2"])
    assert overrides_from_args(args) == {
        "origin": {"replicas": 2},
        "delivery": {"edges_per_cdn": 2},
    }


def test_shield_processes_need_an_edge_fleet_and_each_edge_prefers_its_own_shield(
    tmp_path: Path,
) -> None:
    """`--shields 2` needs `--edges-per-cdn ≥ 2`; edge i misses to shield i mod N first, then
    to the others, and every shield fails over between the origins in order."""
    with pytest.raises(ConfigError, match=r"delivery\.shields > 1 needs"):
        load_settings(overrides={"delivery": {"shields": 2}})
    args = build_parser().parse_args(["up", "--shields", "2", "--edges-per-cdn", "2"])
    assert overrides_from_args(args) == {"delivery": {"edges_per_cdn": 2, "shields": 2}}
    origins = ["http://o0", "http://o1", "http://packager"]
    shields = shield_processes("127.0.0.1", [7001, 7002], origins, admin_secret=None)
    for s in shields:
        ups = [s.argv[i + 1] for i, a in enumerate(s.argv) if a == "--upstream"]
        assert ups == origins
    if find_nginx() is None:
        pytest.skip("Debian nginx is not installed")
    fleet = EdgeFleet.plan(
        ["cdn-a"],
        per_cdn=2,
        host="127.0.0.1",
        listen_ports=[7000],
        edge_ports=[[7010, 7011]],
        shield_urls=["http://127.0.0.1:7001", "http://127.0.0.1:7002"],
        regions={},
        workdir=tmp_path,
        admin_secret=None,
        token_keys=None,
        shields=shields,
    )
    firsts = [c.argv[c.argv.index("--upstream") + 1] for c in fleet.children]
    assert firsts == ["http://127.0.0.1:7001", "http://127.0.0.1:7002"]
    assert fleet.shield_urls == ["http://127.0.0.1:7001", "http://127.0.0.1:7002"]


def test_every_edge_and_shield_process_of_a_fleet_is_a_health_scrape_target(
    tmp_path: Path,
) -> None:
    """Telemetry scrapes each fleet process itself (a dead edge shows as target-down), not
    only the CDN's nginx address."""
    from mainevent.commands.scaleout import CdnPool, Supervised
    from mainevent.commands.scaleout_stack import metrics_targets

    shields = shield_processes("127.0.0.1", [7001, 7002], ["http://o0"], admin_secret=None)
    edges = [
        Supervised(f"cdn-a-{i}", ["edge"], health_url=f"http://127.0.0.1:{7010 + i}/healthz")
        for i in range(2)
    ]
    pool = CdnPool("cdn-a", "127.0.0.1", 7000, ("127.0.0.1:7010", "127.0.0.1:7011"))
    fleet = EdgeFleet([pool], tmp_path, edges, "nginx", shields)
    assert metrics_targets(fleet, None) == {
        "shield-0": "http://127.0.0.1:7001/metrics",
        "shield-1": "http://127.0.0.1:7002/metrics",
        "cdn-a-0": "http://127.0.0.1:7010/metrics",
        "cdn-a-1": "http://127.0.0.1:7011/metrics",
    }
    assert metrics_targets(None, None) == {}
