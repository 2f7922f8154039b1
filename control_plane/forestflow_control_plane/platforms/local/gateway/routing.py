"""Which variant a request goes to: pure functions over the Knative Route and Service
objects the local platform stores, so routing is tested without a network.

A contract answers on Host `<name>.<namespace>.<domain>` and on `/contracts/<ns>/<name>/...`
(split by its Route's percents); a version its Route tags on Host `<tag>-<name>.<ns>.<domain>`;
and every Service, routed or not (a shadow), on Host `<service>.<ns>.<domain>` and on
`/services/<ns>/<service>/...`, as Knative gives each Service a route of its own.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from forestflow_control_plane import names
from forestflow_control_plane.knative.annotations import STICKY_HEADER_ANNOTATION, VERSION_LABEL
from forestflow_control_plane.policies.routing import sticky_pick

CONTRACT_PREFIX = "/contracts/"
SERVICE_PREFIX = "/services/"
GOLDEN = (math.sqrt(5) - 1) / 2


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


class Draws:
    """Where each request falls in its contract's split: the n-th request of a contract draws
    frac(start + n * 0.618...), the golden ratio's conjugate. Such draws cover [0, 1) as
    evenly as a sequence can (a Kronecker sequence), so over any run of requests a Route's
    percents hold to a request or two, where random draws stray by about √n requests (one
    point over 2,000 at 70/30, at times three), and a 1 % canary might see none of its first
    200."""

    def __init__(self, start: float = 0.0) -> None:
        self._start = start
        self._next: dict[str, float] = {}

    def draw(self, contract: str) -> float:
        value = self._next.get(contract, self._start)
        self._next[contract] = (value + GOLDEN) % 1.0
        return value

    def forget(self, keep: set[str]) -> None:
        """Drop the sequences of contracts no longer routed."""
        self._next = {k: v for k, v in self._next.items() if k in keep}


@dataclass(frozen=True)
class Match:
    """`name` is `namespace/name` of a contract, or of a Service when `service` is set."""

    name: str
    tag: str | None
    path: str
    service: bool = False


@dataclass(frozen=True)
class RouteTable:
    """Contracts' Routes, their tags, and every Service by key with the percent its
    contract's Route gives it (0 when none)."""

    routes: dict[str, RouteEntry]
    tags: dict[tuple[str, str], Target]
    services: dict[str, Target]

    def refine(self, match: Match) -> Match:
        """Read a name that is no contract's: a `<tag>-<name>` tag URL (a tag URL exists only
        when the Route declares that tag), else a Service's own name."""
        if match.service or match.tag is not None or match.name in self.routes:
            return match
        namespace, name = names.split_contract(match.name)
        dash = name.find("-")
        while dash > 0:
            contract = f"{namespace}/{name[dash + 1 :]}"
            if (contract, name[:dash]) in self.tags:
                return Match(contract, name[:dash], match.path)
            dash = name.find("-", dash + 1)
        if match.name in self.services:
            return Match(match.name, None, match.path, service=True)
        return match

    def resolve(
        self, match: Match, draws: Draws, headers: dict[bytes, bytes] | None = None
    ) -> Target | None:
        if match.service:
            return self.services.get(match.name)
        if match.tag is not None:
            return self.tags.get((match.name, match.tag))
        entry = self.routes.get(match.name)
        if entry is None:
            return None
        if entry.sticky_header is not None and headers is not None:
            key = headers.get(entry.sticky_header)
            if key is not None:
                return entry.pick(0.0, key)
        return entry.pick(draws.draw(match.name))


def build_table(routes: Iterable[dict[str, Any]], services: Iterable[dict[str, Any]]) -> RouteTable:
    known = [entry for entry in map(_service_entry, services) if entry is not None]
    revision_to_service = {revision: key for key, revision, _ in known}
    table: dict[str, RouteEntry] = {}
    tags: dict[tuple[str, str], Target] = {}
    percents: dict[str, int] = {}
    for route in routes:
        meta = route["metadata"]
        contract = f"{meta['namespace']}/{meta['name']}"
        targets = []
        for t in route["spec"]["traffic"]:
            service = revision_to_service.get((meta["namespace"], t["revisionName"]))
            if service is None:
                continue
            target = Target(service, t.get("tag", ""), int(t["percent"]))
            percents[service] = percents.get(service, 0) + target.percent
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
    by_key = {key: Target(key, version, percents.get(key, 0)) for key, _, version in known}
    return RouteTable(table, tags, by_key)


def match_request(host: str, path: str, domain: str) -> Match | None:
    """`/contracts/<ns>/<name>/<rest>`, `/services/<ns>/<service>/<rest>` or Host
    `<name>.<ns>.<domain>` (a contract, a tag URL or a Service: RouteTable.refine tells)."""
    for prefix, service in ((CONTRACT_PREFIX, False), (SERVICE_PREFIX, True)):
        if path.startswith(prefix):
            parts = path[len(prefix) :].split("/", 2)
            if len(parts) < 2 or not parts[0] or not parts[1]:
                return None
            rest = "/" + parts[2] if len(parts) == 3 else "/"
            return Match(f"{parts[0]}/{parts[1]}", None, rest, service)
    hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    suffix = "." + domain
    if not hostname.endswith(suffix):
        return None
    labels = hostname[: -len(suffix)].split(".")
    if len(labels) != 2:
        return None
    name, namespace = labels
    return Match(f"{namespace}/{name}", None, path)


def _service_entry(service: dict[str, Any]) -> tuple[str, tuple[str, str], str] | None:
    """(key, (namespace, revision), version) of a Service; None for one too malformed to
    route to, which is left out rather than failing every other route."""
    try:
        meta = service["metadata"]
        revision = service["spec"]["template"]["metadata"]["name"]
        return (
            names.object_key(meta["namespace"], meta["name"]),
            (meta["namespace"], revision),
            meta["labels"][VERSION_LABEL],
        )
    except (KeyError, TypeError):
        return None
