"""The knative platform: the builders' objects, server-side applied to a cluster.

Each apply sends the contract's whole desired state as the `forestflow` field manager:
the Services, then the Route over the revisions Knative reports Ready, then deletes what is
no longer desired, a Service only once the Route's status no longer names it, so no request
goes to a Service being deleted. An unchanged object keeps its resourceVersion, so a
repeated apply changes nothing and says so (judged by spec, labels and annotations: Knative
writes status at any time). The `--dry-run` views of the same objects are knative/render.py's."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any, cast

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from forestflow_control_plane import names
from forestflow_control_plane.knative import admission
from forestflow_control_plane.knative.annotations import (
    CONFIGURATION_GENERATION_LABEL,
    CONTRACT_LABEL,
    GROUP,
    SERVICE_LABEL,
    STICKY_HEADER_ANNOTATION,
    VERSION,
    VERSION_LABEL,
)
from forestflow_control_plane.knative.render import FIELD_MANAGER
from forestflow_control_plane.knative.resources import (
    contract_of,
    make_objects,
    make_route,
    revision_names,
)
from forestflow_control_plane.platforms.base import PlatformError, VariantStatus
from forestflow_control_plane.policies.desired import DesiredState
from forestflow_control_plane.settings import Settings, SettingsError

PLURALS = {"Service": "services", "Route": "routes", "Revision": "revisions"}
APPLY_PATCH = "application/apply-patch+yaml"
REQUEST_TIMEOUT_S = 30.0


class KnativePlatform:
    def __init__(
        self,
        api: client.ApiClient,
        image: str,
        redis_url: str | None = None,
    ) -> None:
        """`redis_url`: the Redis runtime pods reach, for payload events, shadows and
        streams; a variant that needs one is refused without it."""
        self._objects = client.CustomObjectsApi(api)
        self._host = api.configuration.host
        self._image = image
        self._env = {"FF_REDIS_URL": redis_url} if redis_url else {}

    def apply(self, state: DesiredState) -> bool:
        """Apply the contract's objects and delete its objects that are no longer desired;
        True when the cluster changed. Every object passes admission before any is sent.

        The Route names only revisions Knative reports Ready (see resources.routable_split),
        so a version still loading, or one that never will, holds up no change of the
        others. A Service no longer desired goes only once the Route's status (what the
        ingress serves) no longer names it; until then the next apply tries again."""
        namespace, name = names.split_contract(state.contract)
        selector = _selector(state.contract)
        objects = make_objects(state, self._image, self._env)  # every target routable
        admission.check_all(objects)
        _refuse_gateway_only(objects)
        if not self._env:
            _refuse_without_redis(objects)
        existing = {
            "Service": self._list("Service", namespace, selector),
            "Route": self._list("Route", namespace, f"{selector},!{SERVICE_LABEL}"),
        }
        before = {
            kind: {o["metadata"]["name"]: _desired_part(o) for o in listed}
            for kind, listed in existing.items()
        }
        changed = False
        services = [o for o in objects if o["kind"] == "Service"]
        for service in services:
            after = self._apply(service)
            changed = after != before["Service"].get(service["metadata"]["name"]) or changed
        revisions = self._list("Revision", namespace, selector)
        route = make_route(state, _routable(revision_names(services), revisions))
        if route is not None:
            changed = self._apply(route) != before["Route"].get(name) or changed
        # Ours stays while the contract has traffic, as it is while no routable version has
        # a share; Knative's own per-Service Routes are never listed, so never touched.
        routed = sum(state.traffic.values()) > 0
        for other in sorted(before["Route"]):
            if other != name or not routed:
                self._delete("Route", namespace, other)
                changed = True
        retired = sorted(set(before["Service"]) - {s["metadata"]["name"] for s in services})
        if retired:
            served = _served_revisions(self._get("Route", namespace, name))
            by_revision = {r["metadata"]["name"]: _owner(r) for r in revisions}
            in_use = {by_revision.get(revision) for revision in served}
            for service in retired:
                if service not in in_use:
                    self._delete("Service", namespace, service)
                    changed = True
        return changed

    def observe(self, contract: str) -> dict[str, VariantStatus]:
        """Each variant's Service readiness (for its current generation), the pods of its
        latest ready revision, and why its desired revision failed, if it did."""
        namespace, _ = names.split_contract(contract)
        selector = _selector(contract)
        revisions = {
            r["metadata"]["name"]: r for r in self._list("Revision", namespace, selector)
        }
        statuses = {}
        for service in self._list("Service", namespace, selector):
            version = service["metadata"]["labels"][VERSION_LABEL]
            latest = (service.get("status") or {}).get("latestReadyRevisionName")
            revision = revisions.get(latest or "") or {}
            replicas = int((revision.get("status") or {}).get("actualReplicas") or 0)
            desired = revisions.get(service["spec"]["template"]["metadata"]["name"])
            failure = None if desired is None else _failure(desired)
            statuses[version] = VariantStatus(version, _ready(service), replicas, failure)
        return statuses

    def served(self, contract: str) -> dict[str, int]:
        """From the Route's status: Knative writes it once the ingress is programmed."""
        namespace, name = names.split_contract(contract)
        route = self._get("Route", namespace, name)
        if route is None:
            return {}
        versions = {
            r["metadata"]["name"]: r["metadata"]["labels"].get(VERSION_LABEL)
            for r in self._list("Revision", namespace, _selector(contract))
        }
        split: dict[str, int] = {}
        for target in (route.get("status") or {}).get("traffic") or []:
            version = versions.get(target.get("revisionName", ""))
            if version is not None and target.get("percent"):
                split[version] = split.get(version, 0) + int(target["percent"])
        return split

    def contracts(self) -> set[str]:
        """Read across namespaces (the one cluster-wide read; the RBAC in knative/ allows it)."""
        owners: set[str | None] = set()
        for kind in ("Service", "Route"):
            with self._errors(f"list {PLURALS[kind]} in all namespaces ({CONTRACT_LABEL})"):
                listed = self._objects.list_cluster_custom_object(
                    GROUP, VERSION, PLURALS[kind], label_selector=CONTRACT_LABEL,
                    _request_timeout=REQUEST_TIMEOUT_S,
                )
            owners.update(contract_of(o) for o in cast(dict[str, Any], listed)["items"])
        return {contract for contract in owners if contract is not None}

    def replica_urls(self, contract: str, version: str) -> list[str]:
        return []

    @contextlib.contextmanager
    def trial_replica(self, service: dict[str, Any]) -> Iterator[str | None]:
        yield None

    def _apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply `obj`; the part of it an apply can change, afterwards. The body
        is read raw: an apply that creates answers 201, which the generated client does not
        decode."""
        meta = obj["metadata"]
        with self._errors(f"apply {obj['kind']} {meta['namespace']}/{meta['name']}"):
            response = self._objects.patch_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], PLURALS[obj["kind"]], meta["name"], obj,
                field_manager=FIELD_MANAGER, force=True, _content_type=APPLY_PATCH,
                _request_timeout=REQUEST_TIMEOUT_S, _preload_content=False,
            )
            applied = json.loads(cast(urllib3.BaseHTTPResponse, response).data)
        return _desired_part(applied)

    def _get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            with self._errors(f"get {kind} {namespace}/{name}"):
                found = self._objects.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURALS[kind], name,
                    _request_timeout=REQUEST_TIMEOUT_S,
                )
        except PlatformError as exc:
            if exc.status == 404:
                return None
            raise
        return cast(dict[str, Any], found)

    def _list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        with self._errors(f"list {PLURALS[kind]} in {namespace} ({selector})"):
            listed = self._objects.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURALS[kind], label_selector=selector,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
        return list(cast(dict[str, Any], listed)["items"])

    def _delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            with self._errors(f"delete {kind} {namespace}/{name}"):
                self._objects.delete_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURALS[kind], name,
                    propagation_policy="Background", _request_timeout=REQUEST_TIMEOUT_S,
                )
        except PlatformError as exc:
            if exc.status != 404:  # gone already is what was wanted
                raise

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except ApiException as exc:
            raise PlatformError(
                f"{what}: {exc.status} {exc.reason}: {_api_message(exc)}", exc.status
            ) from None
        except urllib3.exceptions.HTTPError as exc:
            raise PlatformError(f"{what}: the Kubernetes API at {self._host}: {exc}") from None


def _selector(contract: str) -> str:
    return f"{CONTRACT_LABEL}={names.contract_label(contract)}"


def _desired_part(obj: dict[str, Any]) -> dict[str, Any]:
    """What an apply changes: spec, labels, annotations. Not the resourceVersion, which
    Knative's own status writes move too."""
    meta = obj["metadata"]
    return {"spec": obj.get("spec"), "labels": meta.get("labels"),
            "annotations": meta.get("annotations")}


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return cast(dict[str, Any], condition)
    return {}


