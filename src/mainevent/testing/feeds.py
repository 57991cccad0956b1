"""Venue feeds as separate processes (`mainevent feed` with its drill API), for tests and benches."""

from __future__ import annotations

import subprocess
import sys

import httpx

from mainevent.commands.stack import free_port


class Feed:
    """One `mainevent feed` process (a venue encoder) pushing to `url`, with its drill API."""

    def __init__(self, url: str, *, size: str = "640x360", bitrate_kbps: int = 1500) -> None:
        self.url = url
        self.size = size
        self.bitrate_kbps = bitrate_kbps
        self.control = f"127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mainevent.cli",
                "feed",
                self.url,
                "--size",
                self.size,
                "--bitrate",
                str(self.bitrate_kbps),
                "--control",
                self.control,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        """Cut the feed as a dying venue encoder would (its ffmpegs die with it: PDEATHSIG)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def ctl(self, action: str, **body: object) -> None:
        """Drill: drop, restart, stall, corrupt, desync, clear (see `mainevent feed --control`)."""
        url = f"http://{self.control}/faults/{action}"
        httpx.post(url, json=body, timeout=5).raise_for_status()
