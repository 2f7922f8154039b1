"""An in-process fake of the Kubernetes API for serving.knative.dev/v1, served over real HTTP so
that the real `kubernetes` client talks to it as to a cluster.

What a cluster does with these objects: GET, LIST by label selector, server-side apply (PATCH
`application/apply-patch+yaml`, fieldManager required, merged as server_side_apply.py says, 409
on a conflict unless forced, resourceVersion and generation moved only by a real change), DELETE,
and `Status` bodies for 400/404/409/415/422. Services and Routes are validated against the
upstream CRD schemas as the API server validates them. Where a test needs Knative's controller,
it plays that too: an applied Service's template becomes a Revision (Ready at once unless
`ready_revisions` is off; failed Unschedulable when it asks more CPU than the one node of the
test cluster has), a Route's spec goes into its status once all its targets are
Ready (unless `program_routes` is off), each Service gets its own Route carrying the
Service's labels, deleting a Service deletes what it owns, and `set_status` writes a status.
Every request is recorded in `requests`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import json
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import jsonschema
import yaml
from kubernetes import client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support import free_port, serving

from .server_side_apply import ApplyConflictError, merged, same

GROUP, VERSION = "serving.knative.dev", "v1"
API_VERSION = f"{GROUP}/{VERSION}"
KINDS = {"services": "Service", "routes": "Route", "revisions": "Revision"}
APPLY = "application/apply-patch+yaml"
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
COLLECTION = "/apis/{group}/{version}/namespaces/{namespace}/{plural}"
ALL_NAMESPACES = "/apis/{group}/{version}/{plural}"


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    content_type: str | None


@dataclass
class KubeError(Exception):
    """An answer with a Kubernetes `Status` body."""

    code: int
    reason: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "details": self.details,
            "code": self.code,
        }


@functools.cache
def crd_validator(kind: str) -> jsonschema.Draft4Validator:
    text = (resources.files("forestflow_control_plane.knative") / "crds" / f"{kind.lower()}.yaml")
    crd = yaml.safe_load(text.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == VERSION)
    return jsonschema.Draft4Validator(version["schema"]["openAPIV3Schema"])


class FakeKube:
    def __init__(
        self, namespaces: tuple[str, ...] = ("default",), controller: bool = True,
        ready_revisions: bool = True,
    ):
        self.namespaces = set(namespaces)
        self.controller = controller  # make Revisions of applied Services, as Knative does
        self.ready_revisions = ready_revisions
        self.program_routes = True  # off: an ingress that has not caught up yet
        self.requests: list[Recorded] = []
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._versions = itertools.count(1)
        self._denied: dict[tuple[str, str, str], str] = {}
        self._lock = threading.Lock()
        self._validators = {"services": crd_validator("Service"), "routes": crd_validator("Route")}
        self.app = Starlette(routes=[
            Route(ALL_NAMESPACES, self._handle, methods=["GET"]),
            Route(COLLECTION, self._handle, methods=["GET"]),
            Route(COLLECTION + "/{name}", self._handle, methods=["GET", "PATCH", "DELETE"]),
        ])

    @contextlib.contextmanager
    def serve(self) -> Iterator[client.ApiClient]:
        """Serve on a free port of 127.0.0.1; yields a real client configured for it."""
        with serving(self.app, free_port()) as url:
            api = client.ApiClient(client.Configuration(host=url))
            try:
                yield api
            finally:
                api.close()

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return copy.deepcopy(self._objects.get((plural, namespace, name)))

    def names(self, plural: str, namespace: str) -> list[str]:
        with self._lock:
            return sorted(n for p, ns, n in self._objects if (p, ns) == (plural, namespace))

    def writes(self) -> list[Recorded]:
        return [r for r in self.requests if r.method != "GET"]

    def set_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Write the object's status, as Knative's controller does through /status."""
        with self._lock:
            obj = self._objects[(plural, namespace, name)]
            obj["status"] = copy.deepcopy(status)
            obj["metadata"]["resourceVersion"] = str(next(self._versions))

    def deny(self, plural: str, namespace: str, name: str, message: str) -> None:
        """Refuse writes of this object as Knative's validating webhook refuses them."""
        self._denied[(plural, namespace, name)] = message

    async def _handle(self, request: Request) -> JSONResponse:
        params = request.path_params
        query = dict(request.query_params)
        content_type = request.headers.get("content-type")
        self.requests.append(Recorded(request.method, request.url.path, query, content_type))
        body = await request.body()
        try:
            if (params["group"], params["version"]) != (GROUP, VERSION) or (
                params["plural"] not in KINDS
            ):
                raise KubeError(404, "NotFound", "the server could not find the requested resource")
            with self._lock:
                if "name" not in params:
                    namespace = params.get("namespace")
                    return JSONResponse(self._list(namespace, params["plural"], query))
                key = (params["plural"], params["namespace"], params["name"])
                if request.method == "PATCH":
                    answer, code = self._apply(key, query, content_type, body)
                    return JSONResponse(answer, status_code=code)
                if request.method == "DELETE":
                    return JSONResponse(self._delete(key))
                return JSONResponse(self._found(key))
        except KubeError as exc:
            return JSONResponse(exc.body(), status_code=exc.code)

    def _found(self, key: tuple[str, str, str]) -> dict[str, Any]:
        if key not in self._objects:
            plural, _, name = key
            raise KubeError(
                404, "NotFound", f'{plural}.{GROUP} "{name}" not found',
                {"name": name, "group": GROUP, "kind": plural},
            )
        return self._objects[key]

    def _list(self, namespace: str | None, plural: str, query: dict[str, str]) -> dict[str, Any]:
        """A namespace's objects, or every namespace's when `namespace` is None."""
        wanted = _selector(query.get("labelSelector", ""))
        items = [
            obj for (p, ns, _), obj in sorted(self._objects.items())
            if p == plural and namespace in (None, ns)
            and _selects(wanted, obj["metadata"].get("labels") or {})
        ]
        return {
            "apiVersion": API_VERSION, "kind": f"{KINDS[plural]}List", "items": items,
            "metadata": {"resourceVersion": str(next(self._versions))},
        }

    def _delete(self, key: tuple[str, str, str]) -> dict[str, Any]:
        obj = self._found(key)
        del self._objects[key]
        plural, namespace, name = key
        if plural == "services":  # its Revisions and Route are garbage-collected with it
            for owned in [k for k, o in self._objects.items()
                          if k[0] in ("revisions", "routes") and k[1] == namespace
                          and o["metadata"]["labels"].get(f"{GROUP}/service") == name]:
                del self._objects[owned]
        return {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": name, "group": GROUP, "kind": plural,
                        "uid": obj["metadata"]["uid"]},
        }

    def _apply(
        self, key: tuple[str, str, str], query: dict[str, str], content_type: str | None,
        body: bytes,
    ) -> tuple[dict[str, Any], int]:
        plural, namespace, _ = key
        if content_type != APPLY:
            raise KubeError(415, "UnsupportedMediaType",
                            f"the body of the request was in an unknown format - accepted media "
                            f"types include: {APPLY}")
        manager = query.get("fieldManager")
        if not manager:
            raise KubeError(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: '
                            "fieldManager: Required value: is required for apply patch")
        if namespace not in self.namespaces:
            raise KubeError(404, "NotFound", f'namespaces "{namespace}" not found',
                            {"name": namespace, "kind": "namespaces"})
        config = _identified(key, body)
        if key in self._denied:
            raise KubeError(400, "BadRequest", 'admission webhook "validation.webhook.serving.'
                            f'knative.dev" denied the request: {self._denied[key]}')
        before = self._objects.get(key)
        try:
            after = merged(before, config, manager, query.get("force") == "true", _now())
        except ApplyConflictError as exc:
            causes = [{"reason": "FieldManagerConflict", "field": "." + ".".join(path),
                       "message": f'conflict with "{other}"'} for other, path in exc.conflicts]
            raise KubeError(409, "Conflict", f"Apply failed with {len(causes)} conflict(s): "
                            + "; ".join(f"{c['message']}: {c['field']}" for c in causes),
                            {"causes": causes}) from None
        self._validate(plural, after)
        if before is not None and same(before, after):
            return before, 200
        meta = after["metadata"]
        meta["resourceVersion"] = str(next(self._versions))
        if before is None:
            meta.update(uid=str(uuid.uuid4()), generation=1, creationTimestamp=_now())
        elif after.get("spec") != before.get("spec"):
            meta["generation"] = before["metadata"]["generation"] + 1
        self._objects[key] = after
        if plural == "services" and self.controller:
            self._make_revision(after)
        if plural == "routes" and self.controller and self.program_routes:
            self._program(after)
        return after, 201 if before is None else 200

    def _validate(self, plural: str, obj: dict[str, Any]) -> None:
        causes = [
            {"reason": "FieldValueInvalid", "field": _field(e.absolute_path),
             "message": f"Invalid value: {json.dumps(e.instance)[:60]}: {e.message}"}
            for e in self._validators[plural].iter_errors(obj)
        ]
        causes += [
            {"reason": "FieldValueInvalid", "field": f"metadata.labels.{key}",
             "message": f"Invalid value: {value!r}: a valid label must be 63 characters or less"
                        " and consist of alphanumerics, '-', '_' or '.'"}
            for key, value in (obj["metadata"].get("labels") or {}).items()
            if not (isinstance(value, str) and len(value) <= 63 and LABEL_VALUE.fullmatch(value))
        ]
        if causes:
            kind, name = KINDS[plural], obj["metadata"]["name"]
            listed = ", ".join(f"{c['field']}: {c['message']}" for c in causes)
            raise KubeError(422, "Invalid", f'{kind}.{GROUP} "{name}" is invalid: [{listed}]',
                            {"name": name, "group": GROUP, "kind": kind, "causes": causes})

    def _make_revision(self, service: dict[str, Any]) -> None:
        meta, template = service["metadata"], service["spec"]["template"]
        tmeta = template.get("metadata") or {}
        generation = meta["generation"]
        name = tmeta.get("name") or f"{meta['name']}-{generation:05d}"
        key = ("revisions", meta["namespace"], name)
        if key in self._objects:
            return
        labels = {
            **(tmeta.get("labels") or {}), f"{GROUP}/service": meta["name"],
            f"{GROUP}/configuration": meta["name"],
            f"{GROUP}/configurationGeneration": str(generation),
        }
        status = _revision_status(template["spec"])
        self._own_route(service)
        self._objects[key] = {
            "apiVersion": API_VERSION, "kind": "Revision",
            "metadata": {
                "name": name, "namespace": meta["namespace"], "labels": labels,
                "annotations": dict(tmeta.get("annotations") or {}), "uid": str(uuid.uuid4()),
                "resourceVersion": str(next(self._versions)), "generation": 1,
                "creationTimestamp": _now(),
            },
            "spec": copy.deepcopy(template["spec"]),
            "status": status if self.ready_revisions else {},
        }

    def _program(self, route: dict[str, Any]) -> None:
        """Knative's Route reconciler with an ingress that is ready at once: the whole spec
        goes into status, or nothing does while a target's revision is not Ready."""
        namespace = route["metadata"]["namespace"]
        for target in route["spec"]["traffic"]:
            revision = self._objects.get(("revisions", namespace, target.get("revisionName")))
            conditions = ((revision or {}).get("status") or {}).get("conditions") or []
            if not any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                return
        route["status"] = {
            "observedGeneration": route["metadata"]["generation"],
            "traffic": copy.deepcopy(route["spec"]["traffic"]),
            "conditions": [{"type": "Ready", "status": "True"},
                           {"type": "AllTrafficAssigned", "status": "True"}],
        }

    def _own_route(self, service: dict[str, Any]) -> None:
        """The Route Knative makes for every Service, named after it, with its labels."""
        meta = service["metadata"]
        key = ("routes", meta["namespace"], meta["name"])
        labels = {**(meta.get("labels") or {}), f"{GROUP}/service": meta["name"]}
        if key in self._objects and self._objects[key]["metadata"]["labels"] == labels:
            return
        self._objects[key] = {
            "apiVersion": API_VERSION, "kind": "Route",
            "metadata": {
                "name": meta["name"], "namespace": meta["namespace"], "labels": labels,
                "uid": str(uuid.uuid4()), "resourceVersion": str(next(self._versions)),
                "generation": 1, "creationTimestamp": _now(),
            },
            "spec": {"traffic": [{"configurationName": meta["name"], "latestRevision": True,
                                  "percent": 100}]},
        }


