"""The test cluster's kubelet stand-in, for ForestFlow's runtime pods: what a kubelet and its
container runtime do for them, with processes instead of containers.

kwok starts every pod on its fake node without running anything, and leaves these pods
Running but not Ready (manifests.py). For each one this gives the pod a network namespace of
its own with the pod's IP (a veth pair to the cluster's namespace, as a point-to-point CNI
plugin would), and runs its two containers there: the runtime image's entrypoint,
`python -m forestflow_runtime` from this checkout, with the container's env; and Knative's
own queue-proxy (built from knative.dev/serving like the rest), with its env as Knative wrote
it. It probes the queue-proxy container's readinessProbe, which asks the runtime in turn, and
reports the pod Ready once it passes, as a kubelet does. A deleted pod's processes get
SIGTERM, then SIGKILL after the grace period.

What a kubelet does and this does not: images (the runtime comes from this checkout),
volumes, restarts, resource limits, liveness probes.

Run inside the cluster's namespace as `python -m e2e.cluster.pods KUBECONFIG BIN_DIR HOME`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

SELECTOR = "forestflow.dev/contract"
QUEUE_PROXY = "queue-proxy"
# The runtime image's ENV (runtime_image/Dockerfile).
IMAGE_ENV = {"PYTHONUNBUFFERED": "1", "FF_HOST": "0.0.0.0", "FF_PORT": "8080"}
NETNS_PREFIX = "ffpod-"
GATEWAY = "169.254.1.1"  # the pod's default route: the host side of every pod's veth
PROBE_PERIOD_S = 0.25
KUBELET_AGENT = "kube-probe/1.35"
STOP_GRACE_S = 10.0


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def network(netns: str, link: str, ip: str, host: tuple[str, ...] = ()) -> None:
    """A pod's own network namespace with its `ip`, and a veth pair to it from the cluster's
    (the namespace this runs in, or `host`: `ip` arguments that name it)."""
    _ip("netns", "add", netns)
    _ip(*host, "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", netns)
    _ip(*host, "addr", "add", f"{GATEWAY}/32", "dev", link)
    _ip(*host, "link", "set", link, "up")
    # kwok hands a deleted pod's IP out again at once, while that pod may still be
    # draining (queue-proxy waits out its grace period): the new pod takes the route.
    _ip(*host, "route", "replace", f"{ip}/32", "dev", link)
    for command in (["link", "set", "lo", "up"], ["addr", "add", f"{ip}/32", "dev", "eth0"],
                    ["link", "set", "eth0", "up"],
                    ["route", "add", GATEWAY, "dev", "eth0", "scope", "link"],
                    ["route", "add", "default", "via", GATEWAY, "dev", "eth0"]):
        _ip("-n", netns, *command)


@dataclass
class Pod:
    """One pod as started: its network namespace (the veth pair goes with it) and processes."""

    netns: str
    processes: list[subprocess.Popen[bytes]]

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for process in self.processes:
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        subprocess.run(["ip", "netns", "del", self.netns], check=False)


class Kubelet:
    def __init__(self, core: client.CoreV1Api, bin_dir: Path, home: Path) -> None:
        self._core = core
        self._bin = bin_dir
        self._logs = home / "logs" / "pods"
        self._logs.mkdir(parents=True, exist_ok=True)
        self._pods: dict[str, Pod] = {}
        self._lock = threading.Lock()

    def seen(self, pod: client.V1Pod, deleted: bool) -> None:
        uid = pod.metadata.uid
        if deleted or pod.metadata.deletion_timestamp:
            with self._lock:
                started = self._pods.pop(uid, None)
            if started is not None:
                threading.Thread(target=started.stop, daemon=True).start()
            return
        ip = pod.status.pod_ip if pod.status else None
        if not ip or pod.status.phase != "Running":
            return
        with self._lock:
            if uid in self._pods:
                return
            self._pods[uid] = self._start(pod, ip)
        threading.Thread(target=self._ready_when_probed, args=(pod, ip), daemon=True).start()

    def _start(self, pod: client.V1Pod, ip: str) -> Pod:
        short = pod.metadata.uid.replace("-", "")[:10]
        netns, link = f"{NETNS_PREFIX}{short}", f"ffv{short}"
        try:
            network(netns, link, ip)
        except subprocess.CalledProcessError:
            subprocess.run(["ip", "link", "del", link], check=False)
            subprocess.run(["ip", "netns", "del", netns], check=False)
            raise
        return self._start_containers(pod, netns, ip)

    def _start_containers(self, pod: client.V1Pod, netns: str, ip: str) -> Pod:
        log = self._logs / f"{pod.metadata.namespace}.{pod.metadata.name}.log"
        processes = []
        with log.open("ab") as out:
            for container in pod.spec.containers:
                argv = [str(self._bin / "knative-queue")] if container.name == QUEUE_PROXY \
                    else [sys.executable, "-m", "forestflow_runtime"]
                image_env = {} if container.name == QUEUE_PROXY else IMAGE_ENV
                env = {**os.environ, **image_env, **_env(pod, container, ip)}
                processes.append(subprocess.Popen(
                    ["ip", "netns", "exec", netns, *argv], env=env, stdout=out, stderr=out,
                    stdin=subprocess.DEVNULL,
                ))
        print(f"pods: started {pod.metadata.namespace}/{pod.metadata.name} ({pod.metadata.uid}) "
              f"on {ip}", flush=True)
        return Pod(netns, processes)

    def _ready_when_probed(self, pod: client.V1Pod, ip: str) -> None:
        """The queue-proxy container's readinessProbe, every PROBE_PERIOD_S, until it passes
        or the pod goes; then the pod's Ready condition, as a kubelet reports it."""
        queue = next(c for c in pod.spec.containers if c.name == QUEUE_PROXY)
        probe = queue.readiness_probe.http_get
        url = f"http://{ip}:{probe.port}{probe.path or '/'}"
        # A kubelet's own User-Agent: queue-proxy answers only a kubelet's probe itself.
        headers = {"User-Agent": KUBELET_AGENT,
                   **{h.name: h.value for h in probe.http_headers or []}}
        with httpx.Client(timeout=1.0) as http:
            while pod.metadata.uid in self._pods:
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(url, headers=headers).status_code == 200:
                        break
                time.sleep(PROBE_PERIOD_S)
            else:
                return
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = {
            "conditions": [{"type": kind, "status": "True", "lastTransitionTime": now}
                           for kind in ("ContainersReady", "Ready")],
            "containerStatuses": [
                {"name": c.name, "image": c.image, "ready": True, "started": True,
                 "restartCount": 0, "state": {"running": {"startedAt": now}}}
                for c in pod.spec.containers
            ],
        }
        try:
            self._core.patch_namespaced_pod_status(
                pod.metadata.name, pod.metadata.namespace, {"status": status}
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
        print(f"pods: {pod.metadata.namespace}/{pod.metadata.name} ready", flush=True)

    def serve(self) -> None:
        """List, then watch from the list's version; start over when the watch ends."""
        while True:
            listed = self._core.list_pod_for_all_namespaces(label_selector=SELECTOR)
            for pod in listed.items:
                self.seen(pod, deleted=False)
            try:
                for event in watch.Watch().stream(
                    self._core.list_pod_for_all_namespaces, label_selector=SELECTOR,
                    resource_version=listed.metadata.resource_version, timeout_seconds=300,
                ):
                    self.seen(event["object"], deleted=event["type"] == "DELETED")
            except ApiException as exc:
                if exc.status != 410:
                    raise


def _env(pod: client.V1Pod, container: client.V1Container, ip: str) -> dict[str, str]:
    """The container's env as a kubelet resolves it: values, and the downward API fields
    Knative uses."""
    fields = {"metadata.name": pod.metadata.name, "metadata.namespace": pod.metadata.namespace,
              "status.podIP": ip, "status.hostIP": pod.status.host_ip or ""}
    env: dict[str, str] = {}
    for variable in container.env or []:
        source: Any = variable.value_from
        if source is None:
            env[variable.name] = variable.value or ""
        elif source.field_ref is not None:
            env[variable.name] = fields[source.field_ref.field_path]
    return env


def main() -> None:
    config.load_kube_config(config_file=sys.argv[1])
    kubelet = Kubelet(client.CoreV1Api(), Path(sys.argv[2]), Path(sys.argv[3]))
    while True:
        try:
            kubelet.serve()
        except Exception as exc:  # a stand-in that keeps trying, and says why
            print(f"pods stand-in: {exc!r}; again in 1 s", file=sys.stderr, flush=True)
            time.sleep(1)


if __name__ == "__main__":
    main()
