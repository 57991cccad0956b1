"""Shared fixtures: the anyio backend and a real `mainevent up` stack in a subprocess."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (the platform's loop)."""
    return "asyncio"
