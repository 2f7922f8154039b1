"""The test cluster's ingress stand-in, for Kourier: it marks every Knative KIngress Ready and
carries requests as the KIngress says.

A real ingress (Kourier, Istio) programs Envoy from each KIngress and then reports it Ready
with its load balancers; no Envoy can run here. This reports what a ready Kourier reports,
for every generation, and serves HTTP inside the cluster's namespace: a request's Host header
picks a KIngress rule, the rule's headers (a tag header) pick its path, the path's split
picks a Service by weight, and the request goes, with the split's appendHeaders, to one of
that Service's ready Endpoints, which Knative's serverless-service reconciler points at the
revision's pods or at the activator. Knative does everything else: it writes the KIngress
and the Endpoints, and sets the Route's status from this one's readiness.

What Kourier does and this does not: TLS, timeouts, retries, HTTP/2, streaming (an answer
is read whole, then sent).

Run inside the cluster's namespace as `python -m e2e.cluster.ingress KUBECONFIG PORT`.
"""

from __future__ import annotations

import datetime
import random
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import httpx
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "networking.internal.knative.dev", "v1alpha1", "ingresses"
PUBLIC = "kourier.kourier-system.svc.cluster.local"
PRIVATE = "kourier-internal.kourier-system.svc.cluster.local"
CONDITIONS = ("LoadBalancerReady", "NetworkConfigured", "Ready")
HTTP_PORT = "http"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade",
              "proxy-connection", "content-length", "host"}
UPSTREAM_TIMEOUT_S = 600.0


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


class Table:
    """What the proxy routes by: every KIngress's rules, and every Service's ready
    addresses on its `http` port (Knative's public Services name their HTTP/1 port so)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: dict[str, list[dict[str, Any]]] = {}  # KIngress uid: its rules
        self._endpoints: dict[tuple[str, str], list[str]] = {}  # (namespace, name): host:port

    def ingress(self, ingress: dict[str, Any], deleted: bool) -> None:
        with self._lock:
            uid = ingress["metadata"]["uid"]
            if deleted:
                self._rules.pop(uid, None)
            else:
                self._rules[uid] = list(ingress["spec"].get("rules") or [])

    def endpoints(self, endpoints: client.V1Endpoints, deleted: bool) -> None:
        key = (endpoints.metadata.namespace, endpoints.metadata.name)
        addresses = [
            f"{address.ip}:{port.port}"
            for subset in endpoints.subsets or []
            for port in subset.ports or [] if port.name == HTTP_PORT
            for address in subset.addresses or []
        ]
        with self._lock:
            if deleted:
                self._endpoints.pop(key, None)
            else:
                self._endpoints[key] = addresses

    def route(self, host: str, headers: dict[str, str]) -> tuple[dict[str, Any], str] | None:
        """(the split taken, an address of its Service); None when nothing serves it."""
        with self._lock:
            rules = [r for rules in self._rules.values() for r in rules
                     if host in r.get("hosts", [])]
            endpoints = dict(self._endpoints)
        for rule in rules:
            for path in rule.get("http", {}).get("paths", []):
                wanted = path.get("headers") or {}
                if all(headers.get(k.lower()) == m.get("exact") for k, m in wanted.items()):
                    splits = path.get("splits") or []
                    weights = [s.get("percent", 0) for s in splits]
                    if not splits or not any(weights):
                        return None
                    split = random.choices(splits, weights)[0]
                    service = (split["serviceNamespace"], split["serviceName"])
                    addresses = endpoints.get(service) or []
                    return (split, random.choice(addresses)) if addresses else None
        return None


def _follow(list_call: Callable[..., Any], seen: Callable[[Any, bool], None],
            items: Callable[[Any], tuple[list[Any], str]], **kwargs: Any) -> None:
    """List, report each item, then watch from the list's version; again when it ends."""
    while True:
        listed, version = items(list_call(**kwargs))
        for item in listed:
            seen(item, False)
        try:
            for event in watch.Watch().stream(list_call, resource_version=version,
                                              timeout_seconds=300, **kwargs):
                seen(event["object"], event["type"] == "DELETED")
        except ApiException as exc:
            if exc.status != 410:  # an expired version: list again
                raise


def _keep_trying(what: str, run: Callable[[], None]) -> None:
    while True:
        try:
            run()
        except Exception as exc:  # a stand-in that keeps trying, and says why
            print(f"ingress stand-in ({what}): {exc!r}; again in 1 s", file=sys.stderr,
                  flush=True)
            time.sleep(1)


def proxy(table: Table) -> type[BaseHTTPRequestHandler]:
    upstream = httpx.Client(timeout=UPSTREAM_TIMEOUT_S)

    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            host = headers.get("host", "").split(":")[0]
            body = self.rfile.read(int(headers.get("content-length") or 0))
            routed = table.route(host, headers)
            if routed is None:
                return self._answer(503, {}, f"no ready revision serves {host}\n".encode())
            split, address = routed
            sent = {**headers, **(split.get("appendHeaders") or {})}
            sent = {k: v for k, v in sent.items() if k.lower() not in HOP_BY_HOP}
            sent["Host"] = headers.get("host", "")
            try:
                answer = upstream.request(self.command, f"http://{address}{self.path}",
                                          content=body, headers=sent)
            except httpx.HTTPError as exc:
                return self._answer(502, {}, f"upstream {address}: {exc!r}\n".encode())
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
            self._answer(answer.status_code, kept, answer.content)

        def _answer(self, code: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(code)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = _any

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Proxy


class Server(ThreadingHTTPServer):
    """A thread per connection, and Envoy's listen backlog (the kernel's somaxconn): with
    socketserver's 5, a burst of new connections is reset."""

    daemon_threads = True
    request_queue_size = socket.SOMAXCONN


def main() -> None:
    config.load_kube_config(config_file=sys.argv[1])
    port = int(sys.argv[2])
    objects, core, table = client.CustomObjectsApi(), client.CoreV1Api(), Table()

    def ingress_seen(ingress: dict[str, Any], deleted: bool) -> None:
        table.ingress(ingress, deleted)
        if not deleted and not _ready(ingress):
            mark_ready(objects, ingress)

    def custom(listed: Any) -> tuple[list[Any], str]:
        body = cast(dict[str, Any], listed)
        return body["items"], body["metadata"]["resourceVersion"]

    def typed(listed: Any) -> tuple[list[Any], str]:
        return listed.items, listed.metadata.resource_version

    followers = {
        "KIngress": lambda: _follow(objects.list_cluster_custom_object, ingress_seen, custom,
                                    group=GROUP, version=VERSION, plural=PLURAL),
        "Endpoints": lambda: _follow(core.list_endpoints_for_all_namespaces, table.endpoints,
                                     typed),
    }
    for what, run in followers.items():
        threading.Thread(target=_keep_trying, args=(what, run), daemon=True).start()
    server = Server(("127.0.0.1", port), proxy(table))
    server.serve_forever()


if __name__ == "__main__":
    main()
