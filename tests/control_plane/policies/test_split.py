from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forestflow_control_plane.policies.split import SplitError, check, shift
from tests.control_plane.policies.inputs import splits

SHIFTS: list[tuple[str, dict[str, int], str, int, dict[str, int]]] = [
    ("first deploy takes everything", {}, "v1", 5, {"v1": 100}),
    ("one incumbent", {"v1": 100}, "v2", 25, {"v1": 75, "v2": 25}),
    ("proportional, exact", {"v1": 60, "v2": 40}, "v3", 50, {"v1": 30, "v2": 20, "v3": 50}),
    # 70*95/100 = 66.5 and 30*95/100 = 28.5: equal remainders, the larger share wins the unit.
    ("remainder tie to larger share", {"v1": 70, "v2": 30}, "v3", 5,
     {"v1": 67, "v2": 28, "v3": 5}),
    # a gets 17 exactly; b and c 16.5 each, same share: the unit goes to b, by name.
    ("remainder tie to name", {"a": 34, "b": 33, "c": 33}, "d", 50,
     {"a": 17, "b": 17, "c": 16, "d": 50}),
    ("zero incumbent keeps an entry", {"v1": 100, "v2": 0}, "v3", 10,
     {"v1": 90, "v2": 0, "v3": 10}),
    ("candidate already had a share", {"v1": 50, "v2": 50}, "v2", 80, {"v1": 20, "v2": 80}),
    ("candidate had everything", {"v1": 0, "v2": 100}, "v2", 30, {"v1": 0, "v2": 100}),
    ("full", {"v1": 30, "v2": 70}, "v3", 100, {"v1": 0, "v2": 0, "v3": 100}),
    ("none", {"v1": 30, "v2": 70}, "v3", 0, {"v1": 30, "v2": 70, "v3": 0}),
]


@pytest.mark.parametrize(
    ("name", "previous", "candidate", "percent", "want"), SHIFTS, ids=[s[0] for s in SHIFTS]
)
def test_shift(
    name: str, previous: dict[str, int], candidate: str, percent: int, want: dict[str, int]
) -> None:
    assert shift(previous, candidate, percent) == want


BAD: list[tuple[str, Any, str]] = [
    ("sum under", {"v1": 60, "v2": 30}, "sum to 100, got 90"),
    ("sum over", {"v1": 60, "v2": 50}, "sum to 100, got 110"),
    ("negative", {"v1": 110, "v2": -10}, "v1: percent must be in 0..100, got 110"),
    ("float", {"v1": 50.0, "v2": 50}, "v1: percent must be an integer, got 50.0"),
    ("bool", {"v1": True, "v2": 99}, "v1: percent must be an integer, got True"),
    ("empty", {}, "sum to 100, got 0"),
]


@pytest.mark.parametrize(("name", "split", "want"), BAD, ids=[b[0] for b in BAD])
def test_check_refuses(name: str, split: Any, want: str) -> None:
    with pytest.raises(SplitError, match=want):
        check(split)


def test_shift_refuses_out_of_range_percent() -> None:
    with pytest.raises(SplitError, match=r"v2: percent must be in 0\.\.100, got 101"):
        shift({"v1": 100}, "v2", 101)


@given(splits(), st.sampled_from(["v1", "v2", "new"]), st.integers(0, 100))
def test_shift_is_a_split_that_keeps_every_version(
    previous: dict[str, int], candidate: str, percent: int
) -> None:
    got = shift(previous, candidate, percent)
    check(got)
    assert set(got) == set(previous) | {candidate}
    if sum(p for v, p in previous.items() if v != candidate):
        assert got[candidate] == percent


@given(splits(min_versions=2), st.integers(0, 100))
def test_shift_keeps_incumbents_within_one_point_of_their_proportion(
    previous: dict[str, int], percent: int
) -> None:
    got = shift(previous, "new", percent)
    for version, share in previous.items():
        exact = share * (100 - percent) / 100
        assert exact - 1 < got[version] < exact + 1
