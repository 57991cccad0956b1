"""Settings: defaults → file → environment → overrides, with precise errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from mainevent.config import ConfigError, Settings, load_settings


def test_defaults_are_valid() -> None:
    """With nothing configured, the demo event runs with 2 s segments and the demo ladder."""
    s = load_settings()
    assert s.event.segment_duration_ms == 2000
    assert [r.id for r in s.event.ladder] == ["v720", "v360"]
    assert s.origin.port == 8080


def test_file_then_env_then_overrides(tmp_path: Path) -> None:
    """Later sources win: the environment beats the file, overrides beat the environment."""
    f = tmp_path / "me.toml"
    f.write_text('[origin]\nport = 9000\nhost = "0.0.0.0"\n[event]\nid = "final"\n')
    s = load_settings(
        file=f,
        environ={"MAINEVENT_ORIGIN__PORT": "9100", "OTHER": "x"},
        overrides={"event": {"title": "Final"}},
    )
    assert (s.origin.port, s.origin.host, s.event.id, s.event.title) == (
        9100,
        "0.0.0.0",
        "final",
        "Final",
    )


def test_ladder_from_env_json() -> None:
    """A ladder can be given as JSON in MAINEVENT_EVENT__LADDER."""
    s = load_settings(
        environ={
            "MAINEVENT_EVENT__LADDER": '[{"id":"v240","width":426,"height":240,"bitrate_kbps":400}]'
        }
    )
    assert s.event.ladder[0].id == "v240"


def test_edge_variables_are_not_settings() -> None:
    """The edges' MAINEVENT_EDGE_TOKEN_KEYS and MAINEVENT_EDGE_ADMIN_SECRET (README) do not stop
    the processes that inherit them (`mainevent up`, its `origin serve` replicas)."""
    env = {"MAINEVENT_EDGE_TOKEN_KEYS": "k1:00112233", "MAINEVENT_EDGE_ADMIN_SECRET": "s"}
    assert load_settings(environ=env) == load_settings(environ={})


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"MAINEVENT_ORIGIN__PORT": "http"}, "origin.port"),
        ({"MAINEVENT_EVENT__SEGMENT_DURATION_MS": "1999"}, "divide a day"),
        ({"MAINEVENT_EVENT__PART_TARGET_MS": "700"}, "part_target_ms must divide"),
        ({"MAINEVENT_EVENT__ID": "../etc"}, "event.id"),
        (
            {
                "MAINEVENT_EVENT__LADDER": '[{"id":"v1","width":641,"height":360,"bitrate_kbps":500}]'
            },
            "even",
        ),
        ({"MAINEVENT_EVENT__LADDER": "[not json"}, "not valid JSON"),
        ({"MAINEVENT_NOPE": "1"}, "nope"),
    ],
)
def test_bad_settings_are_named(env: dict[str, str], needle: str) -> None:
    """An invalid setting stops startup with a message naming it."""
    with pytest.raises(ConfigError, match=needle):
        load_settings(environ=env)


def test_bad_file(tmp_path: Path) -> None:
    """A broken or missing config file is reported with its path."""
    f = tmp_path / "bad.toml"
    f.write_text("[origin\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(file=f)
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(file=tmp_path / "missing.toml")


def test_settings_are_frozen() -> None:
    """Settings cannot be changed after loading."""
    s = Settings()
    with pytest.raises(ValueError, match="frozen"):
        s.origin.port = 1  # type: ignore[misc]


def test_readme_reference_matches_the_code() -> None:
    """The README's configuration reference is exactly what the settings models define."""
    from mainevent.config import settings_reference

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start = readme.index("<!-- settings-reference:start -->") + len(
        "<!-- settings-reference:start -->"
    )
    end = readme.index("<!-- settings-reference:end -->")
    assert readme[start:end].strip() == settings_reference().strip(), "regenerate the README table"


def test_part_hold_back_floor_follows_the_declared_part_target() -> None:
    """PART-HOLD-BACK may be as low as 3 × the PART-TARGET actually declared (0.267 s parts
    for the default 0.25 s cut at 30 fps; 0.512 s for a 0.5 s cut)."""
    ok = load_settings(overrides={"event": {"latency": "low", "part_hold_back_ms": 801}})
    assert ok.event.part_hold_back_ms == 801
    with pytest.raises(ConfigError, match=r"at least 3 × the declared part target \(801 ms\)"):
        load_settings(overrides={"event": {"latency": "low", "part_hold_back_ms": 800}})
    half = {"latency": "low", "part_target_ms": 500}
    assert load_settings(overrides={"event": half | {"part_hold_back_ms": 1536}})
    with pytest.raises(ConfigError, match=r"at least 3 × the declared part target \(1536 ms\)"):
        load_settings(overrides={"event": half | {"part_hold_back_ms": 1535}})
