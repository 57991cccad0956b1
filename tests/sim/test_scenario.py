"""Scenario files: shipped ones load, bad ones are refused with every problem named."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mainevent.cli import main
from mainevent.sim.scenario import (
    FaultKind,
    ScenarioError,
    load_scenario,
    parse_scenario,
    shipped_scenarios,
)

SHIPPED = ("fight-night-20m", "final-65m", "entitlement-outage-at-start", "encoder-failure-at-bell")


def _calibration() -> dict[str, object]:
    return tomllib.loads(shipped_scenarios()["calibration-500"].read_text())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_scenarios_load(name: str) -> None:
    """Each scenario the issue asks for ships and validates."""
    sc = load_scenario(name)
    assert sc.name == name
    assert sc.audience.viewers >= 2_000_000


def test_fight_night_has_a_regional_cdn_outage_in_round_3() -> None:
    """The 20 M fight night loses one CDN in one region during round 3 (T+8..12 min)."""
    sc = load_scenario("fight-night-20m")
    (f,) = sc.faults
    assert (f.kind, f.cdn, f.region) == (FaultKind.CDN_OUTAGE, "cdn-b", "eu")
    assert 480 <= f.at_s < 720
    assert sc.audience.viewers == 20_000_000


def test_unknown_scenario_names_the_shipped_ones() -> None:
    """A typo in the scenario name lists what ships."""
    with pytest.raises(ScenarioError, match=r"shipped scenarios: .*fight-night-20m"):
        load_scenario("fight-nite")


def test_every_bad_field_is_named() -> None:
    """Several mistakes at once are all reported, each with its path."""
    data = _calibration()
    data["audience"] = {**data["audience"], "viewers": "lots", "storm_share": 2.0}  # type: ignore[dict-item]
    data["cdns"][0]["capacity_gbps"] = -1  # type: ignore[index]
    data["faults"] = [{"kind": "cdn_outgae", "at_s": 1, "duration_s": 2}]
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data, "bad.toml")
    text = str(err.value)
    assert "audience.viewers: expected an integer, got 'lots'" in text
    assert "faults[0].kind: unknown fault 'cdn_outgae'" in text
    # the remaining checks run once the types are right
    data = _calibration()
    data["cdns"][0]["capacity_gbps"] = -1  # type: ignore[index]
    data["audience"] = {**data["audience"], "storm_share": 0.9}  # type: ignore[dict-item]
    data["regions"][0]["cdns"] = ["cdn-z"]  # type: ignore[index]
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data, "bad.toml")
    assert "regions[0].cdns: unknown cdn 'cdn-z'" in str(err.value)
    assert "cdns[0].capacity_gbps: must be positive" in str(err.value)
    assert "page_open_share + storm_share + late_share must not exceed 1" in str(err.value)


def test_unknown_fields_and_missing_tables_are_refused() -> None:
    """A misspelt field or a missing table is an error, not silently ignored."""
    data = _calibration()
    data["delivery"] = {**data["delivery"], "segment_seconds": 2}  # type: ignore[dict-item]
    del data["isps"]
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data)
    assert "delivery.segment_seconds: unknown field" in str(err.value)
    assert "isps: missing" in str(err.value)


def test_cli_refuses_a_broken_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`mainevent simulate` on invalid TOML exits 2 with the parse error, no traceback."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[audience\nviewers = 1\n")
    assert main(["simulate", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "is not valid TOML" in capsys.readouterr().err
    assert main(["load", str(bad)]) == 2
    assert main(["simulate", "calibration-500", "--viewers", "0"]) == 2
    assert main(["load", "calibration-500", "--edge", "cdn-a"]) == 2
    assert "expected NAME=http" in capsys.readouterr().err


def test_steering_table_is_validated() -> None:
    """`[steering]` takes the production SteeringConfig's rules; a bad value is named."""
    data = _calibration()
    data["steering"] = {"quorum": 0, "sessions": 0, "failure_drain_share": 1.5}
    data["cdns"][0]["steering_capacity"] = -5  # type: ignore[index]
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data, "bad.toml")
    text = str(err.value)
    assert "steering.sessions: must be at least 1" in text
    assert "steering: quorum must be at least 1" in text
    assert "cdns[0].steering_capacity: must not be negative" in text
    data = _calibration()
    data["steering"] = {"ttl_s": 6, "quorum": 1}
    data["cdns"][1]["steering_capacity"] = 250  # type: ignore[index]
    sc = parse_scenario(data)
    assert sc.steering.policy_config().ttl_s == 6
    assert sc.cdns[1].steering_capacity == 250.0
