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


STICKY = build_table(
    [{**ROUTE, "metadata": {**ROUTE["metadata"],
                            "annotations": {"forestflow.dev/sticky-header": "X-User"}}}],
    [service(f"ff-scoring-{v}", v) for v in ("v1", "v2", "v3")],
)


def test_sticky_header_keeps_a_client_on_one_version_whatever_the_draw() -> None:
    match = Match("fraud/scoring", None, "/")
    for user in (b"alice", b"bob", b"carol", b"dave"):
        picked = {
            target.version
            for draw in (0.0, 0.5, 0.99)
            if (target := STICKY.resolve(match, draw, {b"x-user": user})) is not None
        }
        assert len(picked) == 1 and picked <= {"v1", "v2"}, (user, picked)


def test_sticky_keys_spread_by_the_percents_and_requests_without_one_split_by_weight() -> None:
    match = Match("fraud/scoring", None, "/")
    users = [f"user-{i}".encode() for i in range(2000)]
    on_v2 = 0
    for user in users:
        target = STICKY.resolve(match, 0.0, {b"x-user": user})
        assert target is not None
        on_v2 += target.version == "v2"
    assert 0.16 < on_v2 / len(users) < 0.24  # v2 has 20 %
    anonymous = STICKY.resolve(match, 0.9, {b"x-other": b"1"})
    assert anonymous is not None and anonymous.version == "v2"
