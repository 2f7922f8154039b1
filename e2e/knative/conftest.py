"""The knative platform on a real cluster: the test cluster `python -m e2e.cluster up`
starts (Kubernetes' and Knative's own servers on kwok's fake nodes, what CI runs), or kind
with Knative Serving (`kn quickstart kind`).

Every test here skips unless a kubeconfig loads and the cluster answers for
serving.knative.dev/v1 within a couple of seconds, and FF_RUNTIME_IMAGE names a runtime
image the cluster can run (for kind: `kind load docker-image IMAGE --name knative`).
FF_KUBE_CONTEXT picks the context the control plane runs as (on the test cluster, the
ServiceAccount knative/control-plane.yaml binds); the tests' own reads use FF_E2E_ADMIN_CONTEXT,
else the current one. FF_E2E_INGRESS, when set (e.g. http://127.0.0.1:80), is where requests
go, with the Route's host as the Host header, instead of resolving the Route's URL.

Scenarios that call the model do so through the ingress. On the test cluster (FF_TEST_CLUSTER
set) that is its Kourier stand-in, and the runtime pods are this checkout's runtime run by its
kubelet stand-in (e2e/cluster/pods.py, ingress.py): Knative's control plane is real, its data
path is not. Each test gets its own namespace and a private Redis; one that serves models
also two small torch.export models that answer differently, so a reply says which variant
made it: on a cluster, from an in-cluster file server (the runtime image running
`python -m http.server`); on the test cluster, whose pods share this machine's files, as
file:// URIs."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from redis import Redis

from forestflow_control_plane.platforms.knative import KnativePlatform, api_client
from forestflow_control_plane.platforms.local.redis_server import start_redis, stop_redis

from .cluster_view import Events

HERE = Path(__file__).resolve().parent
PROBE_TIMEOUT_S = 2.0
MODELS_PORT = 8000
VERSIONS = ("v1", "v2")


def _unavailable() -> str | None:
    """Why the scenarios cannot run here; None when they can."""
    if not os.environ.get("FF_RUNTIME_IMAGE"):
        return "FF_RUNTIME_IMAGE: name a runtime image the cluster can run"
    configuration = client.Configuration()
    try:
        config.load_kube_config(
            context=os.environ.get("FF_KUBE_CONTEXT") or None, client_configuration=configuration
        )
    except (config.ConfigException, OSError) as exc:
        return f"no kubeconfig: {exc}"
    configuration.retries = 0
    with client.ApiClient(configuration) as probe:
        try:
            client.CustomObjectsApi(probe).get_api_resources(
                "serving.knative.dev", "v1", _request_timeout=PROBE_TIMEOUT_S
            )
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            return f"no Knative Serving at {configuration.host}: {exc}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = [item for item in items if item.path.is_relative_to(HERE)]
    reason = _unavailable() if here else None
    if reason is not None:
        for item in here:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def kube() -> Iterator[client.ApiClient]:
    """The test's own view of the cluster (namespaces, reads): kubeconfig's current context."""
    with api_client(os.environ.get("FF_E2E_ADMIN_CONTEXT") or None) as api:
        yield api


@pytest.fixture(scope="session")
def worker_api() -> Iterator[client.ApiClient]:
    """What the control plane runs as: FF_KUBE_CONTEXT (on the test cluster, the
    ServiceAccount knative/control-plane.yaml binds)."""
    with api_client(os.environ.get("FF_KUBE_CONTEXT") or None) as api:
        yield api


@pytest.fixture
def runtime_redis(redis: Redis, tmp_path: Path) -> Iterator[str | None]:
    """The Redis URL runtime pods get for payloads: on the test cluster, whose pods share
    this machine's files, the test's own Redis through a Unix socket; else
    FF_RUNTIME_REDIS_URL (a Redis the cluster's pods reach), or none."""
    if not os.environ.get("FF_TEST_CLUSTER"):
        yield os.environ.get("FF_RUNTIME_REDIS_URL")
        return
    kwargs = redis.connection_pool.connection_kwargs
    sock = tmp_path / "redis.sock"
    bridge = subprocess.Popen(
        ["socat", f"UNIX-LISTEN:{sock},fork", f"TCP:{kwargs['host']}:{kwargs['port']}"],
        stdin=subprocess.DEVNULL,
    )
    try:
        yield f"unix://{sock}"
    finally:
        bridge.terminate()
        bridge.wait()


@pytest.fixture
def platform(worker_api: client.ApiClient, runtime_redis: str | None) -> KnativePlatform:
    return KnativePlatform(worker_api, os.environ["FF_RUNTIME_IMAGE"], redis_url=runtime_redis)


@pytest.fixture
def namespace(kube: client.ApiClient) -> Iterator[str]:
    name = f"ff-e2e-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube)
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    process, url = start_redis(tmp_path / "redis", tmp_path / "redis.log")
    connection = Redis.from_url(url)
    try:
        yield connection
    finally:
        connection.close()
        stop_redis(process)


class _Slow(torch.nn.Module):
    """The seed-0 model plus a 1500x1500 matmul per call (~0.2 s on one thread): a
    regression a gate must catch."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        busy = torch.ones(1500, 1500) @ torch.ones(1500, 1500)
        return torch.softmax(self.linear(input) + 0.0 * busy.mean(), dim=-1)


def _program(seed: int, slow: bool = False) -> bytes:
    """A 4-in, 3-out softmax model as a torch.export program; the seed sets its weights."""
    torch.manual_seed(seed)
    model = _Slow() if slow else torch.nn.Sequential(
        torch.nn.Linear(4, 3), torch.nn.Softmax(dim=-1)
    )
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(
        model, (torch.zeros(2, 4),), dynamic_shapes={"input": {0: batch}}
    )
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


@pytest.fixture
def models(kube: client.ApiClient, namespace: str, tmp_path: Path) -> str:
    """Base URL of `<version>.pt2` per version and `slow.pt2`, a slow model for gates to
    refuse: inside the cluster, a file server's; on the test cluster, a folder's."""
    programs = {f"{v}.pt2": _program(i) for i, v in enumerate(VERSIONS)}
    programs["slow.pt2"] = _program(0, slow=True)
    if os.environ.get("FF_TEST_CLUSTER"):
        folder = tmp_path / "models"
        folder.mkdir()
        for name, program in programs.items():
            (folder / name).write_bytes(program)
        return folder.as_uri()
    core, apps = client.CoreV1Api(kube), client.AppsV1Api(kube)
    labels = {"app": "ff-e2e-models"}
    files = {name: base64.b64encode(program).decode() for name, program in programs.items()}
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "models"}, "binaryData": files}
    )
    container: dict[str, Any] = {
        "name": "files",
        "image": os.environ["FF_RUNTIME_IMAGE"],
        "command": ["python", "-m", "http.server", str(MODELS_PORT), "--directory", "/srv"],
        "ports": [{"containerPort": MODELS_PORT}],
        "volumeMounts": [{"name": "models", "mountPath": "/srv"}],
        "readinessProbe": {"tcpSocket": {"port": MODELS_PORT}, "periodSeconds": 1},
    }
    apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "models", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [container],
                    "volumes": [{"name": "models", "configMap": {"name": "models"}}],
                },
            },
        },
    })
    core.create_namespaced_service(namespace, {
        "metadata": {"name": "models"},
        "spec": {"selector": labels, "ports": [{"port": MODELS_PORT}]},
    })
    deadline = time.monotonic() + 300
    while not getattr(
        apps.read_namespaced_deployment_status("models", namespace).status, "ready_replicas", 0
    ):
        if time.monotonic() > deadline:
            pytest.fail("the model file server did not become ready in 300 s")
        time.sleep(1)
    return f"http://models.{namespace}.svc.cluster.local:{MODELS_PORT}"


@pytest.fixture
def contract(namespace: str) -> str:
    return f"{namespace}/mlp"


@pytest.fixture
def route_events(kube: client.ApiClient, namespace: str) -> Iterator[Events]:
    """Every Route event in the test's namespace from the start of the test, in order."""
    events = Events(kube, namespace, "routes")
    yield events
    events.stop()
