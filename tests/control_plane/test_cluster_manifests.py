"""knative/control-plane.yaml against the code it runs: every field is one Kubernetes knows,
each Deployment starts a real process of the control-plane image with an environment its
Settings accept, Services reach their pods' ports, the README's steps hold (the ClusterRole:
test_cluster_rbac.py)."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from kubernetes import client
from redis import Redis

from forestflow_control_plane.api.app import create_app
from forestflow_control_plane.api.auth import Role, load_tokens
from forestflow_control_plane.composition import Parts
from forestflow_control_plane.rollouts.gate_metrics import PrometheusSource
from forestflow_control_plane.settings import Settings
from tests.support import REPO, free_port, serving

from .manifest_support import NAMESPACE, argv, deployments, documents, named, of_kind, the_container

README = REPO / "knative" / "README.md"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
# The client's model of each kind: generated from Kubernetes' OpenAPI schema.
MODELS = {
    "Namespace": "V1Namespace", "ConfigMap": "V1ConfigMap", "Service": "V1Service",
    "StatefulSet": "V1StatefulSet", "ServiceAccount": "V1ServiceAccount",
    "ClusterRole": "V1ClusterRole", "ClusterRoleBinding": "V1ClusterRoleBinding",
    "Deployment": "V1Deployment",
}
LEAVES: dict[str, type | tuple[type, ...]] = {"str": str, "int": int, "bool": bool}
# What a secretKeyRef stands for here; long enough to pass as an API token.
SECRET = "a-token-the-cluster-holds-0123456789"
PROCESSES = {"api", "worker", "mirror"}


def test_every_document_is_a_named_object_in_the_forestflow_namespace() -> None:
    docs = documents()
    assert docs
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), doc
        where = f"{doc['kind']} {doc['metadata'].get('name')}"
        assert doc["metadata"].get("name"), where
        if doc["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in doc["metadata"], where
        else:
            assert doc["metadata"].get("namespace") == NAMESPACE, where
    assert named("Namespace", NAMESPACE)


def schema_errors(value: Any, kind: str, where: str) -> list[str]:
    """Where `value` strays from the client's model `kind` (`V1Deployment`, `List[V1EnvVar]`,
    `Dict[str, str]`, `str`...): unknown keys, and leaves of the wrong type."""
    if match := re.fullmatch(r"List\[(.+)\]", kind):
        if not isinstance(value, list):
            return [f"{where}: expected a list"]
        return [e for i, v in enumerate(value) for e in schema_errors(v, match[1], f"{where}[{i}]")]
    if match := re.fullmatch(r"Dict\[str, (.+)\]", kind):
        if not isinstance(value, dict):
            return [f"{where}: expected a mapping"]
        return [e for k, v in value.items() for e in schema_errors(v, match[1], f"{where}.{k}")]
    if kind in LEAVES:
        wrong = not isinstance(value, LEAVES[kind]) or (kind == "int" and value is True)
        return [f"{where}: expected {kind}, got {value!r}"] if wrong else []
    model = getattr(client, kind, None)
    if model is None or not hasattr(model, "openapi_types"):
        return []  # `object` (int-or-string), quantities and the like: any scalar
    if not isinstance(value, dict):
        return [f"{where}: expected an object"]
    fields = {model.attribute_map[a]: t for a, t in model.openapi_types.items()}
    return [
        e
        for key, item in value.items()
        for e in (
            schema_errors(item, fields[key], f"{where}.{key}")
            if key in fields else [f"{where}.{key}: not a field of {kind}"]
        )
    ]


@pytest.mark.parametrize("doc", documents(), ids=lambda d: f"{d['kind']}-{d['metadata']['name']}")
def test_every_field_is_one_kubernetes_knows(doc: dict[str, Any]) -> None:
    assert schema_errors(doc, MODELS[doc["kind"]], doc["kind"]) == []


@functools.cache
def process_choices() -> frozenset[str]:
    """The processes `python -m forestflow_control_plane` accepts, as its --help lists them."""
    helped = subprocess.run(
        [sys.executable, "-m", "forestflow_control_plane", "--help"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    match = re.search(r"\{([\w,]+)\}", helped)
    assert match, helped
    return frozenset(match[1].split(","))


def test_each_deployment_runs_a_process_of_the_control_plane() -> None:
    assert argv({}) == ["python", "-m", "forestflow_control_plane", "api"], "default: the API"
    for deployment in of_kind("Deployment"):
        *program, process = argv(the_container(deployment))
        assert program == ["python", "-m", "forestflow_control_plane"]
        assert process in process_choices()
    assert deployments().keys() == PROCESSES
    assert len(of_kind("Deployment")) == len(PROCESSES)
    assert deployments()["worker"]["spec"]["replicas"] == 2
    assert len({the_container(d)["image"] for d in of_kind("Deployment")}) == 1, "one image"


def environment(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the process sees it; a Secret's value is `SECRET`."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert source.keys() == {"configMapRef"}, source
        env.update(named("ConfigMap", source["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        env[var["name"]] = var.get("value", SECRET)
    return env


def settings_of(process: str) -> Settings:
    return Settings.from_env(environment(the_container(deployments()[process])))


def container_port(process: str, name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in the_container(deployments()[process])["ports"]}
    return int(ports[name])


@pytest.mark.parametrize("process", sorted(PROCESSES))
def test_settings_accept_each_containers_environment(process: str) -> None:
    settings = settings_of(process)
    assert settings.platform == "knative"
    assert settings.runtime_redis_url
    assert environment(the_container(deployments()[process]))["FF_RUNTIME_IMAGE"]


def test_the_http_processes_listen_where_their_ports_and_probes_say() -> None:
    api, mirror = settings_of("api"), settings_of("mirror")
    assert api.api_host == mirror.api_host == "0.0.0.0"  # the mirror binds its metrics there
    assert api.api_port == container_port("api", "http")
    assert mirror.mirror_metrics_port == container_port("mirror", "metrics")
    for process in ("api", "mirror"):
        container = the_container(deployments()[process])
        names = {p["name"] for p in container["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            handler = container[probe].get("httpGet") or container[probe]["tcpSocket"]
            assert handler["port"] in names, f"{process} {probe}"


def test_the_api_readiness_path_answers_without_a_token(redis: Redis, redis_url: str) -> None:
    """The platform is the local one here (no cluster credentials); /healthz never uses it."""
    settings = replace(settings_of("api"), platform="local", redis_url=redis_url)
    container = the_container(deployments()["api"])
    tokens = load_tokens(environment(container))
    with serving(create_app(Parts(settings), tokens), free_port()) as url:
        response = httpx.get(url + container["readinessProbe"]["httpGet"]["path"])
    assert response.status_code == 200, response.text


def test_the_api_takes_its_admin_token_from_the_secret_the_readme_creates() -> None:
    env = environment(the_container(deployments()["api"]))
    assert load_tokens(env).principal(SECRET) is not None
    assert any(p.role == Role.ADMIN for _, p in load_tokens(env).entries)
    created = re.search(
        r"kubectl -n forestflow create secret generic ([\w-]+)((?: \\\n\s+--from-literal=[^\n]+)+)",
        README.read_text(),
    )
    assert created, "the README creates the tokens Secret"
    literals = set(re.findall(r"--from-literal=([\w-]+)=", created[2]))
    for var in the_container(deployments()["api"])["env"]:
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref is None:
            continue
        assert ref["name"] == created[1]
        assert ref["key"] in literals or ref.get("optional") is True, ref["key"]


def test_the_workers_have_the_metrics_their_rollout_gates_read() -> None:
    settings = settings_of("worker")
    source = Parts(settings).metrics_source()
    assert isinstance(source, PrometheusSource)
    source.close()


@pytest.mark.parametrize("variable", ["REDIS_URL", "FF_RUNTIME_REDIS_URL"])
def test_redis_urls_name_the_redis_service_by_its_cluster_name(variable: str) -> None:
    """Fully qualified: the runtime pods live in the contracts' namespaces."""
    for process in sorted(PROCESSES):
        url = urlsplit(environment(the_container(deployments()[process]))[variable])
        assert url.hostname, url
        service, namespace, rest = url.hostname.split(".", 2)
        assert (namespace, rest) == (NAMESPACE, "svc.cluster.local"), url.hostname
        assert url.port in {p["port"] for p in named("Service", service)["spec"]["ports"]}


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def workloads() -> list[dict[str, Any]]:
    return of_kind("Deployment") + of_kind("StatefulSet")


