"""The test cluster: Kubernetes' and Knative Serving's own servers as processes inside a
network namespace of their own, set up as a cluster install would set them up.

Inside the namespace: etcd, kube-apiserver (RBAC on), kube-controller-manager,
kube-scheduler, kube-proxy and CoreDNS (Service addresses and names), kwok (a fake node),
Knative's webhook, Prometheus, and the two stand-ins of the data path: pods.py (kubelet: each
runtime pod in a network namespace of its own, reached from this one) and ingress.py
(Kourier). Knative's controller, autoscaler and activator run as its pods would, each in a
network namespace of its own with a pod address; all four Knative components on the RBAC of
Knative's own `controller` ServiceAccount. The pod and Service addresses exist only there,
and the cluster's namespace has no route anywhere else: a packet to one never leaves it.
From outside, the API server, the ingress and Prometheus are reached only through socat
pairs on 127.0.0.1 joined by Unix sockets.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config, dynamic
from kubernetes.client.exceptions import ApiException

from e2e.cluster import manifests, pki, pods

NETNS = os.environ.get("FF_CLUSTER_NETNS", "forestflow-cluster")
ETC = Path("/etc/netns")
API_PORT = 6443
HOST_IP = "10.200.0.10"  # on the namespace's loopback: where Kubernetes refuses 127.0.0.1
# The pod addresses of Knative's components that run in namespaces of their own.
COMPONENT_IPS = {"controller": "10.200.1.1", "autoscaler": "10.200.1.2",
                 "activator": "10.200.1.3"}
SERVICE_RANGE = "10.96.0.0/16"
DNS_IP = "10.96.0.10"  # kube-dns's address, as kubeadm gives it
POD_RANGE = "10.244.0.0/16"
NODE = "kwok-node-0"
RUNTIME_IMAGE = "dev.local/forestflow-runtime:cpu"  # never pulled: pods.py runs this checkout
WORKER_SA = ("forestflow", "forestflow-control-plane")
KNATIVE_SA = ("knative-serving", "controller")
INGRESS_PORT = 80
PROMETHEUS_PORT = 9095  # Knative's components keep 9090 for their own metrics
SCRAPE_INTERVAL = "1s"  # the gates' windows in the tests are tens of seconds
READY_TIMEOUT_S = 180.0
TOKEN_S = 7 * 24 * 3600


def wait(what: str, check: Callable[[], object], timeout: float = READY_TIMEOUT_S) -> None:
    """Until `check` is truthy; an error from it counts as not yet, until the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (ApiException, OSError, ValueError):
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise SystemExit(f"cluster: {what} not ready within {timeout:g} s")
        time.sleep(0.25)


