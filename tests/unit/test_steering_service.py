"""The steering service's hand-rolled hot path agrees with the standard library it replaced."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from hypothesis import given
from hypothesis import strategies as st

from mainevent.control.entitlement import RegionTable
from mainevent.control.steering.model import CdnSpec, SteeringConfig
from mainevent.control.steering.policy import SteeringPolicy
from mainevent.control.steering.service import HLS_STEERING_TYPE, SteeringService, _params

_chars = st.sampled_from([*list("ab=&%+2F41zZ~._-* ;"), "%zz", "%e2%82%ac", "é"])


@given(st.lists(_chars, max_size=40).map("".join))
def test_query_parsing_matches_parse_qsl_first_wins(query: str) -> None:
    expected: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        expected.setdefault(name, value)
    assert _params(query) == expected


def _service(events: list[str] | None = None) -> SteeringService:
    policy = SteeringPolicy([CdnSpec("cdn-a"), CdnSpec("cdn-b")], SteeringConfig(ttl_s=10))
    return SteeringService(
        policy,
        regions=RegionTable([("127.0.0.0/8", "local")]),
        new_id=lambda: "st-new",
        events=events,
        min_reload_interval_s=0,
    )


@given(
    sid=st.from_regex(r"[A-Za-z0-9._~-]{1,20}", fullmatch=True),
    region=st.from_regex(r"[A-Za-z0-9._*-]{1,10}", fullmatch=True),
    isp=st.from_regex(r"[A-Za-z0-9._*-]{1,10}", fullmatch=True),
    kind=st.sampled_from(["hls", "dash"]),
)
def test_manifest_body_is_json_whose_reload_uri_round_trips(
    sid: str, region: str, isp: str, kind: str
) -> None:
    svc = _service()
    r = svc.manifest(kind, 'ev"\\x', f"sid={sid}&r={region}&i={isp}", "127.0.0.1", 1e9)
    assert r.status == 200
    assert r.content_type == (HLS_STEERING_TYPE if kind == "hls" else "application/json")
    body = json.loads(r.body)
    assert body["VERSION"] == 1
    assert body["TTL"] == 10
    assert body["PATHWAY-PRIORITY"][0] in ("cdn-a", "cdn-b")
    path, _, query = body["RELOAD-URI"].partition("?")
    assert path == f'/steering/ev"\\x/{kind}'
    back = dict(parse_qsl(query, keep_blank_values=True))
    assert back["sid"] == sid
    assert back["r"] == region
    assert back.get("i", "*") == isp
    assert back["p"] == body["PATHWAY-PRIORITY"][0]
    # The next request, carrying what we answered, is the same session on the same pathway.
    again = json.loads(svc.manifest(kind, 'ev"\\x', query, "127.0.0.1", 1e9 + 1).body)
    assert again == body
