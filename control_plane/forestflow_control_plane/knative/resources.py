"""Desired state -> serving.knative.dev/v1 objects, as plain dicts.

Pure builders: the knative platform applies these objects to a cluster, and the local
platform serves the very same objects, so one set of scenario tests covers both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Set
from decimal import Decimal
from typing import Any

import orjson

from forestflow_control_plane import names
from forestflow_control_plane.knative.annotations import (
    API_VERSION,
    CONTRACT_LABEL,
    INITIAL_SCALE,
    MAX_SCALE,
    METRIC,
    MIN_SCALE,
    PROGRESS_DEADLINE,
    RETENTION,
    REVISION_LABEL,
    STICKY_HEADER_ANNOTATION,
    TARGET,
    VERSION_LABEL,
    VISIBILITY_LABEL,
    WINDOW,
)
from forestflow_control_plane.policies.desired import DesiredState, DesiredVariant

RUNTIME_PORT = 8080
PROGRESS_DEADLINE_S = 600
# knative/config-defaults.yaml's max-revision-timeout-seconds.
MAX_REQUEST_TIMEOUT_S = 3600
SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def request_timeout_s(spec: dict[str, Any]) -> int:
    """How long Knative lets a request take, the activator's wait for a pod from zero
    included: the longest a revision may take to become ready (a model's load) plus the
    runtime's own batching timeout. The batching timeout alone would fail the first requests
    of any model that loads for longer than it."""
    deadline = spec["scaling"].get("progress_deadline_seconds", PROGRESS_DEADLINE_S)
    total = int(deadline) + max(1, -(-spec["batching"]["timeout_ms"] // 1000))
    return min(total, MAX_REQUEST_TIMEOUT_S)


def contract_of(obj: dict[str, Any]) -> str | None:
    """The contract an object belongs to, by its label; None for an object not ForestFlow's."""
    label = (obj["metadata"].get("labels") or {}).get(CONTRACT_LABEL)
    return None if label is None else label.replace(".", "/", 1)


def make_service(
    contract: str,
    contract_spec: dict[str, Any],
    variant: DesiredVariant,
    image: str,
    platform_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """`platform_env`: what every runtime gets from the platform rather than from its
    variant (the Redis URL pods reach)."""
    namespace, _ = names.split_contract(contract)
    service = names.service_name(contract, variant.version)
    scaling = variant.spec["scaling"]
    labels = {CONTRACT_LABEL: names.contract_label(contract), VERSION_LABEL: variant.version}
    template: dict[str, Any] = {
        "metadata": {
            "labels": {**labels, REVISION_LABEL: str(variant.spec.get("revision", 1))},
            "annotations": _scaling_annotations(scaling),
        },
        "spec": {
            "containerConcurrency": scaling.get("container_concurrency", 0),
            "timeoutSeconds": request_timeout_s(variant.spec),
            "containers": [
                {
                    "name": "runtime",
                    "image": image,
                    "ports": [{"containerPort": RUNTIME_PORT, "name": "http1"}],
                    "env": [
                        *_runtime_env(contract, contract_spec, variant),
                        *({"name": k, "value": v} for k, v in sorted((platform_env or {}).items())),
                    ],
                    "readinessProbe": {
                        "httpGet": {"path": f"/v2/models/{names.model_name(contract)}/ready"},
                        "periodSeconds": 1,
                        # Knative's defaults, sent so that a re-apply matches what it stored.
                        "successThreshold": 1,
                        "failureThreshold": 3,
                        "timeoutSeconds": 1,
                    },
                    "resources": _resources(variant.spec["resources"]),
                    # The restricted profile, explicit: Knative adds it only while
                    # secure-pod-defaults is on, and a revision's template must not change
                    # under its name when an operator flips that flag.
                    "securityContext": SECURITY_CONTEXT,
                }
            ],
        },
    }
    # Knative refuses a changed template under an unchanged revision name: the name is
    # derived from the template itself, so any change (new weights, a new sampling rate for
    # a shadow) is a new revision and an unchanged one is the same.
    template["metadata"]["name"] = names.revision_name(service, _digest(template))
    # Only the contract's Route is public: a variant's own URL would bypass its split.
    service_labels = {**labels, VISIBILITY_LABEL: "cluster-local"}
    return {
        "apiVersion": API_VERSION,
        "kind": "Service",
        "metadata": {"name": service, "namespace": namespace, "labels": service_labels},
        "spec": {"template": template},
    }


def routable_split(traffic: Mapping[str, int], routable: Set[str]) -> dict[str, int] | None:
    """The split a Route can carry now, over the `routable` versions only: Knative programs
    a Route all at once or not at all, and refuses it while any target's revision is not
    Ready, so a version with no Ready revision keeps its share away from the Route (the
    others carry it, in proportion, largest remainders first) and gets no tag yet. None
    when no routable version has a share: the Route stays as it is until one does."""
    shares = {v: p for v, p in traffic.items() if v in routable}
    total = sum(shares.values())
    if total == 0:
        return None
    if all(v in routable for v, p in traffic.items() if p > 0):
        return shares
    scaled = {v: p * 100 / total for v, p in shares.items()}
    split = {v: int(x) for v, x in scaled.items()}
    by_remainder = sorted(scaled, key=lambda v: (split[v] - scaled[v], v))
    for version in by_remainder[: 100 - sum(split.values())]:
        split[version] += 1
    return split


def make_route(state: DesiredState, revisions: Mapping[str, str]) -> dict[str, Any] | None:
    """The contract's standalone Route, with a tag per version, targeting the revision
    `revisions` names for it; a version it does not name is not routable yet (see
    routable_split). None while no variant has traffic, or no routable one has."""
    split = routable_split(state.traffic, revisions.keys())
    if split is None:
        return None
    namespace, name = names.split_contract(state.contract)
    targets = [
        {"revisionName": revisions[version], "percent": percent, "tag": version}
        for version, percent in split.items()
    ]
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {CONTRACT_LABEL: names.contract_label(state.contract)},
    }
    if state.sticky_header:
        metadata["annotations"] = {STICKY_HEADER_ANNOTATION: state.sticky_header}
    return {"apiVersion": API_VERSION, "kind": "Route", "metadata": metadata,
            "spec": {"traffic": targets}}


def make_objects(
    state: DesiredState, image: str, platform_env: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """The Services, then the Route with every desired revision as a target."""
    services = [
        make_service(state.contract, state.contract_spec, v, image, platform_env)
        for v in state.variants
    ]
    route = make_route(state, revision_names(services))
    return [*services, route] if route else services


def revision_names(services: list[dict[str, Any]]) -> dict[str, str]:
    """Version -> the name of the revision its Service's template makes."""
    return {
        s["metadata"]["labels"][VERSION_LABEL]: s["spec"]["template"]["metadata"]["name"]
        for s in services
    }


def _runtime_env(
    contract: str, contract_spec: dict[str, Any], variant: DesiredVariant
) -> list[dict[str, str]]:
    model = variant.spec["model"]
    batching = variant.spec["batching"]
    env = {
        "FF_CONTRACT": contract,
        "FF_VARIANT": variant.version,
        "FF_MODEL_NAME": names.model_name(contract),
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
        **_stream_env(contract, variant),
        "FF_INPUTS": orjson.dumps(contract_spec["inputs"]).decode(),
        "FF_OUTPUTS": orjson.dumps(contract_spec["outputs"]).decode(),
    }
    return [{"name": k, "value": v} for k, v in env.items() if v != ""]


def _payload_rate(variant: DesiredVariant) -> str:
    """Its own payload logging rate, or more when the contract's shadows need more."""
    return str(variant.payload_rate) if variant.payload_rate else ""


def _payload_max_length(variant: DesiredVariant) -> str:
    max_length = (variant.spec.get("payload_logging") or {}).get("max_length")
    return str(max_length) if variant.payload_rate and max_length else ""


def _stream_env(contract: str, variant: DesiredVariant) -> dict[str, str]:
    """The stream consumer's settings, every one explicit; none when streaming is off, or for
    a shadow, which serves no client and so must not take the contract's messages."""
    streaming = variant.spec.get("streaming")
    if not streaming or variant.shadow:
        return {}
    return {
        "FF_STREAM_INPUT": streaming["input_stream"],
        "FF_STREAM_OUTPUT": streaming.get("output_stream") or names.stream_out_key(contract),
        "FF_STREAM_DEAD_LETTER": (
            streaming.get("dead_letter_stream") or names.stream_dead_key(contract)
        ),
        "FF_STREAM_GROUP": streaming["group"],
        "FF_STREAM_MAX_FAILURES": str(streaming["max_failures"]),
    }


def _resources(resources: dict[str, Any]) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    if resources.get("cpu"):
        limits["cpu"] = resources["cpu"]
    if resources.get("memory"):
        limits["memory"] = resources["memory"]
    if resources.get("gpu"):
        limits["nvidia.com/gpu"] = resources["gpu"]
    return {"limits": limits, "requests": dict(limits)} if limits else {}


def _scaling_annotations(scaling: dict[str, Any]) -> dict[str, str]:
    """The revision's autoscaler settings; the optional ones only when model.yaml sets them.
    A spec stored before a setting existed reads as its default."""
    notes = {
        METRIC: scaling.get("metric", "concurrency"),
        TARGET: str(scaling["target_concurrency"]),
        MIN_SCALE: str(scaling["min_replicas"]),
        MAX_SCALE: str(scaling["max_replicas"]),
    }
    if scaling.get("initial_replicas") is not None:
        notes[INITIAL_SCALE] = str(scaling["initial_replicas"])
    if scaling.get("window_seconds") is not None:
        notes[WINDOW] = f"{scaling['window_seconds']}s"
    notes[RETENTION] = _duration(
        scaling["retention_seconds"]
    )
    deadline = scaling.get("progress_deadline_seconds", PROGRESS_DEADLINE_S)
    notes[PROGRESS_DEADLINE] = f"{deadline}s"
    return notes


def _duration(seconds: float) -> str:
    """A Go duration: `300s`, `0.5s`, never an exponent (`1e-05s` does not parse)."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{Decimal(repr(float(seconds))):f}s"


def _digest(template: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(template, option=orjson.OPT_SORT_KEYS)).hexdigest()[:7]
