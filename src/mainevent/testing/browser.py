"""Headless Debian Chromium (driven by Playwright, never a downloaded browser) on the player page."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


class PlayerDidNotStart(AssertionError):
    """The page never reported `playing`; carries the browser console for diagnosis."""


@contextmanager
def player_page(url: str, profile_dir: Path, *, start_timeout_s: float = 30.0) -> Iterator[Page]:
    """Open the player page at `url` and yield it once `window.mainevent.stats().playing`."""
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(profile_dir), executable_path=str(CHROMIUM), headless=True, args=BROWSER_ARGS
        )
        try:
            page = ctx.new_page()
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.goto(url)
            try:
                page.wait_for_function(
                    "window.mainevent && window.mainevent.stats().playing",
                    timeout=start_timeout_s * 1000,
                )
            except Error as exc:
                page.screenshot(path=str(profile_dir.parent / "player-not-started.png"))
                raise PlayerDidNotStart(f"player never started: {console[-20:]}") from exc
            yield page
        finally:
            ctx.close()


def sample_stats(page: Page, seconds: float, every_s: float = 1.0) -> list[dict[str, Any]]:
    """`window.mainevent.stats()` now and then every `every_s` for `seconds`."""
    samples: list[dict[str, Any]] = [page.evaluate("window.mainevent.stats()")]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(every_s)
        samples.append(page.evaluate("window.mainevent.stats()"))
    return samples


def timeline(samples: list[dict[str, Any]]) -> str:
    """One line per sample (time, buffer ahead, latency, stalls, level) for failure messages."""
    rows = ["currentTime bufferSec latencySec stalls stallTimeSec state"]
    for s in samples:
        rows.append(
            f"{s.get('currentTime')} {s.get('bufferSec')} {s.get('latencySec')} "
            f"{s.get('stalls')} {s.get('stallTimeSec')} {s.get('state')}"
        )
    last = samples[-1] if samples else {}
    rows.append(f"errors: {last.get('errors')}")
    return "\n".join(rows)
