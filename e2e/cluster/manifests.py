"""What the test cluster is set up from: Knative Serving's own config/core (copied by build.sh
from the pinned modules), adapted only where a process outside the cluster stands for a pod,
then ForestFlow's knative/config-*.yaml on top, as a user applies them."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
# Run as processes next to the API server rather than as pods (no container runtime here).
AS_PROCESSES = ("webhook", "controller", "autoscaler", "activator")
# Their Services that other components call, and the process behind each (the webhook's
# Service is the API server's: ExternalName).
PROCESS_SERVICES = {"activator-service": "activator", "autoscaler": "autoscaler"}
# Not for this cluster: autoscaling of Knative's own pods, cert-manager certificates, and
# the queue-proxy image cache (no image is ever pulled).
SKIPPED_KINDS = {"HorizontalPodAutoscaler", "PodDisruptionBudget", "Certificate", "Image"}
QUEUE_IMAGE = "dev.local/knative-queue:v1.23"
RUNTIME_POD = '.metadata.labels."forestflow.dev/contract"'


def _documents(path: Path) -> Iterator[dict[str, Any]]:
    for document in yaml.safe_load_all(path.read_text()):
        if document:
            yield document


def _adapted(obj: dict[str, Any]) -> dict[str, Any] | None:
    kind, name = obj["kind"], obj["metadata"]["name"]
    namespace = obj["metadata"].get("namespace")
    if kind in SKIPPED_KINDS:
        return None
    if kind == "Deployment" and name in AS_PROCESSES:
        return None
    if kind == "Service" and namespace == "knative-serving" and name == "webhook":
        # The API server calls admission webhooks by their Service; this one is the webhook
        # process on the cluster namespace's own loopback.
        obj["spec"] = {"type": "ExternalName", "externalName": "localhost",
                       "ports": [{"name": "https-webhook", "port": 443}]}
    if kind == "Service" and namespace == "knative-serving" and name in PROCESS_SERVICES:
        # No pod behind it: its Endpoints are the process (process_endpoints).
        del obj["spec"]["selector"]
    if kind == "ConfigMap" and name == "config-deployment":
        obj["data"]["queue-sidecar-image"] = QUEUE_IMAGE
    return obj


def forestflow_config() -> list[dict[str, Any]]:
    """ForestFlow's settings of Knative (knative/config-*.yaml), applied as a user does: on
    a running Knative, whose webhook validates each ConfigMap."""
    return [o for p in sorted((REPO / "knative").glob("config-*.yaml")) for o in _documents(p)]


def knative(manifests: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(everything but the webhook configurations, the webhook configurations): the second
    list goes in only once the objects they would check are all in."""
    files = sorted((manifests / "serving").rglob("*.yaml"))
    files += sorted((manifests / "networking").glob("*.yaml"))
    files += sorted((manifests / "caching").glob("*.yaml"))
    objects, webhooks = [], []
    for path in files:
        for obj in _documents(path):
            adapted = _adapted(obj)
            if adapted is None:
                continue
            if adapted["kind"].endswith("WebhookConfiguration"):
                webhooks.append(adapted)
            else:
                objects.append(adapted)
    order = {"Namespace": 0, "CustomResourceDefinition": 1}
    objects.sort(key=lambda o: order.get(o["kind"], 2))
    return objects, webhooks


def forestflow_rbac() -> list[dict[str, Any]]:
    """The control plane's Namespace, ServiceAccount, ClusterRole and binding, from the very
    manifest a cluster install applies: the worker in the tests holds exactly that role."""
    kinds = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    return [o for o in _documents(REPO / "knative" / "control-plane.yaml") if o["kind"] in kinds]


def kwok_stages(manifests: Path) -> str:
    """kwok's own "fast" stages: nodes become Ready and stay so (their leases renewed), pods
    Running and Ready, deleted pods go; but a ForestFlow runtime pod only Running, not
    Ready: its readiness is the pods.py stand-in's to report, once the runtime answers."""
    stages: list[dict[str, Any]] = []
    for path in sorted((manifests / "kwok").glob("*.yaml")):
        for stage in _documents(path):
            stages += _runtime_pods_apart(stage) if stage["metadata"]["name"] == "pod-ready" \
                else [stage]
    return yaml.safe_dump_all(stages)


