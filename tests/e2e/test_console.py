"""The operations console end to end, in Debian Chromium: an operator signs in, creates an event,
rehearses it, passes preflight, goes live; a viewer authorised through
`POST /v1/events/{id}/playback` plays the tokenised URL in hls.js; the charts move; the operator
forces the backup (the viewer keeps playing, the console shows it), pauses (the viewer's playlist
lists the slate), resumes and ends (the viewer's playlist reaches ENDLIST). Two operators: an ETag
conflict is shown and nothing is applied twice. A read-only user sees every control disabled and
the server refuses them (403).

Screenshots of every step are kept under `test-artifacts/console/` (ignored by git; set
MAINEVENT_TEST_ARTIFACTS to put them elsewhere).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

import httpx
import pytest

from mainevent.testing.browser import BROWSER_ARGS, CHROMIUM
from mainevent.testing.stack import RunningStack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.browser]

EVENT = "final"
LADDER = "v360:640x360:600"


def _artifacts() -> Path:
    default = Path(__file__).parents[2] / "test-artifacts"
    d = Path(os.environ.get("MAINEVENT_TEST_ARTIFACTS", default)) / "console"
    shutil.rmtree(d, ignore_errors=True)  # this run's screenshots only
    d.mkdir(parents=True, exist_ok=True)
    return d


def _until(what: str, fn: Callable[[], Any], timeout_s: float, every_s: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (make setup installs it as root)")
    s = start_stack(
        tmp_path_factory.mktemp("console"),
        steering=True,
        env={"MAINEVENT_REDUNDANCY__BACKUP": "true"},
        timeout=120,
    )
    yield s
    leftovers = s.stop()
    assert not leftovers, f"processes left behind after Ctrl-C: {leftovers}"


class Api:
    """The operator API with an admin key (a second operator, and the test's own checks)."""

    def __init__(self, stack: RunningStack) -> None:
        assert stack.control_url
        self.base = stack.control_url
        self.key = stack.console_logins["admin"]
        self.http = httpx.Client(base_url=self.base, timeout=10)

    def get(self, path: str) -> httpx.Response:
        return self.http.get(path, headers={"Authorization": f"Bearer {self.key}"})

    def send(
        self, method: str, path: str, body: Any = None, *, if_match: str | None = None
    ) -> httpx.Response:
        h = {"Authorization": f"Bearer {self.key}", "Idempotency-Key": str(uuid.uuid4())}
        if if_match:
            h["If-Match"] = if_match
        return self.http.request(method, path, json=body, headers=h)

    def media(self) -> dict[str, Any]:
        """The media state; empty until the supervisor has started the event's media."""
        r = self.get(f"/v1/events/{EVENT}/media")
        if r.status_code == 404 and r.json()["error"]["reason"] == "no_media":
            return {"pipelines": []}
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


def _media_playlist(http: httpx.Client, master_url: str) -> str:
    """The first media playlist named by the (tokenised) multivariant playlist."""
    master = http.get(master_url)
    assert master.status_code == 200, master.text
    uri = next(line for line in master.text.splitlines() if line and not line.startswith("#"))
    r = http.get(urljoin(master_url, uri))
    assert r.status_code == 200, r.text
    return r.text


def _slate_segments(http: httpx.Client, origin: str) -> float:
    """Slate segments the origin listed for the event so far (every rendition)."""
    text = http.get(f"{origin}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("mainevent_slate_segments_total{") and f'event="{EVENT}"' in line
    )


def test_operator_runs_an_event_from_the_console_and_a_viewer_watches_it(
    stack: RunningStack,
) -> None:
    from playwright.sync_api import Page, sync_playwright

    shots = _artifacts()
    api = Api(stack)
    logins = stack.console_logins
    assert {"operator", "read-only"} <= set(logins), logins
    console_url = f"{stack.control_url}/console/"
    # Two cores: the demo event `mainevent up` runs is ended first, so its feeds and
    # transcoders leave the CPU to the event under test.
    r = api.send("POST", f"/v1/events/{stack.event}/commands", {"command": "end"})
    assert r.status_code == 200, r.text
    http = httpx.Client(timeout=10)

    def shot(page: Page, name: str) -> None:
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

    def confirm(page: Page, selector: str) -> None:
        page.click(selector)
        page.wait_for_selector("#confirm[open]")
        page.click("#confirm-ok")

    def state_is(page: Page, status: str, timeout_s: float = 30) -> None:
        try:
            _until(
                f"event state {status}",
                lambda: page.text_content("#ev-state") == status,
                timeout_s,
            )
        except AssertionError as exc:
            shot(page, f"failed-waiting-for-{status}")
            notice = page.text_content("#notice")
            raise AssertionError(f"{exc}; console notice: {notice!r}") from None

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=BROWSER_ARGS
        )
        try:
            op = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            errors: list[str] = []
            op.on("pageerror", lambda e: errors.append(str(e)))

            # -- sign in: a wrong key is a clear error, the operator key opens the console --
            op.goto(console_url)
            op.fill("#login-key", "not-a-key")
            op.click("#login-submit")
            op.wait_for_selector("#login-error:not([hidden])")
            assert "not valid" in (op.text_content("#login-error") or "")
            op.fill("#login-key", logins["operator"])
            op.click("#login-submit")
            op.wait_for_selector("#events-view:not([hidden])")
            assert "(operator)" in (op.text_content("#whoami") or "")
            shot(op, "01-events")

            # -- create the event through the console form: it starts in 45 min, inside the
            # waiting-room window (1 h) and before the automatic rehearsal (30 min ahead) --
            op.click("#create summary")
            op.fill("#create-form [name=id]", EVENT)
            op.fill("#create-form [name=title]", "The final")
            op.fill("#create-form [name=starts_in]", "45")
            op.fill("#create-form [name=ladder]", LADDER)
            confirm(op, "#create-submit")
            op.wait_for_selector("#event-view:not([hidden])")
            state_is(op, "scheduled")
            # Free to watch for a premium account (set by the test, not the console's job).
            etag = api.get(f"/v1/events/{EVENT}").headers["ETag"]
            r = api.send(
                "PATCH",
                f"/v1/events/{EVENT}",
                {"policy": {"subscription_tiers": ["premium"]}},
                if_match=etag,
            )
            assert r.status_code == 200, r.text
            version = str(r.json()["version"])
            _until(
                "the console to show the new version",
                lambda: op.text_content("#ev-version") == version,
                10,
            )
            shot(op, "02-scheduled")

            # -- rehearsal: pipelines start on the event's ingest; the venue connects --
            confirm(op, "[data-command=rehearse]")
            state_is(op, "rehearsal")
            # The stack's feed simulator plays the venue on the event's own ingest ports.
            _until(
                "both feeds healthy",
                lambda: (
                    len(api.media()["pipelines"]) == 2
                    and all(p["healthy"] for p in api.media()["pipelines"])
                ),
                90,
                1.0,
            )
            op.wait_for_selector("#pipelines tbody tr[data-pipeline=backup]")
            shot(op, "03-rehearsal")

            # -- preflight passes (retried while manifests and CDNs warm up), go live --
            preflights: list[str] = []

            def preflight_passed() -> bool:
                clicked = op.evaluate("Date.now()")
                confirm(op, "[data-command=preflight]")
                op.wait_for_function(
                    "(t) => { const a = window.meConsole.state().lastAction; return a && a.at > t; }",
                    arg=clicked,
                    timeout=60_000,
                )
                text = op.text_content("#notice") or ""
                preflights.append(text)
                if text.startswith("Preflight passed"):
                    return True
                shot(op, f"04-preflight-try-{len(preflights)}")
                time.sleep(2)
                return False

            try:
                _until("preflight to pass", preflight_passed, 150, 0.5)
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {preflights}") from None
            shot(op, "04-preflight")
            confirm(op, "[data-command=go_live]")
            state_is(op, "live")

            # -- a viewer authorised through the playback API plays the tokenised URL --
            r = api.send("PUT", "/v1/accounts/viewer-1", {"plan": "premium"})
            assert r.status_code in (200, 201), r.text
            jwt = http.post(f"{stack.control_url}/dev/idp/token", json={"sub": "viewer-1"}).json()[
                "access_token"
            ]

            def play() -> httpx.Response | None:
                r = http.post(
                    f"{stack.control_url}/v1/events/{EVENT}/playback",
                    json={"device": {"id": "browser-1"}},
                    headers={"Authorization": f"Bearer {jwt}"},
                )
                if r.status_code == 503:  # shed under load: a player retries after Retry-After
                    time.sleep(float(r.headers.get("Retry-After", "1")))
                    return None
                return r

            grant = _until("a playback grant", play, 60, 0.1)
            assert grant.status_code == 200, grant.text
            g = grant.json()
            manifest = g["manifest_url"]
            assert f"/t/{g['token']}/live/{EVENT}/" in manifest, manifest
            viewer = browser.new_context().new_page()
            tele = stack.telemetry_url or ""
            viewer.goto(
                f"{stack.base_url}/player/?src={quote(manifest, safe='')}"
                + (f"&telemetry={quote(tele, safe='')}&ti=0.5" if tele else "")
            )
            viewer.wait_for_function(
                "window.mainevent && window.mainevent.stats().playing", timeout=60_000
            )

            def viewer_time() -> float:
                return float(viewer.evaluate("window.mainevent.stats().currentTime"))

            # -- the charts move: viewers counted, every chart redrawn each second --
            charts = ("viewers", "ingest", "hit", "auth", "ttfb-cdn")
            before = op.evaluate("window.meConsole.charts()")

            def counted_and_redrawn() -> bool:
                now = op.evaluate("window.meConsole.charts()")
                return (now["viewers"]["last"] or [0])[0] >= 1 and all(
                    now[name]["updates"] > before[name]["updates"] for name in charts
                )

            _until(
                "the viewers chart to count the viewer, every chart redrawn",
                counted_and_redrawn,
                30,
                0.5,
            )
            after = op.evaluate("window.meConsole.charts()")
            for name in charts:
                assert after[name]["updates"] > before[name]["updates"], name
            assert after["ingest"]["labels"] == ["primary", "backup"]
            assert int(op.text_content("#ev-audience") or 0) >= 1
            shot(op, "05-live-charts")
            shot(viewer, "05-viewer-playing")

            # -- two operators: the second changes the event while the first confirms --
            op.click("[data-command=pause]")
            op.wait_for_selector("#confirm[open]")
            seen = api.get(f"/v1/events/{EVENT}").headers["ETag"]
            r = api.send(
                "POST",
                f"/v1/events/{EVENT}/commands",
                {"command": "degrade", "features": []},
                if_match=seen,
            )
            assert r.status_code == 200, r.text
            op.click("#confirm-ok")
            op.wait_for_selector("#notice.conflict")
            assert "Nothing was applied" in (op.text_content("#notice") or "")
            assert api.get(f"/v1/events/{EVENT}").json()["status"] == "live"
            shot(op, "06-etag-conflict")

            # -- force the backup: the viewer keeps playing, the console shows it --
            t0 = viewer_time()
            confirm(op, "[data-pipeline=backup]")
            _until(
                "the console to show the backup published",
                lambda: op.get_attribute("#published", "data-published") == "backup",
                30,
            )
            assert api.media()["published_pipeline"] == "backup"
            _until("the viewer to keep playing", lambda: viewer_time() > t0 + 4, 30, 0.5)
            stats = viewer.evaluate("window.mainevent.stats()")
            assert not stats["fatal"], stats
            shot(op, "07-backup")

            # -- pause: the slate for every viewer --
            paused_at = time.time()
            confirm(op, "[data-command=pause]")
            state_is(op, "paused")
            # Every segment listed from now is the slate: a discontinuity in the viewer's
            # playlist and the origin's slate counter for this event moving.
            slate_before = _slate_segments(http, stack.base_url)
            _until(
                "the slate listed in the viewer's playlist",
                lambda: (
                    _slate_segments(http, stack.base_url) >= slate_before + 2
                    and "#EXT-X-DISCONTINUITY" in _media_playlist(http, manifest)
                ),
                30,
                1.0,
            )

            # The viewer reaches the slate once its playhead passes the pause (it plays a few
            # segments behind the live edge).
            def playhead() -> float:
                pdt = viewer.evaluate("window.mainevent.stats().playheadDate")
                return datetime.fromisoformat(pdt).timestamp() if pdt else 0.0

            _until(
                "the viewer's playhead in the slate", lambda: playhead() > paused_at + 4, 60, 0.5
            )
            shot(op, "08-paused")
            shot(viewer, "08-viewer-slate")

            # -- resume, then end: the viewer's playlist reaches ENDLIST --
            confirm(op, "[data-command=resume]")
            state_is(op, "live")
            confirm(op, "[data-command=end]")
            state_is(op, "ended")
            _until(
                "ENDLIST in the viewer's playlist",
                lambda: "#EXT-X-ENDLIST" in _media_playlist(http, manifest),
                30,
                1.0,
            )
            try:
                _until(
                    "the viewer's player to reach the end",
                    lambda: viewer.evaluate("window.mainevent.stats().state") == "ended",
                    60,
                    1.0,
                )
            except AssertionError as exc:
                shot(viewer, "09-viewer-not-ended")
                raise AssertionError(
                    f"{exc}: {viewer.evaluate('window.mainevent.stats()')}"
                ) from None
            shot(op, "09-ended")
            shot(viewer, "09-viewer-ended")

            # -- every action is in the audit view --
            op.wait_for_selector("#audit tbody tr[data-action='event.command.force_pipeline']")
            actions = op.eval_on_selector_all(
                "#audit tbody tr", "rows => rows.map(r => r.dataset.action)"
            )
            for a in ("event.create", "event.command.force_pipeline"):
                assert a in actions, actions
            assert not errors, errors

            # -- a read-only user sees the controls disabled, and the server refuses them --
            ro = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            ro.goto(console_url)
            ro.fill("#login-key", logins["read-only"])
            ro.click("#login-submit")
            ro.wait_for_selector("#events-view:not([hidden])")
            ro.wait_for_selector("#create", state="hidden")
            ro.goto(f"{console_url}#/events/{EVENT}")
            ro.wait_for_selector("#lifecycle button")
            disabled = ro.eval_on_selector_all(
                "#event-view button", "bs => bs.map(b => b.disabled)"
            )
            assert disabled, "no controls rendered"
            assert all(disabled), disabled
            status = ro.evaluate(
                """async () => {
                    const s = await (await fetch('/console/api/session')).json();
                    const r = await fetch('/v1/events/final/commands', {method: 'POST',
                      headers: {'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf,
                                'Idempotency-Key': 'ro-1'},
                      body: JSON.stringify({command: 'archive'})});
                    return [r.status, (await r.json()).error.reason];
                }"""
            )
            assert status == [403, "insufficient_role"], status
            shot(ro, "10-read-only")
        finally:
            browser.close()
            http.close()
            api.http.close()