def test_each_workload_selects_its_own_pods_and_mounts_what_it_declares() -> None:
    for workload in workloads():
        name = workload["metadata"]["name"]
        assert workload["spec"]["selector"].keys() == {"matchLabels"}, name
        assert workload["spec"]["selector"]["matchLabels"].items() <= pod_labels(workload).items()
        others = [w for w in workloads() if w["metadata"]["name"] != name]
        assert not any(
            workload["spec"]["selector"]["matchLabels"].items() <= pod_labels(w).items()
            for w in others
        ), f"{name}'s selector also picks another workload's pods"
        volumes = {v["name"] for v in workload["spec"]["template"]["spec"].get("volumes", [])}
        volumes |= {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
        mounts = {m["name"] for m in the_container(workload).get("volumeMounts", [])}
        assert mounts <= volumes, name
    for statefulset in of_kind("StatefulSet"):
        assert named("Service", statefulset["spec"]["serviceName"])


def test_each_service_selects_one_workload_whose_container_has_its_target_ports() -> None:
    for service in of_kind("Service"):
        selector = service["spec"]["selector"].items()
        picked = [w for w in workloads() if selector <= pod_labels(w).items()]
        assert len(picked) == 1, f"Service {service['metadata']['name']}: {len(picked)} workloads"
        ports = the_container(picked[0]).get("ports", [])
        known = {p["name"] for p in ports} | {p["containerPort"] for p in ports}
        for port in service["spec"]["ports"]:
            assert port.get("targetPort", port["port"]) in known, service["metadata"]["name"]


def test_redis_keeps_an_append_only_file_on_its_claimed_volume() -> None:
    redis = named("StatefulSet", "redis")
    args = the_container(redis)["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    claims = {c["metadata"]["name"] for c in redis["spec"]["volumeClaimTemplates"]}
    mounted = {m["mountPath"]: m["name"] for m in the_container(redis)["volumeMounts"]}
    assert mounted[args[args.index("--dir") + 1]] in claims


def test_readme_names_files_that_exist() -> None:
    section = README.read_text().split("## Running the control plane in the cluster", 1)[1]
    for path in re.findall(r"`((?:knative|control_plane|runtime_image)/[\w./-]+)`", section):
        assert (REPO / path).exists(), path
