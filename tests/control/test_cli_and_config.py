"""`mainevent event ...` against a real `mainevent control serve` process, settings and plane boundaries."""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import mainevent
from mainevent.cli import main
from mainevent.config import ConfigError
from mainevent.control.settings import load_control_settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """`mainevent control serve` on a free port with a fresh SQLite file; yields (url, admin key)."""
    tmp = tmp_path_factory.mktemp("control-serve")
    port = _free_port()
    env = dict(os.environ, MAINEVENT_CONTROL__DATA_DIR=str(tmp))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mainevent.cli",
            "control",
            "serve",
            "--port",
            str(port),
            "--database-url",
            f"sqlite:///{tmp}/control.db",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"control plane did not start: {err}")
            time.sleep(0.1)
        yield url, (tmp / "control-admin.key").read_text().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.slow
def test_event_cli_walks_an_event_through_its_life(
    server: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """An operator creates, edits, lists and transitions an event from the command line; mistakes are explained."""
    url, key = server
    base = ["event", "--server", url, "--api-key", key]
    spec = json.dumps({"policy": {"subscription_tiers": ["premium"]}, "cdns": ["cdn-a"]})
    assert (
        main(
            [
                *base,
                "create",
                "final",
                "--title",
                "Final",
                "--starts-at",
                "2030-01-01T20:00:00Z",
                "--ends-at",
                "2030-01-01T23:00:00Z",
                "--spec",
                spec,
            ]
        )
        == 0
    )
    created = json.loads(capsys.readouterr().out)
    assert created["status"] == "draft"
    assert created["etag"] == '"1"'
    assert main([*base, "update", "final", "--title", "Grand Final", "--if-match", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "Grand Final"
    assert main([*base, "update", "final", "--title", "Stale", "--if-match", "1"]) == 1
    assert "etag_mismatch" in capsys.readouterr().err
    assert main([*base, "transition", "final", "live"]) == 1
    err = capsys.readouterr().err
    assert "error 409: illegal_transition" in err
    assert "allowed from draft: scheduled" in err
    for step in ("scheduled", "rehearsal", "live"):
        assert main([*base, "transition", "final", step]) == 0
    capsys.readouterr()
    assert main([*base, "list", "--status", "live"]) == 0
    assert [e["id"] for e in json.loads(capsys.readouterr().out)["events"]] == ["final"]
    assert main([*base, "get", "final"]) == 0
    assert json.loads(capsys.readouterr().out)["cdns"] == ["cdn-a"]
    assert main(["event", "--server", url, "--api-key", "wrong", "get", "final"]) == 1
    assert "invalid_credentials" in capsys.readouterr().err


def test_cli_reports_an_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a running control plane the CLI says so instead of printing a traceback."""
    assert (
        main(["event", "--server", f"http://127.0.0.1:{_free_port()}", "--api-key", "k", "list"])
        == 3
    )
    assert "cannot reach the control plane" in capsys.readouterr().err


def test_dev_token_command_mints_a_viewer_jwt(capsys: pytest.CaptureFixture[str]) -> None:
    """`mainevent control dev-token` prints a JWT the playback API accepts (three dot-separated parts)."""
    assert main(["control", "dev-token", "acc-1"]) == 0
    assert capsys.readouterr().out.strip().count(".") == 2


def test_settings_from_environment_and_file(tmp_path: Path) -> None:
    """Operators configure the control plane by `[control]` in TOML and MAINEVENT_CONTROL__* (JSON for lists)."""
    f = tmp_path / "mainevent.toml"
    f.write_text('[control]\nport = 9000\ndatabase_url = "postgresql+psycopg://u@db/control"\n')
    env = {
        "MAINEVENT_CONTROL__PORT": "9100",
        "MAINEVENT_CONTROL__TOKEN_KEYS": json.dumps(
            [{"kid": "k2", "secret_hex": "ab" * 32}, {"kid": "k1", "secret_hex": "cd" * 32}]
        ),
        "MAINEVENT_CONTROL__RETIRED_KIDS": '["k0"]',
        "MAINEVENT_ORIGIN__PORT": "1",  # other sections are not ours
    }
    s = load_control_settings(file=f, environ=env)
    assert s.port == 9100
    assert s.database_url.startswith("postgresql")
    assert [k.kid for k in s.token_keys] == ["k2", "k1"]
    assert s.retired_kids == ("k0",)
    with pytest.raises(ConfigError, match=r"control\.port"):
        load_control_settings(environ={"MAINEVENT_CONTROL__PORT": "99999"})


def test_shared_code_never_imports_the_control_plane() -> None:
    """`mainevent.common` stays importable by the media plane: it never imports `mainevent.control`."""
    root = Path(mainevent.__file__).parent / "common"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("mainevent.control"), path
            if isinstance(node, ast.Import):
                assert all(not a.name.startswith("mainevent.control") for a in node.names), path


def test_empty_dev_idp_secret_disables_the_development_issuer() -> None:
    """Setting the development issuer's secret to empty turns it off instead of accepting unsigned-looking tokens."""
    s = load_control_settings(environ={"MAINEVENT_CONTROL__DEV_IDP_SECRET": ""})
    assert s.dev_idp_secret is None
    with pytest.raises(ConfigError, match="dev_idp_secret"):
        load_control_settings(environ={"MAINEVENT_CONTROL__DEV_IDP_SECRET": "short"})


def test_docs_settings_reference_matches_the_code() -> None:
    """docs/control-plane.md lists exactly the control-plane settings the code defines."""
    from mainevent.control.settings import control_settings_reference

    doc = (Path(__file__).parents[2] / "docs" / "control-plane.md").read_text()
    start = doc.index("<!-- control-settings:start -->") + len("<!-- control-settings:start -->")
    end = doc.index("<!-- control-settings:end -->")
    assert doc[start:end].strip() == control_settings_reference().strip(), "regenerate the table"


@pytest.mark.slow
def test_steering_cli_drains_and_restores_a_cdn(
    server: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`mainevent steering drain/restore/status` drive the audited overrides; mistakes are explained."""
    url, key = server
    base = ["steering", "--server", url, "--api-key", key]
    assert main([*base, "drain", "cdn-a", "--region", "eu", "--rate", "0.3"]) == 0
    assert json.loads(capsys.readouterr().out)["override"]["rate"] == 0.3
    assert main([*base, "status"]) == 0
    assert json.loads(capsys.readouterr().out)["overrides"][0]["cdn"] == "cdn-a"
    assert main([*base, "drain", "cdn-x", "--region", "eu"]) == 1
    assert "error 404: cdn_not_found" in capsys.readouterr().err
    assert main([*base, "restore", "cdn-a", "--region", "eu"]) == 0
    capsys.readouterr()
    assert main([*base, "restore", "cdn-a", "--region", "eu"]) == 1
    assert "override_not_found" in capsys.readouterr().err


@pytest.mark.slow
def test_highlights_cli_marks_lists_and_removes(
    server: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """An operator marks a range and a point from the command line; a reversed range is explained."""
    url, key = server
    base = ["event", "--server", url, "--api-key", key]
    args = ["create", "cli-hl", "--title", "HL", "--starts-at", "2030-02-01T20:00:00Z"]
    assert main([*base, *args, "--ends-at", "2030-02-01T23:00:00Z"]) == 0
    capsys.readouterr()
    hl = [*base, "highlights"]
    add = ["add", "cli-hl", "--title", "KO", "--start", "2030-02-01T21:00:00Z"]
    assert main([*hl, *add, "--end", "2030-02-01T21:00:30Z"]) == 0
    ko = json.loads(capsys.readouterr().out)
    assert ko["clip_mp4"] == f"/live/cli-hl/clips/{ko['id']}/clip.mp4"
    assert main([*hl, "add", "cli-hl", "--title", "Bell", "--start", "2030-02-01T20:00:05Z"]) == 0
    capsys.readouterr()
    assert main([*hl, *add, "--end", "2030-02-01T20:59:00Z"]) == 1
    assert "error 422: invalid_request" in capsys.readouterr().err
    assert main([*hl, "list", "cli-hl"]) == 0
    listed = json.loads(capsys.readouterr().out)["highlights"]
    assert [h["title"] for h in listed] == ["Bell", "KO"]
    assert main([*hl, "delete", "cli-hl", ko["id"]]) == 0
    capsys.readouterr()
    assert main([*hl, "delete", "cli-hl", ko["id"]]) == 1
    assert "highlight_not_found" in capsys.readouterr().err
    assert main([*hl, "sync", "cli-hl"]) == 0
    assert json.loads(capsys.readouterr().out)["media_sync"] == "off"
