"""Path routing: a table of (method, pattern) -> handler, matched in order, nothing more."""

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from forestflow_runtime.http import Request, Response

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Route:
    """protocol labels latency metrics; inference routes also watch for client disconnects."""

    method: str
    pattern: re.Pattern[str]
    handler: Handler
    protocol: str = ""

    @property
    def is_inference(self) -> bool:
        return bool(self.protocol)


def route(method: str, path: str, handler: Handler, protocol: str = "") -> Route:
    """path uses {name} for one segment, which holds neither '/' nor ':' (v1's ':predict')."""
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/:]+)", path)
    return Route(method, re.compile(f"^{regex}$"), handler, protocol)


_CACHE_SIZE = 256


class Router:
    """Matches cost a few regex scans; the inference path asks for the same few paths over and
    over, so successful matches are remembered (up to _CACHE_SIZE of them, then no more)."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes
        self._found: dict[tuple[str, str], tuple[Route, dict[str, str]]] = {}

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The first route whose path matches; None if no path does. A wrong method is a 405."""
        found = self._found.get((method, path))
        if found is not None:
            return found[0], dict(found[1])
        found = self._scan(method, path)
        if found is not None and len(self._found) < _CACHE_SIZE:
            self._found[(method, path)] = found[0], dict(found[1])
        return found

    def _scan(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        path_matched = False
        for candidate in self.routes:
            found = candidate.pattern.match(path)
            if found is None:
                continue
            if candidate.method == method:
                return candidate, found.groupdict()
            path_matched = True
        if path_matched:
            raise MethodNotAllowed(method, path)
        return None


class MethodNotAllowed(Exception):
    def __init__(self, method: str, path: str) -> None:
        super().__init__(f"{method} is not allowed on {path}")
