"""The knative platform: the builders' objects, server-side applied to a cluster.

Each apply sends the contract's whole desired state as the `forestflow` field manager:
Services first, then the Route once every revision it names exists, then deletes what is no
longer desired, the Route's change first so that no traffic goes to a Service being deleted.
An unchanged object keeps its resourceVersion, so a repeated apply changes nothing and says
so. The `--dry-run` views of the same objects are knative/render.py's.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any, cast

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from forestflow_control_plane import names
from forestflow_control_plane.knative import admission
from forestflow_control_plane.knative.annotations import (
    CONTRACT_LABEL,
    GROUP,
    VERSION,
    VERSION_LABEL,
)
from forestflow_control_plane.knative.render import FIELD_MANAGER
from forestflow_control_plane.knative.resources import (
    contract_of,
    make_objects,
)
from forestflow_control_plane.platforms.base import PlatformError, VariantStatus
from forestflow_control_plane.policies.desired import DesiredState
from forestflow_control_plane.settings import Settings, SettingsError

PLURALS = {"Service": "services", "Route": "routes", "Revision": "revisions"}
APPLY_PATCH = "application/apply-patch+yaml"
REQUEST_TIMEOUT_S = 30.0
# Knative's controller makes a Service's revision within moments of the apply.
REVISION_WAIT_S = 60.0
POLL_S = 0.2


class KnativePlatform:
    def __init__(
        self,
        api: client.ApiClient,
        image: str,
        revision_wait_s: float = REVISION_WAIT_S,
        redis_url: str | None = None,
    ) -> None:
        """`redis_url`: the Redis runtime pods reach, for payload events, shadows and
        streams; a variant that needs one is refused without it."""
        self._objects = client.CustomObjectsApi(api)
        self._host = api.configuration.host
        self._image = image
        self._revision_wait_s = revision_wait_s
        self._env = {"FF_REDIS_URL": redis_url} if redis_url else {}

    def apply(self, state: DesiredState) -> bool:
        """Apply the contract's objects and delete its objects that are no longer desired;
        True when the cluster changed. Every object passes admission before any is sent."""
        objects = make_objects(state, self._image, self._env)
        admission.check_all(objects)
        if not self._env:
            _refuse_without_redis(objects)
        namespace, _ = names.split_contract(state.contract)
        selector = _selector(state.contract)
        versions = {
            kind: {
                o["metadata"]["name"]: o["metadata"]["resourceVersion"]
                for o in self._list(kind, namespace, selector)
            }
            for kind in ("Service", "Route")
        }
        changed = False
        for obj in sorted(objects, key=lambda o: o["kind"] == "Route"):  # Services first
            if obj["kind"] == "Route":
                self._await_revisions(obj)
            after = self._apply(obj)
            changed = after != versions[obj["kind"]].get(obj["metadata"]["name"]) or changed
        wanted = {(o["kind"], o["metadata"]["name"]) for o in objects}
        for kind in ("Route", "Service"):
            for name in sorted(versions[kind]):
                if (kind, name) not in wanted:
                    self._delete(kind, namespace, name)
                    changed = True
        return changed

    def observe(self, contract: str) -> dict[str, VariantStatus]:
        """Each variant's Service readiness (for its current generation) and the pods of its
        latest ready revision."""
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
            statuses[version] = VariantStatus(version, _ready(service), replicas)
        return statuses

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

    def _apply(self, obj: dict[str, Any]) -> str:
        """Server-side apply `obj`; its resourceVersion afterwards. The body is read raw: an
        apply that creates answers 201, whose body the generated client does not decode."""
        meta = obj["metadata"]
        with self._errors(f"apply {obj['kind']} {meta['namespace']}/{meta['name']}"):
            response = self._objects.patch_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], PLURALS[obj["kind"]], meta["name"], obj,
                field_manager=FIELD_MANAGER, force=True, _content_type=APPLY_PATCH,
                _request_timeout=REQUEST_TIMEOUT_S, _preload_content=False,
            )
            applied = json.loads(cast(urllib3.BaseHTTPResponse, response).data)
        return str(applied["metadata"]["resourceVersion"])

    def _await_revisions(self, route: dict[str, Any]) -> None:
        """Wait until every revision the Route names exists: Knative marks a Route that names
        a missing revision failed instead of routing it."""
        namespace, name = route["metadata"]["namespace"], route["metadata"]["name"]
        deadline = time.monotonic() + self._revision_wait_s
        for target in route["spec"]["traffic"]:
            while not self._exists("Revision", namespace, target["revisionName"]):
                if time.monotonic() > deadline:
                    raise PlatformError(
                        f"apply Route {namespace}/{name}: revision {target['revisionName']} did "
                        f"not appear within {self._revision_wait_s:g}s, so the Route was left "
                        "as it was; is Knative Serving's controller running?"
                    )
                time.sleep(POLL_S)

    def _exists(self, kind: str, namespace: str, name: str) -> bool:
        try:
            with self._errors(f"get {kind} {namespace}/{name}"):
                self._objects.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURALS[kind], name,
                    _request_timeout=REQUEST_TIMEOUT_S,
                )
        except PlatformError as exc:
            if exc.status == 404:
                return False
            raise
        return True

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


def _ready(obj: dict[str, Any]) -> bool:
    """Ready, as Knative says it of the object's current spec (a status that predates the
    latest generation says nothing of it)."""
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"].get("generation"):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


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
