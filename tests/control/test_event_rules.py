"""The control plane accepts exactly the event settings the media plane accepts, and the planes stay apart."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import ValidationError

from mainevent.common.eventspec import DEFAULT_FPS, DEFAULT_PART_TARGET_MS
from mainevent.config import EventSettings
from mainevent.control.schemas import EventCreate, EventUpdate

SRC = Path(__file__).parents[2] / "src" / "mainevent"


def _media_accepts(**fields: object) -> bool:
    try:
        EventSettings.model_validate(fields)
    except ValidationError:
        return False
    return True


def _control_accepts(model: type[EventCreate] | type[EventUpdate], **fields: object) -> bool:
    extra = {"id": "final", "title": "Final"} if model is EventCreate else {}
    try:
        model.model_validate(extra | fields)
    except ValidationError:
        return False
    return True


def test_segment_durations_agree_with_the_media_plane() -> None:
    """Every segment duration from 0.5 s to 12 s (per 100 ms) is accepted by both planes or by neither."""
    assert (DEFAULT_FPS, DEFAULT_PART_TARGET_MS) == (30, 250)  # what the control plane assumes
    accepted = []
    for ms in range(500, 12_001, 100):
        media = _media_accepts(segment_duration_ms=ms)
        assert _control_accepts(EventCreate, segment_duration_ms=ms) == media, ms
        assert _control_accepts(EventUpdate, segment_duration_ms=ms) == media, ms
        if media:
            accepted.append(ms)
    assert 2000 in accepted
    assert 7000 not in accepted  # does not divide a day
    assert 1100 not in accepted  # not a whole number of 250 ms parts


@pytest.mark.parametrize(
    "ladder",
    [
        [{"id": "v1", "width": 640, "height": 360, "bitrate_kbps": 700}] * 2,
        [{"id": "v1", "width": 641, "height": 360, "bitrate_kbps": 700}],
        [{"id": "V1", "width": 640, "height": 360, "bitrate_kbps": 700}],
        [{"id": "v1", "width": 640, "height": 360, "bitrate_kbps": 10}],
        [],
    ],
)
def test_ladders_the_media_plane_refuses_are_refused(ladder: list[dict[str, object]]) -> None:
    """A ladder the media plane's settings refuse is refused by the event API too."""
    assert not _media_accepts(ladder=ladder)
    assert not _control_accepts(EventCreate, ladder=ladder)
    assert not _control_accepts(EventUpdate, ladder=ladder)


def _imports(package: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        found[str(path.relative_to(SRC))] = names
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("control", "media"), ("media", "control"), ("common", "media"), ("common", "control")],
)
def test_the_planes_do_not_import_each_other(package: str, forbidden: str) -> None:
    """control/ never imports media/ nor media/ control/; common/ (the shared rules) imports neither."""
    bad = {
        module: sorted(n for n in names if n.startswith(f"mainevent.{forbidden}"))
        for module, names in _imports(SRC / package).items()
    }
    assert not {m: n for m, n in bad.items() if n}
