"""Which variant a request goes to: pure functions over the Knative Route and Service
objects the local platform stores, so routing is tested without a network."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from forestflow_control_plane import names

CONTRACT_PREFIX = "/contracts/"


@dataclass(frozen=True)
class Target:
    service: str
    version: str
    percent: int


@dataclass(frozen=True)
class RouteEntry:
    targets: tuple[Target, ...]
    cumulative: tuple[int, ...]

    def pick(self, draw: float) -> Target:
        """The target whose share of [0, 100) holds `draw`."""
        index = bisect.bisect_right(self.cumulative, draw * self.cumulative[-1])
        return self.targets[min(index, len(self.targets) - 1)]


@dataclass(frozen=True)
class Match:
    contract: str
    tag: str | None
    path: str


@dataclass(frozen=True)
class RouteTable:
    routes: dict[str, RouteEntry]
    tags: dict[tuple[str, str], Target]

    def resolve(self, match: Match, draw: float) -> Target | None:
        if match.tag is not None:
            return self.tags.get((match.contract, match.tag))
        entry = self.routes.get(match.contract)
        return entry.pick(draw) if entry else None


def build_table(routes: Iterable[dict[str, Any]], services: Iterable[dict[str, Any]]) -> RouteTable:
    revision_to_service = {
        _revision_key(s): names.object_key(s["metadata"]["namespace"], s["metadata"]["name"])
        for s in services
    }
    table: dict[str, RouteEntry] = {}
    tags: dict[tuple[str, str], Target] = {}
    for route in routes:
        meta = route["metadata"]
        contract = f"{meta['namespace']}/{meta['name']}"
        targets = []
        for t in route["spec"]["traffic"]:
            service = revision_to_service.get((meta["namespace"], t["revisionName"]))
            if service is None:
                continue
            target = Target(service, t.get("tag", ""), int(t["percent"]))
            if target.version:
                tags[(contract, target.version)] = target
            if target.percent > 0:
                targets.append(target)
        if targets:
            cumulative = tuple(itertools.accumulate(t.percent for t in targets))
            table[contract] = RouteEntry(tuple(targets), cumulative)
    return RouteTable(table, tags)


def match_request(host: str, path: str, domain: str) -> Match | None:
    """`/contracts/<ns>/<name>/<rest>` or Host `[<tag>-]<name>.<ns>.<domain>`."""
    if path.startswith(CONTRACT_PREFIX):
        parts = path[len(CONTRACT_PREFIX) :].split("/", 2)
        if len(parts) < 2 or not parts[0] or not parts[1]:
            return None
        rest = "/" + parts[2] if len(parts) == 3 else "/"
        return Match(f"{parts[0]}/{parts[1]}", None, rest)
    hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    suffix = "." + domain
    if not hostname.endswith(suffix):
        return None
    labels = hostname[: -len(suffix)].split(".")
    if len(labels) != 2:
        return None
    name, namespace = labels
    return Match(f"{namespace}/{name}", None, path)


def match_tag(match: Match, table: RouteTable) -> Match:
    """Read `<tag>-<name>` hosts: a tag URL exists only when the Route declares that tag."""
    if match.contract in table.routes or match.tag is not None:
        return match
    namespace, name = names.split_contract(match.contract)
    tag, _, rest = name.partition("-")
    if rest and (f"{namespace}/{rest}", tag) in table.tags:
        return Match(f"{namespace}/{rest}", tag, match.path)
    return match


def _revision_key(service: dict[str, Any]) -> tuple[str, str]:
    return (service["metadata"]["namespace"], service["spec"]["template"]["metadata"]["name"])
