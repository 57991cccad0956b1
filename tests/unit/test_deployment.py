"""The reference deployment in deploy/ is consistent: roles, systemd units, env files, nginx config.

Every ExecStart is parsed by mainevent's own CLI parser (after systemd's %i and ${VAR}
substitution from the unit's environment file), every environment file by the settings
loaders, and the control-plane load balancer's nginx config is what `mainevent control
lb-config` generates for the roles' workers and passes `nginx -t`.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from mainevent.cli import build_parser
from mainevent.config import load_settings
from mainevent.control.fleet import FleetPlan, find_nginx, lb_config
from mainevent.control.settings import load_control_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"
ROLES: dict[str, dict[str, Any]] = tomllib.loads((DEPLOY / "roles.toml").read_text())["roles"]
OURS = {name: r for name, r in ROLES.items() if (DEPLOY / "systemd" / r["unit"]).exists()}


def _unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as {section: {key: [values]}} (keys may repeat)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        out[section].setdefault(key, []).append(value)
    return out


def _env(name: str) -> dict[str, str]:
    """An environment file as systemd reads it (single-quoted values are literal)."""
    env = {}
    for line in (DEPLOY / "env" / name).read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def _instances(role: dict[str, Any]) -> list[str | None]:
    return list(role.get("instances", [None]))


def _exec(role: dict[str, Any], instance: str | None) -> tuple[list[str], dict[str, str]]:
    """ExecStart of ``role``'s unit for ``instance``, substituted, and the env it read."""
    unit = _unit(role["unit"])
    env: dict[str, str] = {}
    for path in unit["Service"].get("EnvironmentFile", []):
        name = Path(path.lstrip("-")).name.replace("%i", instance or "")
        env |= _env(name)
    (line,) = unit["Service"]["ExecStart"]
    line = line.replace("%i", instance or "")
    line = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], line)
    return shlex.split(line), env


def test_every_role_names_its_unit_health_check_and_hosts() -> None:
    """Each role has a unit (ours or a Debian package's), an HTTP or command health check, hosts."""
    for name, role in ROLES.items():
        assert role["hosts"], name
        assert role["health"].startswith("/") or "package" in role, name
        if name not in OURS:
            assert "package" in role, f"{name}: no unit in deploy/systemd and no Debian package"
        for need in role["needs"]:
            assert need in ROLES, f"{name} needs unknown role {need}"


@pytest.mark.parametrize("name", sorted(n for n, r in OURS.items() if "package" not in r))
def test_exec_start_is_a_valid_mainevent_command_on_the_roles_port(name: str) -> None:
    """Our units' ExecStart parse with mainevent's CLI and listen on the port the role says."""
    role = OURS[name]
    for instance in _instances(role):
        argv, env = _exec(role, instance)
        assert argv[0].endswith("/mainevent"), argv
        args = build_parser().parse_args(argv[1:])
        port = int(instance) if name == "control" else role["port"]
        assert args.port == port, (name, instance)
        assert all(v for k, v in env.items() if not k.startswith("MAINEVENT_")), env


def test_control_workers_share_postgres_and_redis_and_trust_only_the_balancer() -> None:
    """control.env loads; it names the roles' PostgreSQL and Redis and trusts the balancer alone."""
    env = _env(ROLES["control"]["env"])
    s = load_control_settings(environ=env)
    pg, redis, lb = (ROLES[r]["hosts"][0] for r in ("postgres", "redis", "control-lb"))
    assert s.database_url.startswith("postgresql+psycopg://")
    assert f"@{pg}/" in s.database_url
    assert s.redis_url == f"redis://{redis}:{ROLES['redis']['port']}/0"
    assert s.trusted_edges == (f"{lb}/32",)
    assert s.dev_idp_secret is None
    assert set(s.cdns) == set(ROLES["edge"]["instances"])
    # The edges check tokens with the key the control plane signs with.
    for edge in ROLES["edge"]["instances"]:
        argv, _ = _exec(ROLES["edge"], edge)
        kid, _, secret = build_parser().parse_args(argv[1:]).token_key[0].partition(":")
        assert {(k.kid, k.secret_hex) for k in s.token_keys} >= {(kid, secret)}


