"""Run `mainevent control serve --workers N` (N workers behind nginx) as a subprocess for tests.

The fleet writes ``<data_dir>/control-lb/fleet.json`` (its URL, each worker's port, pid and
restart count); this helper waits on it and on every worker's ``/healthz``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from mainevent.control.auth import hash_api_key

__all__ = ["ControlFleet"]

ADMIN_KEY = "fleet-admin-key-0123456789"


class ControlFleet:
    """A running fleet; ``url`` is nginx, ``worker_urls`` the workers behind it."""

    def __init__(
        self,
        *,
        workers: int,
        redis_url: str,
        data_dir: Path,
        database_url: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.admin_key = ADMIN_KEY
        self.state_path = data_dir / "control-lb" / "fleet.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAINEVENT_")}
        env |= {
            "MAINEVENT_CONTROL__REDIS_URL": redis_url,
            "MAINEVENT_CONTROL__DATA_DIR": str(data_dir),
            "MAINEVENT_CONTROL__DATABASE_URL": database_url or f"sqlite:///{data_dir}/control.db",
            "MAINEVENT_CONTROL__API_KEYS": json.dumps(
                [{"name": "fleet-admin", "role": "admin", "key_sha256": hash_api_key(ADMIN_KEY)}]
            ),
        }
        for name, value in (settings or {}).items():
            env[f"MAINEVENT_CONTROL__{name.upper()}"] = (
                value if isinstance(value, str) else json.dumps(value)
            )
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / "fleet.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mainevent.cli",
                "control",
                "serve",
                "--port",
                "0",
                "--workers",
                str(workers),
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.url = ""
        self.worker_urls: list[str] = []

    def state(self) -> dict[str, Any]:
        """The fleet's own account of itself (fleet.json)."""
        data: dict[str, Any] = json.loads(self.state_path.read_text())
        return data

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until nginx and every worker answer /healthz (raises with the log tail if not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fleet exited: {self.log_tail()}")
            try:
                st = self.state()
                urls = [st["url"], *(f"http://127.0.0.1:{w['port']}" for w in st["workers"])]
                if all(w["pid"] for w in st["workers"]) and all(
                    httpx.get(u + "/healthz", timeout=2).status_code == 200 for u in urls
                ):
                    self.url, self.worker_urls = urls[0], urls[1:]
                    return
            except (OSError, ValueError, KeyError, httpx.HTTPError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"fleet not ready in {timeout:.0f}s: {self.log_tail()}")

    def live_event(self, event_id: str, policy: Mapping[str, Any]) -> None:
        """Create event ``event_id`` (started a minute ago, an hour long) and walk it to live."""
        op = {"Authorization": f"Bearer {self.admin_key}"}
        now = time.time()
        body = {
            "id": event_id,
            "title": event_id.title(),
            "starts_at": datetime.fromtimestamp(now - 60, UTC).isoformat(),
            "ends_at": datetime.fromtimestamp(now + 3600, UTC).isoformat(),
            "policy": dict(policy),
        }
        with httpx.Client(base_url=self.url, timeout=30) as c:
            r = c.post("/v1/events", json=body, headers=op | {"Idempotency-Key": event_id})
            if r.status_code != 201:
                raise RuntimeError(f"creating {event_id}: {r.status_code} {r.text[:200]}")
            for step in ("scheduled", "rehearsal", "live"):
                r = c.post(
                    f"/v1/events/{event_id}/transitions",
                    json={"to": step},
                    headers=op | {"Idempotency-Key": f"{event_id}-{step}"},
                )
                if r.status_code != 200:
                    raise RuntimeError(f"{event_id} → {step}: {r.status_code} {r.text[:200]}")

    def kill_worker(self, index: int) -> int:
        """SIGKILL worker ``index``; returns its pid."""
        pid = int(self.state()["workers"][index]["pid"])
        os.kill(pid, signal.SIGKILL)
        return pid

    def log_tail(self, lines: int = 30) -> str:
        """The end of the fleet's output."""
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> None:
        """Stop the fleet (SIGTERM to the launcher, which stops workers and nginx)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
