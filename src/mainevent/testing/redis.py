"""A private `redis-server` (Debian's binary) on a free loopback port in a temporary directory.

Tests and benchmarks use it as the shared store of several control-plane workers; `restart()`
keeps the port (so clients reconnect to the same URL) and, unless started with `persist=True`,
comes back empty, as a Redis without persistence does after a crash.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

REDIS_SERVER = "/usr/bin/redis-server"


class RedisUnavailable(RuntimeError):
    """redis-server is not installed or did not come up."""


def redis_server_binary() -> str | None:
    """Path of redis-server (Debian package `redis-server`), or None when it is missing."""
    found = shutil.which("redis-server")
    if found:
        return found
    return REDIS_SERVER if Path(REDIS_SERVER).exists() else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process; `url` stays the same across `restart()`."""

    def __init__(self, *, persist: bool = False, port: int | None = None) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RedisUnavailable(
                "redis-server is missing: install Debian's 'redis-server' package (make setup does)"
            )
        self.binary = binary
        self.persist = persist
        self.port = port or _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="mainevent-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The redis:// URL clients connect to."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _argv(self) -> list[str]:
        argv = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.root),
            "--daemonize",
            "no",
            "--logfile",
            str(self.root / "redis.log"),
            "--protected-mode",
            "no",
        ]
        if self.persist:
            argv += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        else:
            argv += ["--appendonly", "no", "--save", ""]
        return argv

    def start(self, timeout: float = 30.0) -> None:
        """Start redis-server and wait until it answers PING."""
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen(
            self._argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RedisUnavailable(f"redis-server exited: {self.log_tail()}")
            if _ping(self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise RedisUnavailable(f"redis-server did not answer within {timeout:.0f}s")

    def stop(self, *, kill: bool = False, timeout: float = 15.0) -> None:
        """Stop the server (SIGTERM, or SIGKILL with `kill=True`) and wait for it to exit."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.proc = None

    def restart(self, *, kill: bool = False) -> None:
        """Stop and start again on the same port (empty unless `persist`)."""
        self.stop(kill=kill)
        self.start()

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop(kill=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        """The end of redis-server's log (for failure messages)."""
        try:
            return "\n".join((self.root / "redis.log").read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@contextmanager
def redis_server(*, persist: bool = False) -> Iterator[RedisServer]:
    """A started private redis-server, closed on exit."""
    server = RedisServer(persist=persist)
    try:
        server.start()
        yield server
    finally:
        server.close()
