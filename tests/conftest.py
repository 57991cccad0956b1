"""Shared fixtures: the anyio backend and a private redis-server."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from mainevent.testing.redis import RedisServer, redis_server_binary

# Property tests assert behaviour, never speed: on a shared 2-core machine one example can
# take seconds. No per-example deadline and no "input generation is slow" health check
# (a test's own @settings still sets its example counts).
settings.register_profile("mainevent", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("mainevent")


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (the platform's loop)."""
    return "asyncio"


def apt_install(package: str) -> None:
    """Install a Debian package when running as root with apt (a missing test dependency)."""
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", package],
            env=env,
            capture_output=True,
            timeout=600,
            check=False,
        )


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh private redis-server (Debian's binary) on a loopback port; `.restart()` keeps the URL."""
    if redis_server_binary() is None:
        apt_install("redis-server")
    if redis_server_binary() is None:
        pytest.skip(
            "redis-server (Debian package 'redis-server') is missing and could not be installed"
        )
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()
