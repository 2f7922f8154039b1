"""Admission: every Knative object is judged as a cluster would judge it, before any platform
applies it, so a bad object fails here with its field named instead of at the API server.

Two layers, in the cluster's order: the upstream CRD's openAPIV3Schema (types; the files in
`crds/` are knative-v1.23.0's), then the rules Knative's validating webhook adds
(knative/serving `pkg/apis/serving/v1/*_validation.go`, `pkg/apis/serving/k8s_validation.go`,
`pkg/apis/autoscaling/annotation_validation.go`). The webhook never sees an object the
schema refused, so its rules run only on well-typed objects.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources
from typing import Any

import jsonschema
import yaml

from forestflow_control_plane.knative.annotations import (
    ALIASES,
    API_VERSION,
    CLASS,
    HPA,
    INITIAL_SCALE,
    KPA,
    MAX_SCALE,
    METRIC,
    MIN_SCALE,
    PROGRESS_DEADLINE,
    RETENTION,
    SERVICE_LABEL,
    TARGET,
    VISIBILITY_LABEL,
    WINDOW,
)
from forestflow_control_plane.knative.values import (
    INT32_MAX,
    dns1035_label,
    dns1123_label,
    go_duration,
    int32,
    label_value,
    number,
    qualified_name,
)
from forestflow_control_plane.names import DNS_LABEL_MAX

KINDS = ("Service", "Route")
KPA_METRICS = ("concurrency", "rps")
WINDOW_MIN, WINDOW_MAX = Fraction(6), Fraction(3600)
TARGET_MIN = Fraction(1, 100)
# queue-proxy and profiling ports, the queue-proxy's container name and the env it sets.
RESERVED_PORTS = frozenset({8008, 8012, 8013, 8022, 9090, 9091})
RESERVED_CONTAINER = "queue-proxy"
RESERVED_ENV = frozenset({"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"})
PORT_NAMES = ("", "h2c", "http1")

Path = tuple[str | int, ...]
Finding = tuple[Path, str]


@dataclass(frozen=True)
class ClusterConfig:
    """The cluster settings the webhook's verdict depends on, as ForestFlow's
    knative/config-autoscaler.yaml and config-defaults.yaml set them (a test keeps them equal)."""

    allow_zero_initial_scale: bool = True
    max_scale_limit: int = 100
    max_revision_timeout_seconds: int = 3600
    container_concurrency_max_limit: int = 1000
    allow_container_concurrency_zero: bool = True


CLUSTER = ClusterConfig()


@dataclass(frozen=True)
class Problem:
    obj: str
    path: Path
    message: str

    @property
    def field(self) -> str:
        return render(self.path)

    def __str__(self) -> str:
        return f"{self.obj}: {self.field}: {self.message}"


class InvalidObjectError(ValueError):
    """Objects a cluster would refuse; `problems` lists every one, each naming its object
    (`Route fraud/scoring`) and field (`spec.traffic[1].percent`)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


def check_all(objects: Iterable[dict[str, Any]], cluster: ClusterConfig = CLUSTER) -> None:
    """Raise InvalidObjectError naming every problem of every object, not only the first."""
    found = [p for obj in objects for p in problems(obj, cluster)]
    if found:
        raise InvalidObjectError(found)


def problems(obj: dict[str, Any], cluster: ClusterConfig = CLUSTER) -> list[Problem]:
    """Every problem of one object: the schema's, or when it is well-typed, the webhook's."""
    where = describe(obj)
    kind = obj.get("kind")
    if obj.get("apiVersion") != API_VERSION or kind not in KINDS:
        return [Problem(where, ("kind",), f"ForestFlow applies {API_VERSION} Service or Route")]
    schema = [Problem(where, path, message) for path, message in schema_errors(obj)]
    if schema:
        return schema
    rules = _service if kind == "Service" else _route
    return [Problem(where, path, message) for path, message in rules(obj, cluster)]