class Cluster:
    def __init__(self, home: Path, bin_dir: Path) -> None:
        self.home = home
        self.bin = bin_dir
        self.manifests = bin_dir.parent / "manifests"
        self.pki = home / "pki"

    def up(self) -> Path:
        """Start everything; the env file that points clients at the cluster."""
        self.home.mkdir(parents=True)
        pki.make(self.pki, hosts=["localhost", "kubernetes", "kubernetes.default",
                                  "kubernetes.default.svc"],
                 ips=["127.0.0.1", HOST_IP, "10.96.0.1"])
        self._namespace()
        port = int(os.environ.get("FF_CLUSTER_PORT") or _free_port())
        admin = self._kubeconfig("admin.kubeconfig", port, {"ff-admin": self._admin()})
        api = config.new_client_from_config(str(admin))
        self._kubernetes(port, api)
        self._knative(api)
        token = _token(api, *WORKER_SA)
        kubeconfig = self._kubeconfig("kubeconfig", port, {
            "ff-admin": self._admin(), "ff-worker": {"token": token},
        })
        env = self.home / "env.sh"
        ingress, prometheus = self._data_plane(self.home / "inner.kubeconfig")
        env.write_text(
            f"export KUBECONFIG={kubeconfig}\nexport FF_KUBE_CONTEXT=ff-worker\n"
            f"export FF_RUNTIME_IMAGE={RUNTIME_IMAGE}\nexport FF_TEST_CLUSTER={self.home}\n"
            f"export FF_E2E_INGRESS={ingress}\nexport FF_E2E_PROMETHEUS_URL={prometheus}\n"
        )
        return env

    def _namespace(self) -> None:
        _resolv_conf(NETNS)
        subprocess.run(["ip", "netns", "add", NETNS], check=True)
        # Service addresses need a route for a connection to start; kube-proxy's rules then
        # rewrite its address to an endpoint's (and reject one that has none).
        for command in (["link", "set", "lo", "up"],
                        ["addr", "add", f"{HOST_IP}/32", "dev", "lo"],
                        ["route", "add", SERVICE_RANGE, "dev", "lo", "src", HOST_IP]):
            subprocess.run(["ip", "netns", "exec", NETNS, "ip", *command], check=True)
        # Between the pods' namespaces, as a node routes between its pods; there is no
        # route out of the cluster's.
        subprocess.run(["ip", "netns", "exec", NETNS, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                       check=True)

    def _kubernetes(self, port: int, api: client.ApiClient) -> None:
        inner = self._kubeconfig("inner.kubeconfig", API_PORT, {"ff-admin": self._admin()})
        p = self.pki
        self._start("etcd", [
            "etcd", "--data-dir", str(self.home / "etcd"), "--name", "ff",
            "--listen-client-urls", "http://127.0.0.1:2379",
            "--advertise-client-urls", "http://127.0.0.1:2379",
            "--listen-peer-urls", "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
            "--initial-cluster", "ff=http://127.0.0.1:2380", "--log-level", "warn",
            "--unsafe-no-fsync",
        ])
        self._start("kube-apiserver", [
            "kube-apiserver", "--etcd-servers", "http://127.0.0.1:2379",
            "--bind-address", "0.0.0.0", "--advertise-address", HOST_IP,
            "--secure-port", str(API_PORT), "--client-ca-file", str(p / "ca.crt"),
            "--tls-cert-file", str(p / "apiserver.crt"),
            "--tls-private-key-file", str(p / "apiserver.key"),
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-account-key-file", str(p / "sa.pub"),
            "--service-account-signing-key-file", str(p / "sa.key"),
            "--service-cluster-ip-range", SERVICE_RANGE, "--authorization-mode", "Node,RBAC",
            "--profiling=false", "--v=1",
        ])
        self._forward("api", API_PORT, port)
        core = client.CoreV1Api(api)
        wait("kube-apiserver", lambda: core.read_namespace("default", _request_timeout=2))
        identity = ["--kubeconfig", str(inner), "--authentication-kubeconfig", str(inner),
                    "--authorization-kubeconfig", str(inner), "--leader-elect=false",
                    "--bind-address", "127.0.0.1", "--v=1"]
        self._start("kube-controller-manager", [
            "kube-controller-manager", *identity,
            "--service-account-private-key-file", str(p / "sa.key"),
            "--root-ca-file", str(p / "ca.crt"), "--use-service-account-credentials",
        ])
        self._start("kube-scheduler", ["kube-scheduler", *identity])
        stages = self.home / "kwok.yaml"
        stages.write_text(manifests.kwok_stages(self.manifests))
        self._start("kwok", [
            "kwok", "--kubeconfig", str(inner), "--config", str(stages),
            "--manage-all-nodes=true", "--cidr", POD_RANGE, "--node-ip", "10.200.0.1",
            "--node-lease-duration-seconds", "40",
        ])
        core.create_node(manifests.fake_node(NODE))
        wait(f"node {NODE}", lambda: any(
            c.type == "Ready" and c.status == "True"
            for c in core.read_node(NODE).status.conditions or []
        ))
        wait("ServiceAccount default/default",
             lambda: core.read_namespaced_service_account("default", "default"))
        self._services(inner, api)

    def _services(self, inner: Path, api: client.ApiClient) -> None:
        """kube-proxy and CoreDNS: a Service's name resolves, and its address leads to one
        of its endpoints, for every process in the namespace."""
        proxy = self.home / "kube-proxy.yaml"
        proxy.write_text(yaml.safe_dump(manifests.kube_proxy(inner, NODE, POD_RANGE)))
        self._start("kube-proxy", ["kube-proxy", "--config", str(proxy), "--v=1"])
        corefile = self.home / "Corefile"
        corefile.write_text(manifests.corefile(inner, HOST_IP))
        self._start("coredns", ["coredns", "-conf", str(corefile)])
        dyn = dynamic.DynamicClient(api)
        dns = manifests.cluster_dns(DNS_IP)
        for obj in (dns, manifests.process_endpoints(dns, HOST_IP)):
            _apply(dyn, obj)
        wait("the cluster's DNS and Service addresses", lambda: subprocess.run(
            ["ip", "netns", "exec", NETNS, sys.executable, "-c",
             "import socket; socket.create_connection("
             "('kubernetes.default.svc.cluster.local', 443), timeout=2).close()"],
            capture_output=True,
        ).returncode == 0)

    def _knative(self, api: client.ApiClient) -> None:
        objects, webhooks = manifests.knative(self.manifests)
        crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
        dyn = dynamic.DynamicClient(api)
        for crd in crds:
            _apply(dyn, crd)
        extensions = client.ApiextensionsV1Api(api)
        for crd in crds:
            name = crd["metadata"]["name"]
            wait(f"CRD {name}", lambda name=name: any(
                c.type == "Established" and c.status == "True"
                for c in extensions.read_custom_resource_definition(name).status.conditions
            ))
        dyn = dynamic.DynamicClient(api)  # discovery again, with the new kinds
        for obj in [o for o in objects if o not in crds] + manifests.forestflow_rbac():
            _apply(dyn, obj)
        core = client.CoreV1Api(api)
        wait("Knative's ServiceAccount",
             lambda: core.read_namespaced_service_account(KNATIVE_SA[1], KNATIVE_SA[0]))
        inner = self._kubeconfig("knative.kubeconfig", API_PORT, {
            "knative": {"token": _token(api, *KNATIVE_SA)},
        }, host=HOST_IP)
        ips = {}
        for component in manifests.AS_PROCESSES:
            # Each in a pod's namespace of its own (their ports collide: the autoscaler's
            # stats and the controller's probes are both :8080), but the webhook: the API
            # server calls it on the cluster namespace's localhost.
            netns = NETNS if component == "webhook" else self._pod_namespace(component)
            ips[component] = HOST_IP if netns == NETNS else COMPONENT_IPS[component]
            self._start(f"knative-{component}", [f"knative-{component}"], netns=netns, env={
                "SYSTEM_NAMESPACE": "knative-serving", "KUBECONFIG": str(inner),
                "CONFIG_LOGGING_NAME": "config-logging",
                "CONFIG_OBSERVABILITY_NAME": "config-observability",
                "METRICS_DOMAIN": "knative.dev/serving", "POD_IP": ips[component],
                "POD_NAME": f"{component}-0", "WEBHOOK_NAME": "webhook", "WEBHOOK_PORT": "443",
            })
        for obj in webhooks:
            _apply(dyn, obj)
        for obj in objects:
            behind = manifests.PROCESS_SERVICES.get(obj["metadata"]["name"])
            if obj["kind"] == "Service" and behind:
                _apply(dyn, manifests.process_endpoints(obj, ips[behind]))
        wait("Knative's webhook (a dry-run Service)", lambda: _webhook_defaults(api))
        for obj in manifests.forestflow_config():
            _apply(dyn, obj)  # through Knative's ConfigMap webhook: a refusal stops here

    def _forward(self, name: str, inner: int, outer: int) -> None:
        """127.0.0.1:`outer` here to the namespace's 127.0.0.1:`inner`, through a Unix socket:
        no address of the namespace is reached from outside it. Both listen with the
        kernel's backlog: with socat's 5, a burst of new connections is reset."""
        joint, backlog = self.home / f"{name}.sock", f"backlog={socket.SOMAXCONN}"
        self._start(f"{name}-in", ["socat", f"UNIX-LISTEN:{joint},fork,{backlog}",
                                   f"TCP:127.0.0.1:{inner}"])
        self._start(f"{name}-out", ["socat",
                                    f"TCP-LISTEN:{outer},bind=127.0.0.1,fork,reuseaddr,{backlog}",
                                    f"UNIX-CONNECT:{joint}"], netns=None)

    def _data_plane(self, inner: Path) -> tuple[str, str]:
        """The stand-ins for kubelet (pods.py) and Kourier (ingress.py), and Prometheus
        scraping the runtime pods by knative/prometheus/scrape.yaml; the ingress's and
        Prometheus' URLs from outside the namespace."""
        self._start("pods", [sys.executable, "-m", "e2e.cluster.pods", str(inner),
                             str(self.bin), str(self.home)])
        self._start("ingress", [sys.executable, "-m", "e2e.cluster.ingress", str(inner),
                                str(INGRESS_PORT)])
        scrape = self.home / "prometheus.yaml"
        scrape.write_text(yaml.safe_dump(manifests.prometheus(inner, SCRAPE_INTERVAL)))
        self._start("prometheus", [
            "prometheus", "--config.file", str(scrape),
            "--storage.tsdb.path", str(self.home / "prometheus"),
            "--web.listen-address", f"127.0.0.1:{PROMETHEUS_PORT}",
        ])
        ingress, prometheus = _free_port(), _free_port()
        self._forward("ingress", INGRESS_PORT, ingress)
        self._forward("prometheus", PROMETHEUS_PORT, prometheus)
        wait("Prometheus", lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{prometheus}/-/ready", timeout=2).status == 200)
        return f"http://127.0.0.1:{ingress}", f"http://127.0.0.1:{prometheus}"

    def _pod_namespace(self, component: str) -> str:
        """A network namespace for a component that is a pod on a real cluster, with the
        pod address kept for it, and a veth pair from the cluster's namespace."""
        netns = f"{NETNS}-{component}"
        _resolv_conf(netns)
        pods.network(netns, f"ffk-{component}", COMPONENT_IPS[component], host=("-n", NETNS))
        return netns

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None,
               netns: str | None = NETNS) -> None:
        """A process of the cluster (a built binary by its name, else a command), in the
        cluster's network namespace unless told another or None; its PID goes to pids/ for
        `down`."""
        binary = self.bin / argv[0]
        command = [str(binary) if binary.exists() else argv[0], *argv[1:]]
        prefix = ["ip", "netns", "exec", netns] if netns else []
        (self.home / "logs").mkdir(exist_ok=True)
        with (self.home / "logs" / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [*prefix, *command], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})}, start_new_session=True,
            )
        (self.home / "pids").mkdir(exist_ok=True)
        (self.home / "pids" / name).write_text(str(process.pid))

    def _admin(self) -> dict[str, str]:
        return {"client-certificate": str(self.pki / "admin.crt"),
                "client-key": str(self.pki / "admin.key")}

    def _kubeconfig(self, name: str, port: int, users: dict[str, dict[str, str]],
                    host: str = "127.0.0.1") -> Path:
        """A kubeconfig with a context per user, named as the user; the first is current."""
        path = self.home / name
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": next(iter(users)),
            "clusters": [{"name": "ff", "cluster": {
                "server": f"https://{host}:{port}",
                "certificate-authority": str(self.pki / "ca.crt"),
            }}],
            "users": [{"name": user, "user": fields} for user, fields in users.items()],
            "contexts": [{"name": user, "context": {"cluster": "ff", "user": user}}
                         for user in users],
        }))
        path.chmod(0o600)
        return path


