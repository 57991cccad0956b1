"""The console's controls in Debian Chromium against a real control plane on loopback (no media
plane: commands are recorded, not streamed): confirmation, If-Match conflict between two
operators (shown, nothing applied), idempotent replay (never applied twice), a control sent to an
ended event, and a read-only user whose controls are disabled and refused by the server.

Fast (no ffmpeg): the full operator flow with media is tests/e2e/test_console.py.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from mainevent.control.app import create_app
from mainevent.control.db import open_database
from mainevent.control.server import build_services
from mainevent.testing.browser import BROWSER_ARGS, CHROMIUM
from tests.control.conftest import ADMIN, OPERATOR, READER, make_settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.browser]

EVENT = "semi"


def _artifacts() -> Path:
    default = Path(__file__).parents[2] / "test-artifacts"
    d = Path(os.environ.get("MAINEVENT_TEST_ARTIFACTS", default)) / "console-controls"
    shutil.rmtree(d, ignore_errors=True)  # this run's screenshots only
    d.mkdir(parents=True, exist_ok=True)
    return d


def _until(what: str, fn: Callable[[], Any], timeout_s: float = 20) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The control plane under uvicorn on a free loopback port, on SQLite."""
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (make setup installs it as root)")
    tmp = tmp_path_factory.mktemp("console-controls")
    db = open_database(f"sqlite:///{tmp}/c.db")
    services = build_services(make_settings(), db=db)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(services),
            host="127.0.0.1",
            port=0,
            loop="asyncio",
            lifespan="on",
            log_level="critical",
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _until("the control plane to listen", lambda: server.started, 30)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        db.dispose()


