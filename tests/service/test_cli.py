"""The `mainevent` command line: clear errors for bad input, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mainevent.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=None if env is None else os.environ | env,
    )


def test_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    """`mainevent up` on a port already in use says so and exits 1, leaving nothing running."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = run(
            "up", "--no-feed", "--port", str(port), "--data-dir", str(tmp_path / "d"), cwd=tmp_path
        )
    assert p.returncode == 1
    assert f"origin cannot listen on 127.0.0.1:{port}" in p.stderr
    assert "Traceback" not in p.stderr


def test_edge_variables_are_not_taken_for_settings(tmp_path: Path) -> None:
    """`MAINEVENT_EDGE_TOKEN_KEYS` and `MAINEVENT_EDGE_ADMIN_SECRET` (the edges' own, README)
    are no settings: `mainevent up` gets as far as listening (here: a busy port)."""
    env = {
        "MAINEVENT_EDGE_TOKEN_KEYS": "k1:00112233445566778899aabbccddeeff",
        "MAINEVENT_EDGE_ADMIN_SECRET": "s3cret",
    }
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = run("up", "--no-feed", "--port", str(port), cwd=tmp_path, env=env)
    assert (p.returncode, "invalid configuration" in p.stderr) == (1, False), p.stderr
    assert f"origin cannot listen on 127.0.0.1:{port}" in p.stderr


def test_bad_settings_are_named(tmp_path: Path) -> None:
    """Invalid options and environment stop `mainevent up` with the setting named (exit 2)."""
    p = run("up", "--segment-duration", "1.999", "--no-feed", cwd=tmp_path)
    assert p.returncode == 2
    assert "segment_duration_ms" in p.stderr
    p = run("up", "--ladder", "v1:640:500", cwd=tmp_path)
    assert p.returncode == 2
    assert "is not ID:WIDTHxHEIGHT:KBPS" in p.stderr
    assert "Traceback" not in p.stderr


def test_feed_rejects_bad_urls(tmp_path: Path) -> None:
    """`mainevent feed` refuses a URL that is neither SRT nor RTMP, and a bad size."""
    p = run("feed", "http://example/x", cwd=tmp_path)
    assert p.returncode == 2
    assert "srt:// or rtmp://" in p.stderr
    p = run("feed", "srt://127.0.0.1:1", "--size", "big", cwd=tmp_path)
    assert p.returncode == 2
    assert "--size" in p.stderr


def test_pipeline_commands_explain_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mainevent pipeline force` without the admin secret, or with no origin there, says so."""
    monkeypatch.delenv("MAINEVENT_ADMIN_SECRET", raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: refused
        p = run("pipeline", "force", "backup", "--url", dead, cwd=tmp_path)
        assert p.returncode == 2
        assert "--secret (or MAINEVENT_ADMIN_SECRET) is required" in p.stderr
        p = run("pipeline", "status", "--url", dead, cwd=tmp_path)
        assert p.returncode == 1
        assert f"cannot reach {dead}" in p.stderr
        assert "Traceback" not in p.stderr
