from __future__ import annotations

from typing import Any

import pytest

from forestflow_control_plane.platforms.local.gateway.routing import (
    Draws,
    Match,
    build_table,
    match_request,
)


def service(name: str, version: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name, "namespace": "fraud", "labels": {"forestflow.dev/version": version}
        },
        "spec": {"template": {"metadata": {"name": f"{name}-00001"}}},
    }


ROUTE: dict[str, Any] = {
    "metadata": {"name": "scoring", "namespace": "fraud"},
    "spec": {
        "traffic": [
            {"revisionName": "ff-scoring-v1-00001", "percent": 80, "tag": "v1"},
            {"revisionName": "ff-scoring-v2-00001", "percent": 20, "tag": "v2"},
            {"revisionName": "ff-scoring-v3-00001", "percent": 0, "tag": "v3"},
        ]
    },
}
# v4 is a shadow: a Service that no Route targets.
TABLE = build_table(
    [ROUTE], [service(f"ff-scoring-{v}", v) for v in ("v1", "v2", "v3", "v4")]
)

MATCHES = [
    ("path", "x:1", "/contracts/fraud/scoring/v2/models/scoring/infer",
     Match("fraud/scoring", None, "/v2/models/scoring/infer")),
    ("path root", "x", "/contracts/fraud/scoring", Match("fraud/scoring", None, "/")),
    ("host", "scoring.fraud.ff.local:8080", "/v1/scoring/predict",
     Match("fraud/scoring", None, "/v1/scoring/predict")),
    ("service path", "x", "/services/fraud/ff-scoring-v4/v1/scoring/predict",
     Match("fraud/ff-scoring-v4", None, "/v1/scoring/predict", service=True)),
    ("other domain", "scoring.fraud.example.com", "/x", None),
    ("too short", "/contracts/fraud", "/contracts/fraud", None),
    ("service too short", "x", "/services/fraud", None),
]


@pytest.mark.parametrize(("name", "host", "path", "want"), MATCHES, ids=[m[0] for m in MATCHES])
def test_match_request(name: str, host: str, path: str, want: Match | None) -> None:
    assert match_request(host, path, "ff.local") == want


HOSTS = [
    # (name, host, refined match, version served at any draw or None for the split)
    ("contract", "scoring", Match("fraud/scoring", None, "/x"), None),
    ("tag at zero percent", "v3-scoring", Match("fraud/scoring", "v3", "/x"), "v3"),
    ("service with traffic", "ff-scoring-v1",
     Match("fraud/ff-scoring-v1", None, "/x", service=True), "v1"),
    ("service no Route targets", "ff-scoring-v4",
     Match("fraud/ff-scoring-v4", None, "/x", service=True), "v4"),
    ("undeclared tag", "v4-scoring", Match("fraud/v4-scoring", None, "/x"), "no traffic"),
    ("unknown", "nothing", Match("fraud/nothing", None, "/x"), "no traffic"),
]


@pytest.mark.parametrize(("name", "label", "want", "version"), HOSTS, ids=[h[0] for h in HOSTS])
def test_host_routes_reach_contracts_tags_and_services(
    name: str, label: str, want: Match, version: str | None
) -> None:
    match = match_request(f"{label}.fraud.ff.local:8080", "/x", "ff.local")
    assert match is not None
    refined = TABLE.refine(match)
    assert refined == want
    served = {
        getattr(TABLE.resolve(refined, Draws(start)), "version", "no traffic")
        for start in (0.0, 0.9)
    }
    assert served == ({"v1", "v2"} if version is None else {version})


def test_a_service_route_reports_its_share_of_the_contract() -> None:
    shares = {key: t.percent for key, t in TABLE.services.items()}
    assert shares == {
        "fraud/ff-scoring-v1": 80, "fraud/ff-scoring-v2": 20,
        "fraud/ff-scoring-v3": 0, "fraud/ff-scoring-v4": 0,
    }


def test_a_tag_with_a_dash_is_read_whole() -> None:
    route = {**ROUTE, "spec": {"traffic": [
        {"revisionName": "ff-scoring-v1-beta-00001", "percent": 100, "tag": "v1-beta"}
    ]}}
    table = build_table([route], [service("ff-scoring-v1-beta", "v1-beta")])
    match = match_request("v1-beta-scoring.fraud.ff.local", "/x", "ff.local")
    assert match is not None
    assert table.refine(match) == Match("fraud/scoring", "v1-beta", "/x")


@pytest.mark.parametrize(
    ("draw", "version"), [(0.0, "v1"), (0.79, "v1"), (0.80, "v2"), (0.999, "v2")]
)
def test_split_follows_the_percents(draw: float, version: str) -> None:
    assert TABLE.routes["fraud/scoring"].pick(draw).version == version


@pytest.mark.parametrize("requests", [10, 100, 2000])
def test_draws_hold_the_split_to_a_request_or_two_over_any_run(requests: int) -> None:
    draws, match = Draws(), Match("fraud/scoring", None, "/")
    for _ in range(37):  # wherever the run starts
        TABLE.resolve(match, draws)
    served = [TABLE.resolve(match, draws) for _ in range(requests)]
    on_v2 = sum(1 for t in served if t is not None and t.version == "v2")
    assert abs(on_v2 - requests * 0.2) <= 2


def test_each_contract_draws_its_own_sequence() -> None:
    draws = Draws()
    first = [draws.draw("a/x") for _ in range(3)]
    assert [draws.draw("b/y") for _ in range(3)] == first
    draws.forget({"b/y"})
    assert draws.draw("a/x") == first[0]


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
            for start in (0.0, 0.5, 0.99)
            if (target := STICKY.resolve(match, Draws(start), {b"x-user": user})) is not None
        }
        assert len(picked) == 1 and picked <= {"v1", "v2"}, (user, picked)


def test_sticky_keys_spread_by_the_percents_and_requests_without_one_split_by_weight() -> None:
    match = Match("fraud/scoring", None, "/")
    users = [f"user-{i}".encode() for i in range(2000)]
    on_v2 = 0
    for user in users:
        target = STICKY.resolve(match, Draws(), {b"x-user": user})
        assert target is not None
        on_v2 += target.version == "v2"
    assert 0.16 < on_v2 / len(users) < 0.24  # v2 has 20 %
    anonymous = STICKY.resolve(match, Draws(0.9), {b"x-other": b"1"})
    assert anonymous is not None and anonymous.version == "v2"