def _runtime_pods_apart(ready: dict[str, Any]) -> list[dict[str, Any]]:
    """kwok's pod-ready stage for every other pod, and a copy for runtime pods that leaves
    their Ready and ContainersReady conditions False and their containers not ready."""
    started = copy.deepcopy(ready)
    started["metadata"]["name"] = "forestflow-pod-started"
    for stage, operator in ((ready, "DoesNotExist"), (started, "Exists")):
        stage["spec"]["selector"]["matchExpressions"].append(
            {"key": RUNTIME_POD, "operator": operator}
        )
    template = started["spec"]["next"]["statusTemplate"]
    for condition in ("Ready", "ContainersReady"):
        before = f'status: "True"\n  type: {condition}\n'
        assert before in template, f"kwok's pod-ready stage no longer sets {condition} so"
        template = template.replace(before, f'status: "False"\n  type: {condition}\n')
    started["spec"]["next"]["statusTemplate"] = template.replace("ready: true", "ready: false")
    return [ready, started]


def fake_node(name: str) -> dict[str, Any]:
    capacity = {"cpu": "64", "memory": "256Gi", "pods": "250", "nvidia.com/gpu": "8"}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {"type": "kwok", "kubernetes.io/hostname": name},
        },
        "status": {"allocatable": capacity, "capacity": capacity},
    }


def prometheus(kubeconfig: Path, interval: str) -> dict[str, Any]:
    """knative/prometheus/scrape.yaml as a user runs it, discovering pods through the test
    cluster's API server and scraping every `interval`."""
    scrape = next(_documents(REPO / "knative" / "prometheus" / "scrape.yaml"))
    scrape["global"]["scrape_interval"] = interval
    for job in scrape["scrape_configs"]:
        for discovery in job.get("kubernetes_sd_configs", []):
            discovery["kubeconfig_file"] = str(kubeconfig)
    return scrape


def process_endpoints(service: dict[str, Any], ip: str) -> dict[str, Any]:
    """The Endpoints of a selectorless `service` whose pod is a process at `ip`: what the
    endpoints controller would write for that pod. Knative's serverless-service reconciler
    copies activator-service's behind a revision's public Service while the activator is in
    its path (at zero, or short of burst capacity)."""
    return {
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": service["metadata"]["name"],
                     "namespace": service["metadata"]["namespace"]},
        "subsets": [{"addresses": [{"ip": ip}], "ports": [
            {"name": p["name"], "port": p.get("targetPort", p["port"]),
             "protocol": p.get("protocol", "TCP")}
            for p in service["spec"]["ports"]
        ]}],
    }


def cluster_dns(ip: str) -> dict[str, Any]:
    """kube-dns at the Service address kubeadm gives it; its one endpoint is CoreDNS, a
    process here (process_endpoints)."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
                     "labels": {"k8s-app": "kube-dns"}},
        "spec": {"clusterIP": ip, "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        ]},
    }


def corefile(kubeconfig: Path, ip: str) -> str:
    """CoreDNS's cluster zone, as kubeadm's Corefile has it, less what needs the world
    (forward, cache of upstream answers): nothing here resolves a name outside the cluster."""
    return (f".:53 {{\n    bind {ip}\n    errors\n"
            f"    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n"
            f"        kubeconfig {kubeconfig} ff-admin\n"
            f"        pods insecure\n        fallthrough in-addr.arpa ip6.arpa\n    }}\n}}\n")


def kube_proxy(kubeconfig: Path, node: str, pod_range: str) -> dict[str, Any]:
    """kube-proxy's configuration: nftables mode, as on the node `node`; conntrack's limits
    and timeouts are the kernel's (a namespace may not own them)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "mode": "nftables", "hostnameOverride": node, "clusterCIDR": pod_range,
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "metricsBindAddress": "127.0.0.1:10249", "healthzBindAddress": "127.0.0.1:10256",
        "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
    }