def _failure(revision: dict[str, Any]) -> str | None:
    """Why Knative gave up on the revision (Ready False: a progress deadline passed, the
    container exited, the image is missing); None while it is Ready or still trying."""
    ready = _condition(revision, "Ready")
    if ready.get("status") != "False":
        return None
    return (
        f"revision {revision['metadata']['name']} failed: {ready.get('reason') or 'not ready'}: "
        f"{ready.get('message') or '(no message)'}"
    )


def _owner(revision: dict[str, Any]) -> str | None:
    return (revision["metadata"].get("labels") or {}).get(SERVICE_LABEL)


def _routable(desired: dict[str, str], revisions: list[dict[str, Any]]) -> dict[str, str]:
    """Per version, the revision a Route may target now: the desired one once Ready, else
    the newest Ready one of the same version (a template change still loading keeps its
    version served by the revision before it); no entry when it has none."""
    ready = [r for r in revisions if _condition(r, "Ready").get("status") == "True"]
    routable = {}
    for version, name in desired.items():
        mine = [r for r in ready if r["metadata"]["labels"].get(VERSION_LABEL) == version]
        if any(r["metadata"]["name"] == name for r in mine):
            routable[version] = name
        elif mine:
            newest = max(mine, key=lambda r: int(
                r["metadata"]["labels"].get(CONFIGURATION_GENERATION_LABEL, "0")
            ))
            routable[version] = newest["metadata"]["name"]
    return routable


