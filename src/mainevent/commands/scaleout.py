"""`mainevent up` scaled out on one machine: N origin processes fed by the ingest fan-out
(`origin.replicas`), N edge processes per CDN behind one Debian nginx (`delivery.edges_per_cdn`)
and N shield processes between them (`delivery.shields`).

Each child is a real `mainevent origin serve` / `mainevent edge serve` process, restarted when it
exits (a `kill -9` drill included) and stopped with the stack. The nginx config is rendered here
with the shared preamble of `common/nginx.py`: one `server` per CDN on the CDN's address, its
edges as the upstream (least connections, keep-alive, passive health checks, a GET that failed
on one edge is tried on the next).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from mainevent.common.nginx import find_nginx, make_dirs, preamble, temp_paths
from mainevent.config import Settings
from mainevent.media.encode.process import die_with_parent

__all__ = [
    "CdnPool",
    "EdgeFleet",
    "ReplicaOrigins",
    "Supervised",
    "edge_lb_config",
    "replica_settings",
    "shield_processes",
]

log = logging.getLogger(__name__)

_RESTART_GAP_S = 1.0


@dataclass
class Supervised:
    """One child process kept running (restarted when it exits) until `stop()`."""

    name: str
    argv: list[str]
    health_url: str | None = None
    env: dict[str, str] | None = None
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False

    async def run(self) -> None:
        while not self._stopping:
            started = time.monotonic()
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                env=self.env,
                stdout=asyncio.subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C at the terminal reaches the stack only
                preexec_fn=die_with_parent,  # and a killed stack leaves no child behind
            )
            if self.health_url is not None and await _healthy(self.health_url, 60.0):
                self.ready.set()
            rc = await self.proc.wait()
            if self._stopping:
                return
            self.restarts += 1
            log.warning("%s exited with %s; restarting", self.name, rc)
            await asyncio.sleep(max(0.0, _RESTART_GAP_S - (time.monotonic() - started)))

    async def stop(self) -> None:
        self._stopping = True
        p = self.proc
        if p is None or p.returncode is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(p.wait(), 10)
        except TimeoutError:
            p.kill()
            await p.wait()


async def _healthy(url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as c:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await c.get(url)).status_code == 200:
                    return True
            await asyncio.sleep(0.1)
    return False


async def run_all(children: Sequence[Supervised]) -> None:
    """Run `children` until cancelled, then stop them all."""
    try:
        async with asyncio.TaskGroup() as tg:
            for c in children:
                tg.create_task(c.run())
    finally:
        await asyncio.gather(*(c.stop() for c in children), return_exceptions=True)


def _cli() -> list[str]:
    return [sys.executable, "-m", "mainevent.cli"]


# -- origins ---------------------------------------------------------------------------------


def replica_settings(settings: Settings, index: int, port: int, secret: str) -> dict[str, object]:
    """The settings replica `index` runs with: the stack's, with its own port and directory."""
    data = settings.model_dump(mode="json")
    data["origin"] |= {
        "port": port,
        "data_dir": str(Path(settings.origin.data_dir) / f"origin-{index}"),
        "ingest_secret": secret,
        "replicas": 1,
        "ingest_urls": [],
        # The packager's store uploads to the bucket already; replicas keep their own disk.
        "store": "local",
    }
    return data


@dataclass
class ReplicaOrigins:
    """`origin.replicas` origin processes on `ports`, serving the settings' event."""

    settings: Settings
    host: str
    ports: tuple[int, ...]
    secret: str
    children: list[Supervised] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [f"http://{self.host}:{p}" for p in self.ports]

    def build(self, cdns: Sequence[tuple[str, str]] = (), steering_url: str | None = None) -> None:
        """The children's command lines (pathways: the steered manifests name these CDNs)."""
        self.children = []
        for i, port in enumerate(self.ports):
            path = Path(self.settings.origin.data_dir) / f"origin-{i}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(replica_settings(self.settings, i, port, self.secret)))
            argv = [*_cli(), "origin", "serve", "--settings-json", str(path)]
            argv += ["--host", self.host, "--port", str(port), "--log-level", "warning"]
            if steering_url is not None:
                for name, url in cdns:
                    argv += ["--cdn", f"{name}={url}"]
                argv += ["--steering-url", steering_url]
            self.children.append(
                Supervised(f"origin-{i}", argv, health_url=f"http://{self.host}:{port}/healthz")
            )


# -- shields --------------------------------------------------------------------------------


def shield_processes(
    host: str,
    ports: Sequence[int],
    origins: Sequence[str],
    *,
    admin_secret: str | None,
    telemetry_url: str = "",
) -> list[Supervised]:
    """`len(ports)` shield processes, each failing over between `origins` in order."""
    out = []
    for i, port in enumerate(ports):
        argv = [*_cli(), "edge", "serve", "--name", "shield"]
        for url in origins:
            argv += ["--upstream", url]
        argv += ["--host", host, "--port", str(port), "--log-level", "warning"]
        if admin_secret:
            argv += ["--admin-secret", admin_secret]
        if telemetry_url:
            argv += ["--telemetry", telemetry_url]
        out.append(Supervised(f"shield-{i}", argv, health_url=f"http://{host}:{port}/healthz"))
    return out


