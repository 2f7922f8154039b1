from __future__ import annotations

from typing import Any

import pytest

from forestflow_control_plane.platforms.local.pools import parse_duration
from forestflow_control_plane.platforms.local.routing import (
    Match,
    build_table,
    match_request,
    match_tag,
)


def service(name: str, version: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "fraud"},
        "spec": {"template": {"metadata": {"name": f"{name}-00001"}}},
    }


ROUTE = {
    "metadata": {"name": "scoring", "namespace": "fraud"},
    "spec": {
        "traffic": [
            {"revisionName": "ff-scoring-v1-00001", "percent": 80, "tag": "v1"},
            {"revisionName": "ff-scoring-v2-00001", "percent": 20, "tag": "v2"},
            {"revisionName": "ff-scoring-v3-00001", "percent": 0, "tag": "v3"},
        ]
    },
}
TABLE = build_table(
    [ROUTE], [service(f"ff-scoring-{v}", v) for v in ("v1", "v2", "v3")]
)

MATCHES = [
    ("path", "x:1", "/contracts/fraud/scoring/v2/models/scoring/infer",
     Match("fraud/scoring", None, "/v2/models/scoring/infer")),
    ("path root", "x", "/contracts/fraud/scoring", Match("fraud/scoring", None, "/")),
    ("host", "scoring.fraud.ff.local:8080", "/v1/scoring/predict",
     Match("fraud/scoring", None, "/v1/scoring/predict")),
    ("other domain", "scoring.fraud.example.com", "/x", None),
    ("too short", "/contracts/fraud", "/contracts/fraud", None),
]


@pytest.mark.parametrize(("name", "host", "path", "want"), MATCHES, ids=[m[0] for m in MATCHES])
def test_match_request(name: str, host: str, path: str, want: Match | None) -> None:
    assert match_request(host, path, "ff.local") == want


def test_tag_hosts_reach_their_version_even_at_zero_percent() -> None:
    match = match_request("v3-scoring.fraud.ff.local", "/x", "ff.local")
    assert match is not None
    tagged = match_tag(match, TABLE)
    assert tagged == Match("fraud/scoring", "v3", "/x")
    target = TABLE.resolve(tagged, 0.5)
    assert target is not None and target.version == "v3"


@pytest.mark.parametrize(
    ("draw", "version"), [(0.0, "v1"), (0.79, "v1"), (0.80, "v2"), (0.999, "v2")]
)
def test_split_follows_the_percents(draw: float, version: str) -> None:
    target = TABLE.resolve(Match("fraud/scoring", None, "/"), draw)
    assert target is not None and target.version == version


@pytest.mark.parametrize(
    ("text", "seconds"), [("60s", 60.0), ("1.5s", 1.5), ("500ms", 0.5), ("2m", 120.0)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
