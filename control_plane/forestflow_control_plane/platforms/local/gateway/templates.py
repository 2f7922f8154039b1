"""What a replica is started from: a Knative Service's template read as the runtime's spec,
and whether a running replica's spec is older than its Service's now."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from forestflow_control_plane.platforms.local.supervisor import RuntimeSpec

# What an in-place swap changes in the template after loading it into every running replica.
SWAPPED_IN_PLACE = frozenset({"FF_MODEL_URI", "FF_MODEL_FORMAT"})


def runtime_spec(key: str, service: dict[str, Any]) -> RuntimeSpec:
    container = service["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    ready = container.get("readinessProbe", {}).get("httpGet", {}).get("path", "/v2/health/ready")
    return RuntimeSpec(service=key, env=env, ready_path=ready)


def stale(started: RuntimeSpec, wanted: RuntimeSpec) -> bool:
    """A replica started from `started` is older than the template `wanted`, other than in
    what an in-place swap has loaded into it since."""
    return started != wanted and _beyond_swaps(started) != _beyond_swaps(wanted)


def _beyond_swaps(spec: RuntimeSpec) -> RuntimeSpec:
    env = {k: v for k, v in spec.env.items() if k not in SWAPPED_IN_PLACE}
    return replace(spec, env=env)