# -- edges -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CdnPool:
    """One CDN's public address and the `host:port` of its edge processes."""

    name: str
    listen_host: str
    listen_port: int
    edges: tuple[str, ...]


def edge_lb_config(pools: Sequence[CdnPool], workdir: Path, user: str | None) -> str:
    """nginx.conf of the edge balancer: one `server` per CDN in front of its edges."""
    blocks = []
    for p in pools:
        upstream = p.name.replace("-", "_").replace(".", "_")
        servers = "\n".join(f"        server {e} max_fails=1 fail_timeout=2s;" for e in p.edges)
        blocks.append(
            f"""    upstream edges_{upstream} {{
        least_conn;
{servers}
        keepalive 64;
    }}

    server {{
        listen {p.listen_host}:{p.listen_port} backlog=4096 reuseport;
        server_tokens off;

        location / {{
            proxy_pass http://edges_{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_connect_timeout 1s;
            proxy_read_timeout 30s;
            # Media GETs are idempotent: one an edge failed (dead, reset, timed out, 502/504)
            # goes to the next; a 503 is the edge's own answer and passes through.
            proxy_next_upstream error timeout http_502 http_504;
            proxy_next_upstream_tries 2;
            proxy_buffering off;
        }}
    }}"""
        )
    body = "\n\n".join(blocks)
    return f"""# Generated by mainevent (commands/scaleout.py): nginx in front of each CDN's edges.
{preamble(workdir, user)}
http {{
    access_log off;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 65s;
{temp_paths(workdir)}

{body}
}}
"""


@dataclass
class EdgeFleet:
    """`edges_per_cdn` edge processes per CDN behind one nginx."""

    pools: list[CdnPool]
    workdir: Path
    children: list[Supervised] = field(default_factory=list)
    nginx: str = ""
    shields: list[Supervised] = field(default_factory=list)
    """Shield processes (`delivery.shields` ≥ 2); empty: the edges miss to the stack's shield."""

    @classmethod
    def plan(
        cls,
        names: Sequence[str],
        *,
        per_cdn: int,
        host: str,
        listen_ports: Sequence[int],
        edge_ports: Sequence[Sequence[int]],
        shield_urls: Sequence[str],
        regions: Mapping[str, tuple[str, ...]],
        workdir: Path,
        admin_secret: str | None,
        token_keys: dict[str, str] | None,
        telemetry_url: str = "",
        shields: Sequence[Supervised] = (),
    ) -> EdgeFleet:
        """Edge `i` of each CDN prefers shield `i mod len(shield_urls)`, then the others in turn:
        every shield carries load and a dead one is skipped within the request."""
        nginx = find_nginx()
        if nginx is None:
            raise RuntimeError(
                "delivery.edges_per_cdn > 1 needs nginx: install Debian's 'nginx' package"
            )
        pools, children = [], []
        for name, port, ports in zip(names, listen_ports, edge_ports, strict=True):
            assert len(ports) == per_cdn
            pools.append(CdnPool(name, host, port, tuple(f"{host}:{p}" for p in ports)))
            for i, p in enumerate(ports):
                argv = [*_cli(), "edge", "serve", "--name", name]
                k = i % len(shield_urls)
                for url in [*shield_urls[k:], *shield_urls[:k]]:
                    argv += ["--upstream", url]
                argv += ["--host", host, "--port", str(p), "--log-level", "warning"]
                # The fleet's nginx (on this host) writes the viewer's address into
                # X-Forwarded-For: the edge's access records place the viewer by it.
                argv += ["--forwarded-from", f"{host}/32"]
                for r in regions.get(name, ()):
                    argv += ["--region", r]
                if admin_secret:
                    argv += ["--admin-secret", admin_secret]
                for kid, key in (token_keys or {}).items():
                    argv += ["--token-key", f"{kid}:{key}"]
                if telemetry_url:
                    argv += ["--telemetry", telemetry_url]
                children.append(
                    Supervised(f"{name}-{i}", argv, health_url=f"http://{host}:{p}/healthz")
                )
        return cls(pools, workdir, children, nginx, list(shields))

    @property
    def shield_urls(self) -> list[str]:
        return [c.health_url.removesuffix("/healthz") for c in self.shields if c.health_url]

    @property
    def urls(self) -> dict[str, str]:
        return {p.name: f"http://{p.listen_host}:{p.listen_port}" for p in self.pools}

    def balancer(self) -> Supervised:
        make_dirs(self.workdir)
        conf = self.workdir / "nginx.conf"
        user = "root" if os.geteuid() == 0 else None
        conf.write_text(edge_lb_config(self.pools, self.workdir, user))
        argv = [self.nginx, "-p", str(self.workdir), "-c", str(conf), "-e", "stderr"]
        return Supervised("edge-lb", argv)
