"""knative/control-plane.yaml as its tests read it: its documents by kind and name, and what
each workload's container runs, the image's ENTRYPOINT and CMD applied."""

from __future__ import annotations

import json
from typing import Any

import yaml

from tests.support import REPO

MANIFEST = REPO / "knative" / "control-plane.yaml"
DOCKERFILE = REPO / "control_plane" / "Dockerfile"
NAMESPACE = "forestflow"


def documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d is not None]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in of_kind(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} in {MANIFEST.name}"
    return found[0]


def image_default(instruction: str) -> list[str]:
    """The Dockerfile's ENTRYPOINT or CMD, in exec form."""
    lines = [
        line for line in DOCKERFILE.read_text().splitlines() if line.startswith(instruction + " ")
    ]
    assert len(lines) == 1, f"{instruction}: {lines}"
    argv = json.loads(lines[0].removeprefix(instruction + " "))
    assert isinstance(argv, list)
    return [str(a) for a in argv]


def argv(container: dict[str, Any]) -> list[str]:
    """What the container runs: `command` replaces the image's ENTRYPOINT and drops its CMD;
    `args` replaces CMD."""
    command = container.get("command") or image_default("ENTRYPOINT")
    default = [] if "command" in container else image_default("CMD")
    return [*command, *(container.get("args") or default)]


def the_container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, workload["metadata"]["name"]
    return dict(containers[0])


def deployments() -> dict[str, dict[str, Any]]:
    """Each Deployment by the process it runs."""
    return {argv(the_container(d))[-1]: d for d in of_kind("Deployment")}