def test_confirm_conflict_replay_ended_and_read_only(control: str) -> None:
    from playwright.sync_api import Page, sync_playwright

    shots = _artifacts()
    admin = httpx.Client(base_url=control, timeout=10, headers={"Authorization": f"Bearer {ADMIN}"})

    def etag() -> str:
        return admin.get(f"/v1/events/{EVENT}").headers["ETag"]

    def status() -> str:
        return str(admin.get(f"/v1/events/{EVENT}").json()["status"])

    def audit() -> list[str]:
        entries = admin.get("/v1/audit", params={"target_id": EVENT}).json()["entries"]
        return [e["action"] for e in entries]

    def login(page: Page, key: str) -> None:
        page.goto(f"{control}/console/")
        page.fill("#login-key", key)
        page.click("#login-submit")
        page.wait_for_selector("#events-view:not([hidden])")

    def confirm(page: Page, selector: str) -> None:
        page.click(selector)
        page.wait_for_selector("#confirm[open]")
        page.click("#confirm-ok")

    def state_is(page: Page, want: str) -> None:
        _until(f"state {want}", lambda: page.text_content("#ev-state") == want)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=BROWSER_ARGS
        )
        try:
            op = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page_errors: list[str] = []
            op.on("pageerror", lambda e: page_errors.append(str(e)))
            login(op, OPERATOR)

            # -- create: a bad ladder is explained in the page and nothing is sent --
            op.click("#create summary")
            op.fill("#create-form [name=id]", EVENT)
            op.fill("#create-form [name=title]", "Semi-final")
            op.fill("#create-form [name=ladder]", "v360-640x360")
            op.click("#create-submit")
            op.wait_for_selector("#create-error:not([hidden])")
            assert "ID:WIDTHxHEIGHT:KBPS" in (op.text_content("#create-error") or "")
            assert admin.get(f"/v1/events/{EVENT}").status_code == 404
            op.fill("#create-form [name=ladder]", "v360:640x360:600")
            # cancelling the confirmation sends nothing
            op.click("#create-submit")
            op.wait_for_selector("#confirm[open]")
            op.click("#confirm-cancel")
            time.sleep(0.5)
            assert admin.get(f"/v1/events/{EVENT}").status_code == 404
            confirm(op, "#create-submit")
            op.wait_for_selector("#event-view:not([hidden])")
            state_is(op, "scheduled")
            assert admin.get(f"/v1/events/{EVENT}").json()["ladder"] == [
                {"id": "v360", "width": 640, "height": 360, "bitrate_kbps": 600}
            ]
            op.wait_for_selector("[data-chart=viewers]")
            assert len(op.query_selector_all("#charts .chart")) == 12

            # -- rehearse, go live (no media plane here: no preflight gate) --
            confirm(op, "[data-command=rehearse]")
            state_is(op, "rehearsal")
            confirm(op, "[data-command=go_live]")
            state_is(op, "live")
            op.screenshot(path=str(shots / "01-live.png"), full_page=True)

            # -- two operators: the other one changes the event while this one confirms --
            op.click("[data-command=pause]")
            op.wait_for_selector("#confirm[open]")
            r = admin.post(
                f"/v1/events/{EVENT}/commands",
                json={"command": "degrade", "features": ["dvr"]},
                headers={"Idempotency-Key": str(uuid.uuid4()), "If-Match": etag()},
            )
            assert r.status_code == 200, r.text
            op.click("#confirm-ok")
            op.wait_for_selector("#notice.conflict")
            assert "Nothing was applied" in (op.text_content("#notice") or "")
            assert status() == "live"
            assert "event.transition.paused" not in audit()
            op.screenshot(path=str(shots / "02-conflict.png"), full_page=True)
            # the console reloaded the event: the other operator's change is shown
            _until("DVR shown degraded", lambda: op.is_checked("[data-feature=dvr]"))
            # Recorded, not applied: no media plane runs this event.
            _until(
                "the degrade shown as pending",
                lambda: "pending: dvr" in (op.text_content("#degraded-state") or ""),
            )

            # -- confirmed again on the new version: applied once --
            confirm(op, "[data-command=pause]")
            state_is(op, "paused")
            assert audit().count("event.transition.paused") == 1

            # -- the same Idempotency-Key twice (a retried click): replayed, not applied again --
            replay = op.evaluate(
                """async (etag) => {
                    const s = await (await fetch('/console/api/session')).json();
                    const send = () => fetch('/v1/events/semi/commands', {method: 'POST',
                      headers: {'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf,
                                'Idempotency-Key': 'resume-once', 'If-Match': etag},
                      body: JSON.stringify({command: 'resume'})});
                    const a = await send(), b = await send();
                    return [a.status, b.status, b.headers.get('Idempotent-Replayed')];
                }""",
                etag(),
            )
            assert replay == [200, 200, "true"], replay
            assert audit().count("event.transition.live") == 2  # go live + one resume
            state_is(op, "live")

            # -- end; a control sent to the ended event is refused with the reason shown --
            confirm(op, "[data-command=end]")
            state_is(op, "ended")
            _until(
                "pause disabled once ended",
                lambda: op.get_attribute("[data-command=pause]", "data-enabled") == "0",
            )
            confirm(op, "[data-pipeline=backup]")
            op.wait_for_selector("#notice.failed")
            assert "event_ended" in (op.text_content("#notice") or "")
            op.screenshot(path=str(shots / "03-ended.png"), full_page=True)

            # -- every action is in the audit view, with who did it --
            _until(
                "the audit view to list the end",
                lambda: op.query_selector("#audit tbody tr[data-action='event.transition.ended']"),
            )
            shown = op.eval_on_selector_all(
                "#audit tbody tr", "rows => rows.map(r => r.dataset.action)"
            )
            for action in ("event.create", "event.command.degrade", "event.transition.paused"):
                assert action in shown, shown
            assert not page_errors, page_errors

            # -- read-only: controls disabled, and the server refuses a change --
            ro = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            login(ro, READER)
            ro.wait_for_selector("#create", state="hidden")
            ro.goto(f"{control}/console/#/events/{EVENT}")
            ro.wait_for_selector("#lifecycle button")
            disabled = ro.eval_on_selector_all(
                "#event-view button", "bs => bs.map(b => b.disabled)"
            )
            assert disabled, "no controls rendered"
            assert all(disabled), disabled
            refused = ro.evaluate(
                """async () => {
                    const s = await (await fetch('/console/api/session')).json();
                    const r = await fetch('/v1/events/semi/commands', {method: 'POST',
                      headers: {'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf,
                                'Idempotency-Key': 'ro-1'},
                      body: JSON.stringify({command: 'archive'})});
                    return [r.status, (await r.json()).error.reason];
                }"""
            )
            assert refused == [403, "insufficient_role"], refused
            ro.screenshot(path=str(shots / "04-read-only.png"), full_page=True)
        finally:
            browser.close()
            admin.close()