NODE_CPU = 64  # the test cluster's one (kwok) node


def _revision_status(spec: dict[str, Any]) -> dict[str, Any]:
    """Ready, or failed as Knative reports a revision whose pod no node can take."""
    for container in spec.get("containers") or []:
        cpu = ((container.get("resources") or {}).get("requests") or {}).get("cpu", "0")
        if not str(cpu).endswith("m") and float(cpu) > NODE_CPU:
            return {"conditions": [{
                "type": "Ready", "status": "False", "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 Insufficient cpu.",
            }]}
    return {"conditions": [{"type": "Ready", "status": "True"}]}


def _identified(key: tuple[str, str, str], body: bytes) -> dict[str, Any]:
    """The applied configuration, checked to be the object the URL names."""
    plural, namespace, name = key
    try:
        config = yaml.safe_load(body)
    except yaml.YAMLError as exc:
        raise KubeError(400, "BadRequest", f"error decoding YAML: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("metadata"), dict):
        raise KubeError(400, "BadRequest", "the body is not an object with metadata")
    if (config.get("apiVersion"), config.get("kind")) != (API_VERSION, KINDS[plural]):
        raise KubeError(400, "BadRequest", f"the API version in the data "
                        f"({config.get('apiVersion')}) does not match the expected API version "
                        f"({API_VERSION}) or kind ({config.get('kind')} for {KINDS[plural]})")
    if config["metadata"].get("name") != name:
        raise KubeError(400, "BadRequest", f"the name of the object "
                        f"({config['metadata'].get('name')}) does not match the name on the URL "
                        f"({name})")
    if config["metadata"].setdefault("namespace", namespace) != namespace:
        raise KubeError(400, "BadRequest", "the namespace of the provided object does not match "
                        "the namespace sent on the request")
    return config


def _selector(text: str) -> list[tuple[str, str | None, bool]]:
    """Equality-based label selectors (`a=b`, `a==b`, `a!=b`, `a`, `!a`), comma-joined, as
    (key, value or None for presence, wanted)."""
    requirements: list[tuple[str, str | None, bool]] = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        if match := re.fullmatch(r"([\w./-]+)\s*(==|=|!=)\s*([\w.-]*)", term):
            key, op, value = match.groups()
            requirements.append((key, value, op != "!="))
        elif re.fullmatch(r"!?[\w./-]+", term):
            requirements.append((term.lstrip("!"), None, not term.startswith("!")))
        else:
            raise KubeError(400, "BadRequest", f"unable to parse requirement: {term!r}")
    return requirements


def _selects(requirements: list[tuple[str, str | None, bool]], labels: dict[str, str]) -> bool:
    return all(
        (key in labels if value is None else labels.get(key) == value) == wanted
        for key, value, wanted in requirements
    )


def _field(path: Any) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
