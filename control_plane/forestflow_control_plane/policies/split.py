"""A traffic split: version -> integer percent, 0..100, summing to exactly 100.

Integers because a Knative Route takes integer percents; every policy that moves traffic
goes through `shift` so no caller ever rounds on its own.
"""

from __future__ import annotations

from collections.abc import Mapping


class SplitError(ValueError):
    """A split that a Route could not carry; the message says which entry and why."""


def check(split: Mapping[str, int]) -> None:
    """Refuse a split whose percents are not integers in 0..100 summing to 100."""
    for version, percent in split.items():
        if isinstance(percent, bool) or not isinstance(percent, int):
            raise SplitError(f"{version}: percent must be an integer, got {percent!r}")
        if not 0 <= percent <= 100:
            raise SplitError(f"{version}: percent must be in 0..100, got {percent}")
    total = sum(split.values())
    if total != 100:
        raise SplitError(f"percents must sum to 100, got {total}: {dict(split)}")


def shift(previous: Mapping[str, int], candidate: str, percent: int) -> dict[str, int]:
    """`candidate` at `percent`, the rest of 100 shared by the other versions of `previous`.

    The incumbents keep their proportions: each gets rest * share / total, rounded down,
    and the units lost to rounding go one each to the largest remainders (ties: larger
    previous share, then version name), so the sum is exactly 100 and nothing is negative.
    When no incumbent had traffic (first deploy, or `previous` was all candidate) there is
    nothing to share and the candidate takes 100. Every version of `previous` keeps an
    entry, at 0 if it gets nothing, so its tag stays routable.
    """
    if not 0 <= percent <= 100:
        raise SplitError(f"{candidate}: percent must be in 0..100, got {percent}")
    if previous:
        check(previous)
    incumbents = {v: p for v, p in previous.items() if v != candidate}
    total = sum(incumbents.values())
    if total == 0:
        return {**dict.fromkeys(incumbents, 0), candidate: 100}
    rest = 100 - percent
    shares: dict[str, int] = {}
    remainders: dict[str, int] = {}
    for version, share in incumbents.items():
        shares[version], remainders[version] = divmod(share * rest, total)
    left = rest - sum(shares.values())
    by_remainder = sorted(incumbents, key=lambda v: (-remainders[v], -incumbents[v], v))
    for version in by_remainder[:left]:
        shares[version] += 1
    return {**shares, candidate: percent}
