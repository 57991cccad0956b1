"""Run the real platform (`mainevent up`) as a subprocess for end-to-end tests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

# A light ladder so two cores can run feed + transcoder + tests + browser together.
TEST_LADDER = "v360:640x360:600,v180:320x180:200"


def descendants(pid: int) -> set[int]:
    """PIDs of every live descendant of `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class RunningStack:
    proc: subprocess.Popen[str]
    base_url: str
    event: str
    data_dir: Path
    ingest_url: str
    ready_event: threading.Event
    reader: threading.Thread | None = None
    log: deque[str] = field(default_factory=lambda: deque(maxlen=4000))
    edges: dict[str, str] = field(default_factory=dict)
    """Edge name (`cdn-a`, …) → base URL; empty when started with `--no-edges`."""
    shield_url: str | None = None
    edge_admin_secret: str | None = None
    backup_ingest_url: str | None = None
    """Where the backup feed goes (None when the stack runs a single pipeline)."""
    admin_secret: str | None = None
    control_url: str | None = None
    """The control plane (playback API, steering server) started beside the media plane."""
    control_admin_key: str | None = None
    console_logins: dict[str, str] = field(default_factory=dict)
    """Role → API key generated for the console (`admin`, `operator`, `read-only`)."""
    telemetry_url: str | None = None
    """The telemetry collector's base URL (None when telemetry is disabled)."""
    info: dict[str, Any] = field(default_factory=dict)
    """Every field of the platform's JSON status lines so far (`listening`, `ready`)."""

    def edge_master_url(self, name: str = "cdn-a") -> str:
        """The multivariant playlist as served by edge `name`."""
        return f"{self.edges[name]}/live/{self.event}/master.m3u8"

    def wait_ready(self, timeout: float) -> None:
        """Wait until every rendition has published (the `ready` line, which names the event)."""
        if not self.ready_event.wait(timeout):
            raise AssertionError("stack not ready:\n" + "\n".join(self.log))
        self.event = self.info.get("event", self.event)

    def wait_window(self, segments: int = 4, timeout: float = 30.0) -> None:
        """Wait until every media playlist lists ≥ `segments` segments.

        A viewer joining an event that has been live for a while sees a full window; a player
        opened the moment the first segment lands starts with almost nothing buffered ahead,
        which is not the case the playback tests are about.
        """
        master = httpx.get(self.master_url, timeout=5).raise_for_status().text
        uris = [ln for ln in master.splitlines() if ln and not ln.startswith("#")]
        uris += re.findall(r'#EXT-X-MEDIA:.*URI="([^"]+)"', master)
        base = self.master_url.rsplit("/", 1)[0]
        deadline = time.monotonic() + timeout
        counts: dict[str, int] = {}
        while time.monotonic() < deadline:
            for uri in uris:
                text = httpx.get(f"{base}/{uri}", timeout=5).text
                counts[uri] = text.count("#EXTINF")
            if min(counts.values()) >= segments:
                return
            time.sleep(0.25)
        raise AssertionError(f"window never reached {segments} segments: {counts}")

    @property
    def master_url(self) -> str:
        return f"{self.base_url}/live/{self.event}/master.m3u8"

    def health(self) -> dict[str, object]:
        r = httpx.get(f"{self.base_url}/healthz", timeout=5)
        r.raise_for_status()
        result: dict[str, object] = r.json()
        return result

    def pipeline_status(self) -> dict[str, object]:
        pipelines = self.health()["pipelines"]
        assert isinstance(pipelines, list)
        status: dict[str, object] = pipelines[0]
        return status

    def pipeline_by_name(self, name: str) -> dict[str, Any]:
        """That pipeline's entry of `/healthz` (feed, transcoder, verdict)."""
        pipelines = self.health()["pipelines"]
        assert isinstance(pipelines, list)
        for p in pipelines:
            if p["pipeline"] == name:
                return dict(p)
        raise AssertionError(f"no pipeline {name!r} in /healthz")

    def redundancy(self) -> dict[str, Any]:
        r = httpx.get(f"{self.base_url}/_ops/redundancy", timeout=5)
        r.raise_for_status()
        result: dict[str, Any] = r.json()
        return result

    def transcoder_pid(self) -> int | None:
        t = self.pipeline_status().get("transcoder")
        return int(t["pid"]) if isinstance(t, dict) else None

    def stop(self) -> set[int]:
        """SIGINT like Ctrl-C; returns descendants still alive afterwards (should be none).

        Raises AssertionError when the platform did not shut down cleanly (exit code ≠ 0, or
        still running after 20 s): a hung shutdown is a bug, not something to kill quietly.
        """
        kids = descendants(self.proc.pid)
        hung = False
        interrupted = self.proc.poll() is None
        if interrupted:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                hung = True
                self.proc.kill()
                self.proc.wait()
        if self.reader is not None:
            self.reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(alive(p) for p in kids):
            time.sleep(0.1)
        if hung or (interrupted and self.proc.returncode != 0):
            tail = "\n".join(list(self.log)[-30:])
            raise AssertionError(
                f"unclean shutdown (exit {self.proc.returncode}, hung={hung}):\n{tail}"
            )
        return {p for p in kids if alive(p)}


def start_stack(
    data_dir: Path,
    *,
    ladder: str = TEST_LADDER,
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    wait_ready: bool = True,
    port: int = 0,
    steering: bool = False,
    defaults: bool = False,
    log_path: Path | None = None,
) -> RunningStack:
    """Start `mainevent up` and wait until its first segments are published.

    The origin listens on `port` (0 = any free port; a fixed one lets a test restart the
    origin where the shield expects it); the other ports are always free ones. `steering`
    also runs the control plane with its steering server and edge probes (off by default: the
    probes are extra requests that tests counting fetches would see). `defaults`: run on the platform's own settings like `make demo` (its ladder, preset, feed size and
    backup pipeline) instead of the light test settings; `ladder` is then ignored. `log_path`:
    also write every line of the platform's output there (long runs outgrow the in-memory tail).
    """
    environ = dict(os.environ)
    light = {
        "MAINEVENT_FEED__WIDTH": "640",
        "MAINEVENT_FEED__HEIGHT": "360",
        "MAINEVENT_FEED__BITRATE_KBPS": "1500",
        # One pipeline unless a test asks for the backup (redundancy tests do): the other
        # e2e tests are about one pipeline and run on 2 shared cores.
        "MAINEVENT_REDUNDANCY__BACKUP": "false",
        # The live window only: the e2e tests of the live path watch segments leave the
        # head of a short window; DVR tests ask for their (short) window.
        "MAINEVENT_DVR__WINDOW_S": "0",
    }
    if not defaults:
        environ.update(light)
    environ.update(env or {})
    cmd = [
        sys.executable,
        "-m",
        "mainevent.cli",
        "up",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        *(() if defaults else ("--ladder", ladder, "--preset", "ultrafast")),
        *(() if steering else ("--no-steering",)),
        *extra_args,
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environ
    )
    log: deque[str] = deque(maxlen=4000)
    info: dict[str, Any] = {}
    listening = threading.Event()
    ready = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        sink = None if log_path is None else log_path.open("a", buffering=1)
        try:
            for line in proc.stdout:
                log.append(line.rstrip())
                if sink is not None:
                    sink.write(line)
                _note(line)
        finally:
            if sink is not None:
                sink.close()
        listening.set()

    def _note(line: str) -> None:
        if line.startswith("{"):
            msg = json.loads(line)
            info.update(msg)
            if msg.get("listening"):
                listening.set()
            if msg.get("ready"):
                ready.set()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    # With the control plane, "listening" comes once the supervisor started the demo's media.
    if not listening.wait(30 if not steering else 90) or "base_url" not in info:
        proc.kill()
        proc.wait()
        raise RuntimeError("mainevent up did not start:\n" + "\n".join(log))
    stack = RunningStack(
        proc=proc,
        base_url=info["base_url"],
        event=info.get("event", "demo"),
        data_dir=data_dir,
        ingest_url=info["ingest_url"],
        ready_event=ready,
        log=log,
        edges=dict(info.get("edges") or {}),
        shield_url=info.get("shield_url"),
        edge_admin_secret=info.get("edge_admin_secret"),
        backup_ingest_url=info.get("backup_ingest_url"),
        admin_secret=info.get("admin_secret"),
        control_url=info.get("control_url"),
        control_admin_key=info.get("control_admin_key"),
        telemetry_url=info.get("telemetry_url"),
        info=info,
    )
    if wait_ready:
        try:
            stack.wait_ready(timeout)
        except AssertionError:
            stack.stop()
            raise
        # The control plane is built while the media plane starts: named in the ready line.
        stack.control_url = info.get("control_url")
        stack.control_admin_key = info.get("control_admin_key")
        stack.console_logins = dict(info.get("console_logins") or {})
    return stack