def describe(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    return f"{obj.get('kind', '?')} {meta.get('namespace', '?')}/{meta.get('name', '?')}"


def render(path: Path) -> str:
    """`spec.traffic[1].percent`; map keys that are not plain words in brackets."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"\w+", part):
            text += f".{part}" if text else part
        else:
            text += f"[{part}]"
    return text


@functools.cache
def crd_schema(kind: str) -> dict[str, Any]:
    """The v1 openAPIV3Schema of an upstream CRD shipped in this package."""
    text = (resources.files(__package__) / "crds" / f"{kind.lower()}.yaml").read_text()
    crd = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return dict(version["schema"]["openAPIV3Schema"])


@functools.cache
def _validator(kind: str) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(crd_schema(kind))


def schema_errors(obj: dict[str, Any]) -> list[Finding]:
    errors = _validator(obj["kind"]).iter_errors(obj)
    return sorted(((tuple(e.absolute_path), e.message) for e in errors), key=str)


def _service(obj: dict[str, Any], cluster: ClusterConfig) -> Iterator[Finding]:
    meta = obj.get("metadata") or {}
    yield from _metadata(meta, "Service")
    for key in meta.get("annotations") or {}:
        if key.startswith("autoscaling.knative.dev/"):
            yield ("metadata", "annotations", key), (
                "autoscaling annotations belong under spec.template.metadata.annotations"
            )
    spec = obj.get("spec") or {}
    template = spec.get("template") or {}
    tmeta = template.get("metadata") or {}
    yield from _revision_name(tmeta.get("name"), meta.get("name"))
    yield from _autoscaling(tmeta.get("annotations") or {}, cluster)
    yield from _revision_spec(template.get("spec") or {}, cluster)
    if spec.get("traffic"):
        yield from _traffic(spec["traffic"], in_service=True, owner=meta.get("name"))


def _route(obj: dict[str, Any], cluster: ClusterConfig) -> Iterator[Finding]:
    yield from _metadata(obj.get("metadata") or {}, "Route")
    meta = obj.get("metadata") or {}
    yield from _traffic(
        (obj.get("spec") or {}).get("traffic") or [], in_service=False, owner=meta.get("name")
    )


def _metadata(meta: dict[str, Any], kind: str) -> Iterator[Finding]:
    name, namespace = meta.get("name"), meta.get("namespace")
    if not name:
        yield ("metadata", "name"), "required"
    elif not dns1035_label(name):
        yield ("metadata", "name"), f"{name!r} is not a DNS-1035 label of at most 63 characters"
    if not namespace:
        yield ("metadata", "namespace"), "required"
    elif not dns1123_label(namespace):
        yield ("metadata", "namespace"), f"{namespace!r} is not a DNS-1123 label"
    for field in ("labels", "annotations"):
        for key, value in (meta.get(field) or {}).items():
            if not isinstance(value, str):
                yield ("metadata", field, key), f"values are strings, got {value!r}"
            elif field == "labels":
                yield from _label(key, value, kind)


def _label(key: str, value: str, kind: str) -> Iterator[Finding]:
    at: Path = ("metadata", "labels", key)
    if not label_value(value):
        yield at, f"{value!r} is not a label value"
    elif key == VISIBILITY_LABEL and value != "cluster-local":
        yield at, f"{value!r}: the only visibility is cluster-local"
    elif key == SERVICE_LABEL and kind == "Route":
        yield at, "a standalone Route has no owning Service; Knative wants its ownerReference"
    elif key.startswith("serving.knative.dev/"):
        yield at, "a label Knative reserves for itself"


def _revision_name(name: Any, service: Any) -> Iterator[Finding]:
    path = ("spec", "template", "metadata", "name")
    if name is None:
        return
    if not dns1035_label(name):
        yield path, f"{name!r} is not a DNS-1035 label of at most 63 characters"
    elif isinstance(service, str) and not name.startswith(f"{service}-"):
        yield path, f"{name!r} must have the prefix {service + '-'!r}"


def _autoscaling(notes: dict[str, str], cluster: ClusterConfig) -> Iterator[Finding]:
    base: Path = ("spec", "template", "metadata", "annotations")

    def get(key: str) -> tuple[Path, str] | None:
        for spelling in (key, ALIASES.get(key)):
            if spelling in notes:
                return (*base, spelling), notes[spelling]
        return None

    autoscaler = notes.get(CLASS, KPA)
    if autoscaler.endswith("autoscaling.knative.dev") and autoscaler not in (KPA, HPA):
        yield (*base, CLASS), f"{autoscaler!r} is not {KPA} or {HPA}"
    scale: dict[str, int] = {}
    for key in (MIN_SCALE, MAX_SCALE):
        if found := get(key):
            value = int32(found[1])
            if value is None or value < 0:
                yield found[0], f"{found[1]!r} is not an integer in 0..{INT32_MAX}"
            else:
                scale[key] = value
    if (found := get(MAX_SCALE)) and MAX_SCALE in scale:
        low, high, limit = scale.get(MIN_SCALE, 0), scale[MAX_SCALE], cluster.max_scale_limit
        if high and high < low:
            yield found[0], f"max-scale={high} is less than min-scale={low}"
        if limit and not 0 < high <= limit:
            yield found[0], f"{high} is outside 1..{limit}, the cluster's max-scale-limit"
    if found := get(TARGET):
        target = number(found[1])
        if target is None or target < TARGET_MIN:
            yield found[0], f"{found[1]!r} is not a number of at least {float(TARGET_MIN)}"
    if found := get(INITIAL_SCALE):
        initial = int32(found[1])
        if initial is None or initial < 0:
            yield found[0], f"{found[1]!r} is not an integer >= 0"
        elif initial == 0 and not cluster.allow_zero_initial_scale:
            yield found[0], "0 is not allowed by the cluster (allow-zero-initial-scale)"
    if found := get(WINDOW):
        yield from _duration_in(*found, (WINDOW_MIN, WINDOW_MAX), whole_seconds=True)
    if found := get(RETENTION):
        yield from _duration_in(*found, (Fraction(0), WINDOW_MAX), whole_seconds=False)
    if found := get(METRIC):
        if autoscaler == KPA and found[1] not in KPA_METRICS:
            yield found[0], f"{found[1]!r}: the {KPA} class scales on concurrency or rps"
        elif autoscaler == HPA and not found[1]:
            yield found[0], "empty: the hpa class needs a metric (cpu, memory, or a custom one)"
    if PROGRESS_DEADLINE in notes:
        at = (*base, PROGRESS_DEADLINE)
        yield from _duration_in(at, notes[PROGRESS_DEADLINE], None, whole_seconds=True)


def _revision_spec(spec: dict[str, Any], cluster: ClusterConfig) -> Iterator[Finding]:
    base: Path = ("spec", "template", "spec")
    concurrency = spec.get("containerConcurrency")
    lowest = 0 if cluster.allow_container_concurrency_zero else 1
    if concurrency is not None and not (
        lowest <= concurrency <= cluster.container_concurrency_max_limit
    ):
        yield (*base, "containerConcurrency"), (
            f"{concurrency} is outside {lowest}..{cluster.container_concurrency_max_limit}"
        )
    # Knative lets 0 through (it means the cluster's default); ForestFlow's builders always
    # mean a real timeout, so 0 is refused here.
    timeout = spec.get("timeoutSeconds")
    if timeout is not None and not 0 < timeout <= cluster.max_revision_timeout_seconds:
        yield (*base, "timeoutSeconds"), (
            f"{timeout} is outside 1..{cluster.max_revision_timeout_seconds} "
            "(the cluster's max-revision-timeout-seconds)"
        )
    containers = spec.get("containers") or []
    if not containers:
        yield (*base, "containers"), "required: one serving container"
    if sum(len(c.get("ports") or []) for c in containers) > 1:
        yield (*base, "containers"), "more than one container port is set; Knative routes to one"
    for i, container in enumerate(containers):
        yield from _container(container, (*base, "containers", i))


def _container(container: dict[str, Any], at: Path) -> Iterator[Finding]:
    if not container.get("image"):
        yield (*at, "image"), "required"
    if container.get("name") == RESERVED_CONTAINER:
        yield (*at, "name"), f"{RESERVED_CONTAINER!r} is a reserved container name"
    for j, env in enumerate(container.get("env") or []):
        if env.get("name") in RESERVED_ENV:
            yield (*at, "env", j, "name"), f"{env['name']!r} is a reserved environment variable"
    for j, port in enumerate((container.get("ports") or [])[:1]):
        if port.get("name", "") not in PORT_NAMES:
            yield (*at, "ports", j, "name"), f"{port['name']!r}: empty, 'h2c' or 'http1'"
        number = port.get("containerPort", 0)
        if number in RESERVED_PORTS:
            yield (*at, "ports", j, "containerPort"), f"{number} is a reserved port"
        elif not 0 <= number <= 65535:
            yield (*at, "ports", j, "containerPort"), f"{number} is outside 0..65535"


def _traffic(
    targets: list[dict[str, Any]], in_service: bool, owner: Any = None
) -> Iterator[Finding]:
    """`owner`: the Route's (or Service's) name, the second half of each tag's host label
    (config-network's tag-template `{{.Tag}}-{{.Name}}`)."""
    base: Path = ("spec", "traffic")
    tags: dict[str, int] = {}
    total = 0
    for i, target in enumerate(targets):
        at: Path = (*base, i)
        revision = target.get("revisionName", "")
        configuration = target.get("configurationName", "")
        latest = target.get("latestRevision")
        if latest is not None and bool(revision) == latest:
            sense = "true" if latest else "false"
            yield (*at, "latestRevision"), (
                f"may not set revisionName {revision!r} when latestRevision is {sense}"
            )
        if in_service and configuration:
            yield (*at, "configurationName"), "not allowed: a Service routes to its own"
        elif revision and configuration:
            yield at, "expected exactly one of revisionName, configurationName; got both"
        elif revision or configuration:
            field = "revisionName" if revision else "configurationName"
            if not qualified_name(target[field]):
                yield (*at, field), f"{target[field]!r} is not a qualified name"
        elif not in_service:
            yield at, "expected exactly one of revisionName, configurationName; got neither"
        percent = target.get("percent")
        if percent is not None:
            total += percent
            if not 0 <= percent <= 100:
                yield (*at, "percent"), f"{percent} is outside 0..100"
        if "url" in target:
            yield (*at, "url"), "not allowed in spec; Knative sets it in status"
        tag = target.get("tag", "")
        if tag and not dns1035_label(tag):
            yield (*at, "tag"), f"{tag!r} is not a DNS-1035 label"
        elif tag in tags:
            yield (*at, "tag"), f"{tag!r} is also the tag of {render((*base, tags[tag]))}"
        elif tag and isinstance(owner, str) and len(f"{tag}-{owner}") > DNS_LABEL_MAX:
            yield (*at, "tag"), (
                f"the tag's host label {tag + '-' + owner!r} is {len(tag) + 1 + len(owner)} "
                f"characters; a DNS label holds at most {DNS_LABEL_MAX}, or Knative fails the "
                "whole Route"
            )
        elif tag:
            tags[tag] = i
    if total != 100:
        yield base, f"traffic targets sum to {total}, want 100"


def _duration_in(
    at: Path, text: str, within: tuple[Fraction, Fraction] | None, whole_seconds: bool
) -> Iterator[Finding]:
    """A Go duration within the bounds, or positive where there are none."""
    seconds = go_duration(text)
    if seconds is None:
        yield at, f"{text!r} is not a duration (e.g. 60s, 1m30s)"
    elif within is None and seconds <= 0:
        yield at, f"{text} must be positive"
    elif within is not None and not within[0] <= seconds <= within[1]:
        yield at, f"{text} is outside {float(within[0]):g}s..{float(within[1]):g}s"
    elif whole_seconds and seconds.denominator != 1:
        yield at, f"{text}: at most second precision"