def down(home: Path) -> None:
    """Stop every process `up` started and remove the namespace; quiet when nothing runs."""
    pids = home / "pids"
    started = [int(p.read_text()) for p in pids.iterdir()] if pids.is_dir() else []
    for pid in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for pid in started:
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    runtime_pods = [line.split()[0] for line in listed.splitlines()
                    if line.startswith(pods.NETNS_PREFIX)]  # of pods stopped before pods.py
    namespaces = [NETNS, *(f"{NETNS}-{c}" for c in COMPONENT_IPS), *runtime_pods]
    for netns in namespaces:
        subprocess.run(["ip", "netns", "del", netns], stderr=subprocess.DEVNULL, check=False)
    subprocess.run(["rm", "-rf", str(home), *(str(ETC / n) for n in namespaces)], check=True)


def _resolv_conf(netns: str) -> None:
    """`ip netns exec` puts /etc/netns/<netns>/resolv.conf over /etc/resolv.conf: processes
    there ask the cluster's DNS, as a pod's resolv.conf from kubelet has them."""
    (ETC / netns).mkdir(parents=True, exist_ok=True)
    (ETC / netns / "resolv.conf").write_text(
        f"nameserver {DNS_IP}\nsearch svc.cluster.local cluster.local\n"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _apply(dyn: dynamic.DynamicClient, obj: dict[str, Any]) -> None:
    """Create, or merge into what is there (ForestFlow's ConfigMaps over Knative's)."""
    resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    namespace = obj["metadata"].get("namespace")
    try:
        resource.create(body=obj, namespace=namespace)
        return
    except ApiException as exc:
        if exc.status != 409:
            raise SystemExit(f"cluster: create {obj['kind']} {obj['metadata']['name']}: "
                             f"{exc.status} {exc.body}") from None
    try:
        resource.patch(body=obj, namespace=namespace, content_type="application/merge-patch+json")
    except ApiException as exc:
        raise SystemExit(f"cluster: {obj['kind']} {obj['metadata']['name']} refused: "
                         f"{exc.status} {exc.body}") from None


def _token(api: client.ApiClient, namespace: str, account: str) -> str:
    request = client.CoreV1Api(api).create_namespaced_service_account_token(
        account, namespace, {"spec": {"expirationSeconds": TOKEN_S}}
    )
    return str(request.status.token)


def _webhook_defaults(api: client.ApiClient) -> bool:
    """Knative's webhook has its certificate and defaults a Service: the API server
    reaches it."""
    service = {
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "probe", "namespace": "default"},
        "spec": {"template": {"spec": {"containers": [{"image": RUNTIME_IMAGE}]}}},
    }
    created = client.CustomObjectsApi(api).create_namespaced_custom_object(
        "serving.knative.dev", "v1", "default", "services", service, dry_run="All",
        _request_timeout=5,
    )
    return bool(created["spec"]["template"]["spec"].get("timeoutSeconds"))
