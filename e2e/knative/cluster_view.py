"""Reading the test cluster as the e2e tests do: objects, their conditions, watches in the
API server's order, and the desired states and model files the tests apply."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import urllib3
from kubernetes import client, watch

from forestflow_control_plane.knative.annotations import GROUP, VERSION
from forestflow_control_plane.policies.desired import DesiredState, DesiredVariant
from forestflow_control_plane.rollouts.deploys import specs_of
from forestflow_control_plane.spec.model_file import ModelFile

from .control import spec, wait_for

T = TypeVar("T")


def objects(kube: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube)


def get(kube: client.ApiClient, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
    try:
        found = objects(kube).get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return cast(dict[str, Any], found)


def listed(kube: client.ApiClient, namespace: str, plural: str) -> list[dict[str, Any]]:
    answer = objects(kube).list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
    return list(cast(dict[str, Any], answer)["items"])


def condition(obj: dict[str, Any] | None, kind: str) -> str | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return str(c["status"])
    return None


def state(*models: ModelFile, traffic: dict[str, int]) -> DesiredState:
    """The desired state of a contract serving `models`' variants with `traffic`."""
    contract_spec = specs_of(models[0])[0]
    variants = tuple(DesiredVariant(m.variant.version, specs_of(m)[1]) for m in models)
    return DesiredState(models[0].contract.name, contract_spec, traffic, variants)


def model(models: str, namespace: str, version: str, **variant: Any) -> ModelFile:
    """`version` of the test contract, serving v1's weights (every version loads)."""
    return spec(namespace, version, models, "v1", variant=variant)


class Real:
    """The test cluster, read as the test's own admin; `eventually` waits for Knative."""

    def __init__(self, kube: client.ApiClient, namespace: str) -> None:
        self.kube, self.namespace = kube, namespace

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return get(self.kube, namespace, plural, name)

    def names(self, plural: str, namespace: str) -> list[str]:
        return sorted(o["metadata"]["name"] for o in listed(self.kube, namespace, plural))

    def eventually(self, check: Callable[[], T | None], what: str) -> T:
        return wait_for(check, what)

    def quiet(self) -> dict[tuple[str, str], str]:
        """Resource versions once Knative has stopped writing status for a second."""

        def versions() -> dict[tuple[str, str], str]:
            return {
                (plural, o["metadata"]["name"]): o["metadata"]["resourceVersion"]
                for plural in ("services", "routes")
                for o in listed(self.kube, self.namespace, plural)
            }

        def settled() -> dict[tuple[str, str], str] | None:
            seen = versions()
            time.sleep(1)
            return seen if versions() == seen else None

        return wait_for(settled, "Knative to stop writing status")


class Events:
    """Every watch event of one kind in the namespace, in the API server's order, from a
    thread; `stop` ends the watch."""

    def __init__(self, kube: client.ApiClient, namespace: str, plural: str) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self._watch = watch.Watch()
        self._thread = threading.Thread(
            target=self._run, args=(kube, namespace, plural), daemon=True
        )
        self._thread.start()

    def _run(self, kube: client.ApiClient, namespace: str, plural: str) -> None:
        stream = self._watch.stream(
            objects(kube).list_namespaced_custom_object, GROUP, VERSION, namespace, plural,
            timeout_seconds=300,
        )
        with contextlib.suppress(urllib3.exceptions.ProtocolError):  # stopped mid-read
            for event in stream:
                self.seen.append((event["type"], event["object"]))

    def stop(self) -> list[tuple[str, dict[str, Any]]]:
        self._watch.stop()
        self._thread.join(10)
        return list(self.seen)


