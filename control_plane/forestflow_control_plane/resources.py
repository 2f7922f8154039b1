"""Desired state -> serving.knative.dev/v1 objects, as plain dicts.

Pure builders: the knative platform applies these objects to a cluster, and the local
platform serves the very same objects, so one set of scenario tests covers both.
"""

from __future__ import annotations

from typing import Any

import orjson

from forestflow_control_plane import names
from forestflow_control_plane.desired import DesiredState, DesiredVariant

API_VERSION = "serving.knative.dev/v1"
CONTRACT_LABEL = "forestflow.dev/contract"
VERSION_LABEL = "forestflow.dev/version"
# Knative routes by percent only; ForestFlow's gateway reads this to pin clients by a header.
STICKY_HEADER_ANNOTATION = "forestflow.dev/sticky-header"
RUNTIME_PORT = 8080
PROGRESS_DEADLINE_S = 600


def model_name(contract: str) -> str:
    """The name the runtime serves the model under: the contract's own name."""
    return names.split_contract(contract)[1]


def make_service(
    contract: str, contract_spec: dict[str, Any], variant: DesiredVariant, image: str
) -> dict[str, Any]:
    namespace, _ = names.split_contract(contract)
    service = names.service_name(contract, variant.version)
    scaling = variant.spec["scaling"]
    batching = variant.spec["batching"]
    labels = {CONTRACT_LABEL: contract.replace("/", "."), VERSION_LABEL: variant.version}
    return {
        "apiVersion": API_VERSION,
        "kind": "Service",
        "metadata": {"name": service, "namespace": namespace, "labels": labels},
        "spec": {
            "template": {
                "metadata": {
                    "name": names.revision_name(service, variant.spec.get("revision", 1)),
                    "labels": dict(labels),
                    "annotations": {
                        "autoscaling.knative.dev/metric": "concurrency",
                        "autoscaling.knative.dev/target": str(scaling["target_concurrency"]),
                        "autoscaling.knative.dev/min-scale": str(scaling["min_replicas"]),
                        "autoscaling.knative.dev/max-scale": str(scaling["max_replicas"]),
                        "autoscaling.knative.dev/scale-to-zero-pod-retention-period": (
                            _duration(scaling["retention_seconds"])
                        ),
                        "serving.knative.dev/progress-deadline": f"{PROGRESS_DEADLINE_S}s",
                    },
                },
                "spec": {
                    "containerConcurrency": 0,
                    "timeoutSeconds": max(1, -(-batching["timeout_ms"] // 1000)),
                    "containers": [
                        {
                            "name": "runtime",
                            "image": image,
                            "ports": [{"containerPort": RUNTIME_PORT, "name": "http1"}],
                            "env": _runtime_env(contract, contract_spec, variant),
                            "readinessProbe": {
                                "httpGet": {"path": f"/v2/models/{model_name(contract)}/ready"},
                                "periodSeconds": 1,
                            },
                            "resources": _resources(variant.spec["resources"]),
                        }
                    ],
                },
            }
        },
    }


def make_route(state: DesiredState) -> dict[str, Any] | None:
    """The contract's standalone Route, with a tag per version; None while no variant has
    traffic."""
    if sum(state.traffic.values()) == 0:
        return None
    namespace, name = names.split_contract(state.contract)
    revisions = {v.version: v.spec.get("revision", 1) for v in state.variants}
    targets = [
        {
            "revisionName": names.revision_name(
                names.service_name(state.contract, version), revisions[version]
            ),
            "percent": percent,
            "tag": version,
        }
        for version, percent in state.traffic.items()
    ]
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {CONTRACT_LABEL: state.contract.replace("/", ".")},
    }
    if state.sticky_header:
        metadata["annotations"] = {STICKY_HEADER_ANNOTATION: state.sticky_header}
    return {"apiVersion": API_VERSION, "kind": "Route", "metadata": metadata,
            "spec": {"traffic": targets}}


def make_objects(state: DesiredState, image: str) -> list[dict[str, Any]]:
    services = [make_service(state.contract, state.contract_spec, v, image) for v in state.variants]
    route = make_route(state)
    return [*services, route] if route else services


def _runtime_env(
    contract: str, contract_spec: dict[str, Any], variant: DesiredVariant
) -> list[dict[str, str]]:
    model = variant.spec["model"]
    batching = variant.spec["batching"]
    env = {
        "FF_CONTRACT": contract,
        "FF_VARIANT": variant.version,
        "FF_MODEL_NAME": model_name(contract),
        "FF_MODEL_URI": model["uri"],
        "FF_MODEL_FORMAT": model["format"],
        "FF_MODEL_CLASS": model.get("class") or "",
        "FF_MODEL_CODE_PATH": model.get("python_path") or "",
        "FF_ALLOW_PICKLE": "true" if model.get("allow_pickle") else "false",
        "FF_DEVICE": variant.spec["device"],
        "FF_CPU_THREADS": str(variant.spec.get("cpu_threads") or ""),
        "FF_PORT": str(RUNTIME_PORT),
        "FF_MAX_BATCH_SIZE": str(batching["max_batch_size"]),
        "FF_BATCH_WINDOW_MS": str(batching["window_ms"]),
        "FF_MAX_QUEUE": str(batching["max_queue"]),
        "FF_REQUEST_TIMEOUT_MS": str(batching["timeout_ms"]),
        "FF_PAYLOAD_SAMPLE_RATE": _payload_rate(variant),
        "FF_PAYLOAD_MAX_LENGTH": _payload_max_length(variant),
        "FF_INPUTS": orjson.dumps(contract_spec["inputs"]).decode(),
        "FF_OUTPUTS": orjson.dumps(contract_spec["outputs"]).decode(),
    }
    return [{"name": k, "value": v} for k, v in env.items() if v != ""]


def _payload_rate(variant: DesiredVariant) -> str:
    rate = (variant.spec.get("payload_logging") or {}).get("sample_rate", 0.0)
    return str(rate) if rate else ""


def _payload_max_length(variant: DesiredVariant) -> str:
    logging = variant.spec.get("payload_logging") or {}
    return str(logging["max_length"]) if logging.get("sample_rate") else ""


def _resources(resources: dict[str, Any]) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    if resources.get("cpu"):
        limits["cpu"] = resources["cpu"]
    if resources.get("memory"):
        limits["memory"] = resources["memory"]
    if resources.get("gpu"):
        limits["nvidia.com/gpu"] = resources["gpu"]
    return {"limits": limits, "requests": dict(limits)} if limits else {}


def _duration(seconds: float) -> str:
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{seconds}s"
