"""The one stand-in of the test cluster: it marks every Knative KIngress Ready.

A real ingress (Kourier, Istio) programs Envoy and then reports the KIngress Ready with its
load balancers; no proxy can run here, so this reports what a ready Kourier reports, for
every generation, and does nothing else. Knative's own Route reconciler then does the rest:
it is what sets Route status, traffic and AllTrafficAssigned.

Run as `python -m e2e.cluster.ingress KUBECONFIG`.
"""

from __future__ import annotations

import datetime
import sys
import time
from typing import Any, cast

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "networking.internal.knative.dev", "v1alpha1", "ingresses"
PUBLIC = "kourier.kourier-system.svc.cluster.local"
PRIVATE = "kourier-internal.kourier-system.svc.cluster.local"
CONDITIONS = ("LoadBalancerReady", "NetworkConfigured", "Ready")


def _ready(ingress: dict[str, Any]) -> bool:
    status = ingress.get("status") or {}
    return status.get("observedGeneration") == ingress["metadata"]["generation"] and all(
        any(c["type"] == kind and c["status"] == "True" for c in status.get("conditions") or [])
        for kind in CONDITIONS
    )


def mark_ready(objects: client.CustomObjectsApi, ingress: dict[str, Any]) -> None:
    meta = ingress["metadata"]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = {
        "observedGeneration": meta["generation"],
        "conditions": [
            {"type": kind, "status": "True", "lastTransitionTime": now} for kind in CONDITIONS
        ],
        "publicLoadBalancer": {"ingress": [{"domainInternal": PUBLIC}]},
        "privateLoadBalancer": {"ingress": [{"domainInternal": PRIVATE}]},
    }
    try:
        objects.patch_namespaced_custom_object_status(
            GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], {"status": status}
        )
    except ApiException as exc:
        if exc.status != 404:  # deleted meanwhile
            raise


def serve(objects: client.CustomObjectsApi) -> None:
    """List, mark, then watch from the list's version; start over when the watch ends."""
    while True:
        listed = cast(dict[str, Any], objects.list_cluster_custom_object(GROUP, VERSION, PLURAL))
        for ingress in listed["items"]:
            if not _ready(ingress):
                mark_ready(objects, ingress)
        try:
            for event in watch.Watch().stream(
                objects.list_cluster_custom_object, GROUP, VERSION, PLURAL,
                resource_version=listed["metadata"]["resourceVersion"], timeout_seconds=300,
            ):
                ingress = event["object"]
                if event["type"] in ("ADDED", "MODIFIED") and not _ready(ingress):
                    mark_ready(objects, ingress)
        except ApiException as exc:
            if exc.status != 410:  # an expired version: list again
                raise


def main() -> None:
    config.load_kube_config(config_file=sys.argv[1])
    objects = client.CustomObjectsApi()
    while True:
        try:
            serve(objects)
        except Exception as exc:  # a stand-in that keeps trying, and says why
            print(f"ingress stand-in: {exc!r}; again in 1 s", file=sys.stderr, flush=True)
            time.sleep(1)


if __name__ == "__main__":
    main()
