"""The builders' objects as text for `--dry-run`: one multi-document YAML, and the `kn` /
`kubectl` commands that make the same objects. Pure: no cluster and no Kubernetes client,
so the CLI renders them without either."""

from __future__ import annotations

import shlex
from typing import Any

import yaml

from forestflow_control_plane.knative.resources import SECURITY_CONTEXT

# Who applies: the knative platform's server-side apply and the kubectl command below, so
# either one can take over the fields the other set.
FIELD_MANAGER = "forestflow"


def manifests_yaml(objects: list[dict[str, Any]]) -> str:
    """The objects as one multi-document YAML, keys in the builders' (fixed) order."""
    return yaml.safe_dump_all(objects, sort_keys=False)


# What kn_commands can say of a Service; anything else in one makes it refuse rather than lie.
_KN_TEMPLATE_SPEC = {"containers", "containerConcurrency", "timeoutSeconds"}
_KN_CONTAINER = {"name", "image", "ports", "env", "readinessProbe", "resources", "securityContext"}


def kn_commands(objects: list[dict[str, Any]]) -> list[str]:
    """The shell commands that make the same objects, for `--dry-run`. A Service is one
    `kn service create --force` (create or replace); kn names its container user-container
    where the manifest says runtime, and nothing reads that name. kn cannot make a
    standalone Route (`kn route` only lists and describes, and `kn service update --traffic`
    splits one Service's own revisions), so the Route is the same server-side apply through
    kubectl."""
    return [_kn_service(o) if o["kind"] == "Service" else _kubectl_apply(o) for o in objects]


def _kn_service(service: dict[str, Any]) -> str:
    meta, template = service["metadata"], service["spec"]["template"]
    spec = template["spec"]
    container = spec["containers"][0]
    extra = (spec.keys() - _KN_TEMPLATE_SPEC) | (container.keys() - _KN_CONTAINER)
    if len(spec["containers"]) != 1 or extra:
        raise ValueError(f"kn_commands: Service {meta['name']}: kn cannot express {sorted(extra)}")
    port = container["ports"][0]
    flags = [
        ("--namespace", meta["namespace"]),
        ("--image", container["image"]),
        ("--port", f"{port['name']}:{port['containerPort']}"),
        *_split_flags("label", meta, template["metadata"]),
        *_split_flags("annotation", meta, template["metadata"]),
        ("--revision-name", template["metadata"]["name"]),
        *(("--env", f"{e['name']}={e['value']}") for e in container.get("env", [])),
        *(
            (f"--{flag}", ",".join(f"{k}={v}" for k, v in amounts.items()))
            for flag, amounts in (
                ("request", container.get("resources", {}).get("requests")),
                ("limit", container.get("resources", {}).get("limits")),
            )
            if amounts
        ),
        ("--concurrency-limit", str(spec["containerConcurrency"])),
        ("--timeout", str(spec["timeoutSeconds"])),
        *_security_flags(meta["name"], container.get("securityContext")),
        *_probe_flags(container["readinessProbe"]),
    ]
    lines = [f"kn service create {shlex.quote(meta['name'])} --force"]
    lines += [f"{flag} {shlex.quote(value)}" for flag, value in flags]
    return " \\\n  ".join(lines)


def _split_flags(
    what: str, service_meta: dict[str, Any], revision_meta: dict[str, Any]
) -> list[tuple[str, str]]:
    """`--label` for the labels the Service and its revision share, `--label-service` and
    `--label-revision` for the others (likewise `--annotation`)."""
    service = service_meta.get(f"{what}s") or {}
    revision = revision_meta.get(f"{what}s") or {}
    flags = []
    for key, value in service.items():
        shared = revision.get(key) == value
        flags.append((f"--{what}" if shared else f"--{what}-service", f"{key}={value}"))
    flags += [
        (f"--{what}-revision", f"{key}={value}")
        for key, value in revision.items()
        if service.get(key) != value
    ]
    return flags


def _security_flags(name: str, context: dict[str, Any] | None) -> list[tuple[str, str]]:
    """kn says one security context, `strict`, the restricted profile the builders set."""
    if context is None:
        return []
    if context != SECURITY_CONTEXT:
        raise ValueError(f"kn_commands: Service {name}: kn cannot express {context}")
    return [("--security-context", "strict")]


def _probe_flags(probe: dict[str, Any]) -> list[tuple[str, str]]:
    get = probe["httpGet"]
    handler = f"{get.get('scheme', 'HTTP').lower()}:{get.get('host', '')}:{get.get('port', '')}"
    options = ",".join(
        f"{key[0].upper()}{key[1:]}={value}" for key, value in probe.items() if key != "httpGet"
    )
    flags = [("--probe-readiness", f"{handler}:{get['path']}")]
    return [*flags, ("--probe-readiness-opts", options)] if options else flags


def _kubectl_apply(obj: dict[str, Any]) -> str:
    manifest = yaml.safe_dump(obj, sort_keys=False)
    return (
        f"kubectl apply --server-side --field-manager={FIELD_MANAGER} --force-conflicts "
        f"-f - <<'EOF'\n{manifest}EOF"
    )
