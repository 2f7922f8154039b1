"""Which variant a request goes to: pure functions over the Knative Route and Service
objects the local platform stores, so routing is tested without a network."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from forestflow_control_plane import names
from forestflow_control_plane.policies.routing import sticky_pick
from forestflow_control_plane.resources import STICKY_HEADER_ANNOTATION

CONTRACT_PREFIX = "/contracts/"


@dataclass(frozen=True)
class Target:
    service: str
    version: str
    percent: int


@dataclass(frozen=True)
class RouteEntry:
    """A contract's weighted targets; with `sticky_header` (lower-case, as ASGI gives header
    names), a request carrying that header sticks to the version its value hashes to."""

    targets: tuple[Target, ...]
    cumulative: tuple[int, ...]
    sticky_header: bytes | None = None

    def pick(self, draw: float, key: bytes | None = None) -> Target:
        """The target the client key sticks to, else the one whose share of [0, 100) holds
        `draw`."""
        if key is not None:
            split = {t.version: t.percent for t in self.targets}
            version = sticky_pick(split, key.decode("latin-1"))
            return next(t for t in self.targets if t.version == version)
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

    def resolve(
        self, match: Match, draw: float, headers: dict[bytes, bytes] | None = None
    ) -> Target | None:
        if match.tag is not None:
            return self.tags.get((match.contract, match.tag))
        entry = self.routes.get(match.contract)
        if entry is None:
            return None
        key = None
        if entry.sticky_header is not None and headers is not None:
            key = headers.get(entry.sticky_header)
        return entry.pick(draw, key)


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
            sticky = meta.get("annotations", {}).get(STICKY_HEADER_ANNOTATION)
            # Stickiness hashes over the whole split; a target whose Service is missing
            # leaves a partial split, which is served by weight alone until it is back.
            whole = cumulative[-1] == 100
            header = sticky.lower().encode("latin-1") if sticky and whole else None
            table[contract] = RouteEntry(tuple(targets), cumulative, header)
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