def _served_revisions(route: dict[str, Any] | None) -> set[str]:
    """The revisions the Route's status names: what its ingress is programmed with."""
    traffic = ((route or {}).get("status") or {}).get("traffic") or []
    return {t["revisionName"] for t in traffic if t.get("revisionName")}


def _ready(obj: dict[str, Any]) -> bool:
    """Ready, as Knative says it of the object's current spec (a status that predates the
    latest generation says nothing of it)."""
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"].get("generation"):
        return False
    return _condition(obj, "Ready").get("status") == "True"


def _api_message(exc: ApiException) -> str:
    """The message of the API's `Status` body, or the body itself when it is not one."""
    try:
        body = json.loads(exc.body or "")
    except ValueError:
        return str(exc.body or "").strip() or "(no body)"
    return str(body.get("message") or body) if isinstance(body, dict) else str(body)


def api_client(context: str | None = None) -> client.ApiClient:
    """A client for kubeconfig's `context`; without one, for the pod's service account when
    running in a cluster, else for kubeconfig's current context."""
    configuration = client.Configuration()
    if context is None:
        with contextlib.suppress(config.ConfigException):
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
    try:
        config.load_kube_config(context=context, client_configuration=configuration)
    except (config.ConfigException, OSError) as exc:
        variable = "FF_KUBE_CONTEXT" if context else "KUBECONFIG"
        raise SettingsError(f"{variable}: no usable Kubernetes credentials: {exc}") from None
    return client.ApiClient(configuration)


def from_settings(settings: Settings) -> KnativePlatform:
    return KnativePlatform(
        api_client(settings.kube_context), settings.runtime_image,
        redis_url=settings.runtime_redis_url,
    )


def _refuse_gateway_only(objects: list[dict[str, Any]]) -> None:
    """What only the local gateway does is refused, not silently dropped: Knative's ingress
    splits by weight alone."""
    for obj in objects:
        header = (obj["metadata"].get("annotations") or {}).get(STICKY_HEADER_ANNOTATION)
        if obj["kind"] == "Route" and header:
            raise PlatformError(
                f"Route {obj['metadata']['namespace']}/{obj['metadata']['name']}: "
                f"routing.sticky_header ({header}) needs the local platform's gateway; "
                "Knative's ingress cannot pin a header's value to a version. Remove it to "
                "serve this contract on knative"
            )


# A runtime with any of these set refuses to start without FF_REDIS_URL.
_NEEDS_REDIS = ("FF_PAYLOAD_SAMPLE_RATE", "FF_STREAM_INPUT")


def _refuse_without_redis(objects: list[dict[str, Any]]) -> None:
    """Fail before the apply rather than leave a revision that never becomes ready."""
    for obj in objects:
        if obj["kind"] != "Service":
            continue
        env = {e["name"] for e in obj["spec"]["template"]["spec"]["containers"][0]["env"]}
        if needs := [name for name in _NEEDS_REDIS if name in env]:
            raise PlatformError(
                f"Service {obj['metadata']['namespace']}/{obj['metadata']['name']}: its runtime "
                f"needs Redis ({', '.join(needs)}: payload logging, a shadow, or streaming); "
                "set FF_RUNTIME_REDIS_URL to a Redis the pods can reach"
            )
