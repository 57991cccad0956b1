"""Shared fixtures: the anyio backend and a private redis-server."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from mainevent.testing.redis import RedisServer, redis_server_binary


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (the platform's loop)."""
    return "asyncio"


def _install_redis() -> None:
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "redis-server"],
            env=env,
            capture_output=True,
            timeout=600,
            check=False,
        )


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh private redis-server (Debian's binary) on a loopback port; `.restart()` keeps the URL."""
    if redis_server_binary() is None:
        _install_redis()
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
