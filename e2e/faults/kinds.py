"""The kinds of rollout a fault lands in, each as the model.yaml a user would deploy, built
from the example MLP: a canary, a gated canary, an in-place swap whose weights arrive over a
slow link, a shadow, and a replacement that expires what it replaced."""

from __future__ import annotations

import copy
import http.server
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KINDS = ("canary", "gated", "in_place", "shadow", "expiry")
CANARY = {"policy": "canary", "steps": [50, 100], "hold_seconds": 1}
# Wide enough that a healthy candidate passes on this noisy machine; a gate that fails
# rolls back, which ends a rollout as surely as a pass.
GATE = {"min_requests": 5, "recheck_seconds": 0.5, "margin": 10}
SLO = {"p95_latency_ms": 1000}


@dataclass(frozen=True)
class Rollout:
    kind: str
    version: str
    model_file: Path
    uri: str | None = None  # in_place: the artifact it swaps in


class SlowFiles:
    """A file server for in-place weights: a file is answered no sooner than the moment
    `hold` set for it, as over a slow link, and at once from then on, so a replica started
    later loads the same weights quickly."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._ready: dict[str, float] = {}
        ready = self._ready

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self) -> None:
                wait = ready.get(self.path.lstrip("/"), 0.0) - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                super().do_GET()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def hold(self, name: str, seconds: float) -> str:
        """Answer `name` only `seconds` from now; its URL."""
        self._ready[name] = time.monotonic() + seconds
        return f"{self.url}/{name}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A replica killed mid-fetch hangs up: nothing to report. Anything else is."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Maker:
    """Model files for each kind, new versions numbered on from v2. `weights` are files
    beside the example's model.yaml, built from other seeds; each in-place swap serves a
    fresh copy of one of them."""

    def __init__(self, example: Path, weights: list[str], files: SlowFiles) -> None:
        self._example = example
        self._weights = weights
        self._files = files
        self._next = 2
        self._swaps = 0
        self._specs: dict[str, dict[str, Any]] = {}  # what each version was deployed with

    def make(self, kind: str, serving: str, fetch_s: float) -> Rollout:
        """A `kind` rollout over the version `serving` now; an in-place swap's weights take
        `fetch_s` to arrive."""
        spec: dict[str, Any] = yaml.safe_load(self._example.read_text())
        if kind == "in_place":  # the serving version as deployed, but for its weights
            self._swaps += 1
            name = f"swap-{self._swaps}.safetensors"
            source = self._weights[self._swaps % len(self._weights)]
            shutil.copy(self._example.parent / source, self._files.root / name)
            uri = self._files.hold(name, fetch_s)
            spec = copy.deepcopy(self._specs.get(serving, spec))
            spec["variant"]["model"]["uri"] = uri
            spec["rollout"] = {**spec.get("rollout", {}), "strategy": "in_place"}
            self._specs[serving] = spec
            return Rollout(kind, serving, self._write(spec, f"{kind}-{self._swaps}"), uri)
        version = f"v{self._next}"
        self._next += 1
        spec["variant"]["version"] = version
        spec["variant"]["model"]["uri"] = self._weights[self._next % len(self._weights)]
        spec["rollout"] = {"phase_in": {"policy": "immediate"}}
        if kind == "canary":
            spec["rollout"] = {"phase_in": CANARY}
        elif kind == "gated":
            spec["rollout"] = {"phase_in": CANARY, "gate": GATE}
            spec["slo"] = SLO
        elif kind == "shadow":
            spec["shadow"] = {"sample_rate": 1.0}
        elif kind == "expiry":
            spec["expiry"] = {"on_replacement": True}
        self._specs[version] = spec
        return Rollout(kind, version, self._write(spec, version))

    def _write(self, spec: dict[str, Any], stem: str) -> Path:
        target = self._example.with_name(f"{stem}.yaml")
        target.write_text(yaml.safe_dump(spec))
        return target
