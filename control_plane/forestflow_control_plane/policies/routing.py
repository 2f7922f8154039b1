"""Which version a client gets when the contract routes by a sticky header (a tag URL pins
a version in the route table itself).

Sticky routing uses weighted rendezvous hashing: every (version, key) pair gets a stable
pseudo-random score scaled by the version's percent, and the key goes to the highest
score. A key therefore lands on each version with probability percent / 100, and when a
rollout raises the candidate's share without raising any other version's, a key already
on the candidate stays there (integer rounding can nudge an incumbent up a point, which
may move the odd key back). The hash is blake2b, not Python's `hash()`, which is salted
per process.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

from forestflow_control_plane.policies.split import check


def sticky_pick(split: Mapping[str, int], key: str) -> str:
    """The version that `key` sticks to under `split`; versions at 0 % are never picked."""
    check(split)
    return max(
        (v for v, p in split.items() if p > 0),
        key=lambda v: (_score(v, key, split[v]), v),
    )


def _score(version: str, key: str, percent: int) -> float:
    """percent / -ln(u) for u uniform in (0, 1): the max over versions is Exp-race weighted."""
    digest = hashlib.blake2b(f"{version}\0{key}".encode(), digest_size=8).digest()
    u = ((int.from_bytes(digest, "big") >> 11) + 0.5) / 2**53  # 53 bits: exact, never 0 or 1
    return percent / -math.log(u)