def test_delivery_chain_edges_to_shield_to_origins() -> None:
    """Edges miss to the shield; the shield to the origins in order, the media plane's own
    origin last; the media plane publishes every object to each origin's ingest with the
    secret the origins require."""
    shield_argv, _ = _exec(ROLES["shield"], None)
    shield = build_parser().parse_args(shield_argv[1:])
    media_url = f"http://{ROLES['media']['hosts'][0]}:{ROLES['media']['port']}"
    origin = ROLES["origin"]
    origin_urls = [f"http://{h}:{origin['port']}" for h in origin["hosts"]]
    assert shield.upstream == [*origin_urls, media_url]
    media = load_settings(environ=_env(ROLES["media"]["env"]))
    assert list(media.origin.ingest_urls) == origin_urls
    for instance, host in zip(origin["instances"], origin["hosts"], strict=True):
        argv, env = _exec(origin, instance)
        args = build_parser().parse_args(argv[1:])
        assert (args.host, args.port) == (host, origin["port"])
        o = load_settings(environ=env)
        assert o.origin.ingest_secret == media.origin.ingest_secret
        assert o.event.id == media.event.id
    assert shield.host == ROLES["shield"]["hosts"][0]
    for edge, host in zip(ROLES["edge"]["instances"], ROLES["edge"]["hosts"], strict=True):
        argv, _ = _exec(ROLES["edge"], edge)
        args = build_parser().parse_args(argv[1:])
        assert (args.name, args.host) == (edge, host)
        assert args.upstream == [f"http://{shield.host}:{shield.port}"]
    load_settings(environ=_env(ROLES["media"]["env"]))


def _plan(workdir: Path, user: str | None) -> FleetPlan:
    workers = tuple(
        f"{host}:{port}"
        for host in ROLES["control"]["hosts"]
        for port in _instances(ROLES["control"])
    )
    return FleetPlan(
        listen_host="0.0.0.0",
        listen_port=ROLES["control-lb"]["port"],
        workers=workers,
        workdir=workdir,
        user=user,
    )


def test_balancer_config_is_the_generated_one_for_the_roles_workers() -> None:
    """deploy/nginx/control-lb.conf is `mainevent control lb-config` for every worker of the roles."""
    text = (DEPLOY / ROLES["control-lb"]["config"]).read_text()
    assert text == lb_config(_plan(Path("/var/lib/mainevent/control-lb"), "www-data"))
    unit = _unit(ROLES["control-lb"]["unit"])
    assert any("/etc/mainevent/control-lb.conf" in v for v in unit["Service"]["ExecStart"])


def test_balancer_passes_shed_answers_through_and_replays_only_refresh_and_heartbeat() -> None:
    """Fleet overload: a worker's 503 (shed new start) reaches the client, not another worker."""
    text = lb_config(_plan(Path("/w"), None))
    lines = [ln.strip() for ln in text.splitlines() if "proxy_next_upstream " in ln]
    # No http_503 anywhere; non_idempotent only where the request is safe to send twice.
    assert lines == [
        "proxy_next_upstream error timeout;",
        "proxy_next_upstream error timeout non_idempotent;",
    ]
    replayable = text.split("proxy_next_upstream error timeout;", 1)[1]
    assert "location ~ ^/v1/sessions/[^/]+/(refresh|heartbeat)$ {" in replayable
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in text


@pytest.mark.skipif(find_nginx() is None, reason="Debian nginx is not installed")
def test_balancer_config_passes_nginx_t(tmp_path: Path) -> None:
    """nginx itself accepts the balancer's config."""
    plan = _plan(tmp_path, None)
    for sub in ("client_body", "proxy_temp", "fastcgi_temp", "uwsgi_temp", "scgi_temp"):
        (tmp_path / sub).mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(lb_config(plan))
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


def test_deployment_doc_covers_every_role_and_unit() -> None:
    """docs/deployment.md names every role and every unit file kept in deploy/."""
    doc = DOCS.read_text()
    for name, role in ROLES.items():
        assert f"`{name}`" in doc, name
        assert role["unit"] in doc, role["unit"]
    for path in (DEPLOY / "systemd").iterdir():
        assert path.name in doc, path.name
