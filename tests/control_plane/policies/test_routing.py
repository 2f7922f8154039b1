from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forestflow_control_plane.policies.routing import sticky_pick
from forestflow_control_plane.policies.split import SplitError
from tests.control_plane.policies.inputs import splits

# Pinned outputs: a change of hash or scoring would silently re-shuffle every client.
PICKS: list[tuple[str, dict[str, int], str, str]] = [
    ("single version", {"v1": 100}, "client-a", "v1"),
    ("zero percent never picked", {"v1": 0, "v2": 100}, "client-a", "v2"),
    ("stable pick a", {"v1": 50, "v2": 50}, "client-a", "v2"),
    ("stable pick d", {"v1": 50, "v2": 50}, "client-d", "v1"),
    ("order of the split does not matter", {"v2": 50, "v1": 50}, "client-d", "v1"),
    ("a smaller share loses the key", {"v1": 10, "v2": 90}, "client-d", "v2"),
]


@pytest.mark.parametrize(("name", "split", "key", "want"), PICKS, ids=[p[0] for p in PICKS])
def test_sticky_pick(name: str, split: dict[str, int], key: str, want: str) -> None:
    assert sticky_pick(split, key) == want


def test_sticky_pick_refuses_an_invalid_split() -> None:
    with pytest.raises(SplitError, match="sum to 100, got 0"):
        sticky_pick({}, "client-a")


@given(splits(), st.text(max_size=40))
def test_sticky_pick_is_deterministic_and_never_picks_zero(
    split: dict[str, int], key: str
) -> None:
    got = sticky_pick(split, key)
    assert split[got] > 0
    assert sticky_pick(dict(reversed(split.items())), key) == got


@settings(max_examples=25, deadline=None)
@given(splits(), st.integers(0, 2**32))
def test_shares_over_many_keys_follow_the_percents(split: dict[str, int], seed: int) -> None:
    rng = random.Random(seed)
    keys = [f"client-{rng.getrandbits(64):016x}" for _ in range(10_000)]
    counts = Counter(sticky_pick(split, key) for key in keys)
    for version, percent in split.items():
        assert abs(100 * counts[version] / len(keys) - percent) <= 3, (version, counts)


@given(splits(min_versions=2), st.data(), st.lists(st.text(max_size=20), max_size=50))
def test_raising_only_the_candidate_keeps_its_clients(
    split: dict[str, int], data: st.DataObject, keys: list[str]
) -> None:
    candidate = next(iter(split))
    # Move any amount from each incumbent to the candidate; nobody else goes up.
    after = dict(split)
    for version in list(split)[1:]:
        moved = data.draw(st.integers(0, split[version]))
        after[version] -= moved
        after[candidate] += moved
    for key in keys:
        if sticky_pick(split, key) == candidate:
            assert sticky_pick(after, key) == candidate
