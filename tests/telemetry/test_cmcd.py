"""CMCD decoding: exactly what hls.js 1.7.4 (cml-cmcd 2.3) puts on the wire, and precise errors."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mainevent.control.telemetry.cmcd import (
    CmcdError,
    decode_body,
    decode_dict,
    encode_dict,
    first_number,
)
from mainevent.control.telemetry.events import ReportKind, report_from_cmcd

ROOT = Path(__file__).parents[2]
CML = ROOT / "node_modules/@svta/cml-cmcd/dist/index.js"

# Records shaped like hls.js's: persistent data (sid, cid, sf, st, sta, mtp, bl) + event keys.
RECORDS = [
    {
        "e": "t",
        "ts": 1_800_000_000_123,
        "sn": 0,
        "sid": "6e2f-41",
        "cid": "final",
        "sta": "d",
        "sf": "h",
        "v": 2,
    },
    {
        "e": "bc",
        "ts": 1_800_000_000_300,
        "sn": 1,
        "sid": "6e2f-41",
        "br": [2500],
        "ot": "v",
        "sta": "s",
        "mtp": [12300],
        "pr": 1.5,
        "v": 2,
    },
    {
        "e": "rr",
        "ts": 1_800_000_001_000,
        "sn": 2,
        "sid": "6e2f-41",
        "url": "http://127.0.0.1:9/live/final/v720/900000123.m4s",
        "rc": 200,
        "ttfb": 12,
        "ttlb": 40,
        "br": [2500],
        "bl": [1500],
        "ot": "v",
        "sta": "p",
        "pb": [2500],
        "su": True,
        "nor": ["900000124.m4s"],
        "x-custom": "z",
        "v": 2,
    },
    {
        "e": "e",
        "ts": 1_800_000_002_000,
        "sn": 3,
        "sid": "6e2f-41",
        "ec": ["fragLoadError"],
        "sta": "f",
        "bs": True,
        "v": 2,
    },
]


def _node_encode(records: list[dict[str, object]]) -> list[str]:
    script = (
        f"import {{ encodeCmcd }} from {json.dumps(str(CML))};"
        "const recs = JSON.parse(process.argv[1]);"
        "for (const r of recs) console.log(encodeCmcd(r, {version: 2, reportingMode: 'event'}));"
    )
    out = subprocess.run(
        ["node", "--input-type=module", "-e", script, json.dumps(records)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return out.stdout.splitlines()


@pytest.mark.skipif(shutil.which("node") is None or not CML.exists(), reason="needs node + npm ci")
def test_decodes_cml_cmcd_event_records_and_encodes_them_identically() -> None:
    """Lines written by hls.js's own encoder decode to the same keys, and ours encode byte-identically."""
    lines = _node_encode(RECORDS)  # type: ignore[arg-type]
    assert len(lines) == len(RECORDS)
    decoded = decode_body("\n".join(lines) + "\n", max_records=10)
    for line, d in zip(lines, decoded, strict=True):
        # The custom key is passed through by hls.js and dropped (and counted) by us.
        assert encode_dict(d.data) == line.replace(',x-custom="z"', "")
    assert [d.unknown_keys for d in decoded] == [0, 0, 1, 0]
    rr = decoded[2].data
    assert rr["url"].endswith("900000123.m4s")  # type: ignore[union-attr]
    assert first_number(rr["br"]) == 2500.0
    assert first_number(rr["bl"]) == 1500.0
    assert rr["sta"] == "p"
    assert rr["ot"] == "v"
    assert rr["su"] is True
    # pr=1.5 survives, pr=1 is dropped by the encoder; the custom key never reaches us as known.
    assert decoded[1].data["pr"] == 1.5
    err = report_from_cmcd(decoded[3].data)
    assert not isinstance(err, str)
    assert err.kind is ReportKind.ERROR
    assert err.error == "fragLoadError"
    assert err.sta == "f"


def test_unknown_and_custom_keys_are_dropped_and_counted() -> None:
    """Keys CMCD does not define are ignored, and how many were dropped is reported."""
    d = decode_dict('sid="a",zz=1,com.example-x=2,ts=5,e=t')
    assert d.data == {"sid": "a", "ts": 5, "e": "t"}
    assert d.unknown_keys == 2


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('sid="abc', "unterminated string at character"),
        ("sid=abc,,ts=1", "expected a key"),
        ("br=(100 200", "unterminated inner list"),
        ("Sid=1", "expected a key (lowercase letter) at character 1"),
        ("ts=12.", "bad number"),
        ("bs=?2", "expected ?0 or ?1"),
        ("ts=1 e=t", "expected ',' between keys"),
        ("ts=1,", "trailing ','"),
        ('sid="a\\n"', "bad escape"),
    ],
)
def test_malformed_cmcd_names_the_problem_and_position(text: str, needle: str) -> None:
    """A malformed dictionary is refused with what is wrong and where."""
    with pytest.raises(
        CmcdError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")
    ):
        decode_dict(text)


def test_a_bad_line_names_its_line_number() -> None:
    """In a multi-line body the error says which line is bad."""
    with pytest.raises(CmcdError, match="line 2: "):
        decode_body('sid="a",ts=1,e=t\nsid="a",ts=\n', max_records=10)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"ts": 5, "e": "t"}, "missing sid"),
        ({"sid": "a", "e": "t"}, "missing or invalid ts"),
        ({"sid": "a", "ts": 5}, "missing e"),
        ({"sid": "a", "ts": 5, "e": "t", "sn": -1}, "invalid sn"),
        ({"sid": "x" * 129, "ts": 5, "e": "t"}, "longer than 128"),
    ],
)
def test_records_without_the_required_keys_are_refused(
    data: dict[str, object], reason: str
) -> None:
    """An event record needs sid, ts and e (and a valid sn when present)."""
    out = report_from_cmcd(data)  # type: ignore[arg-type]
    assert isinstance(out, str)
    assert reason in out


@pytest.mark.parametrize(
    "text",
    [
        'bl=(1500),br=(2500 1200),bs,cid="final",e=t,mtp=(12000),sf=h,sid="abc",sn=3,st=l,sta=p,ts=1700000000123,v=2',
        'e=rr,rc=200,sid="a\\"b\\\\c",ts=5,ttfb=12,url="http://x/live/a/v1/5.m4s",pr=1.5,su=?0',
        'ec=("fragLoadError"),e=e,sid="x",ts=1',  # a string in an inner list: full parser
        'br=2500;ot=v,e=t,sid="x",ts=1',  # parameters: full parser
        'ts=-12,e=t,sid="x"',
    ],
)
def test_the_fast_path_decodes_exactly_as_the_full_parser(text: str) -> None:
    """The regex fast path and the structured-field parser agree on every value they both read."""
    from mainevent.control.telemetry.cmcd import _fast, _Parser

    fast = _fast(text)
    full = _Parser(text).dictionary()
    assert fast is None or fast == full
    assert decode_dict(text).data == {k: v for k, v in full.items() if k in decode_dict(text).data}
