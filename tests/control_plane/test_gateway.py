"""The gateway with real runtime processes: the example MLP behind a real gateway on
127.0.0.1 (zygote and all), its Knative objects written to a real Redis as the local platform
writes them. The harness here serves the other test_gateway_* modules too."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import orjson
import psutil
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from forestflow_control_plane import names
from forestflow_control_plane.knative.resources import make_objects
from forestflow_control_plane.policies.desired import DesiredState, DesiredVariant
from forestflow_control_plane.settings import Settings
from forestflow_control_plane.spec.model_file import validate_model_file
from tests.support import REPO, eventually, free_port

DOMAIN = "ff.local"
INPUT = {"input": [[0.5, -1.0, 2.0, 0.25]]}
A = "autoscaling.knative.dev/"


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("mlp")
    for name in ("model.py", "build.py"):
        shutil.copy(REPO / "examples" / "mlp" / name, target)
    subprocess.run([sys.executable, str(target / "build.py")], check=True, capture_output=True)
    return target


@dataclass
class Harness:
    url: str
    home: Path
    redis: Redis
    weights: Path
    deployed: set[str] = field(default_factory=set)

    def deploy(
        self,
        contract: str,
        traffic: dict[str, int],
        shadows: Sequence[str] = (),
        annotations: dict[str, str] | None = None,
        uri: str = "mlp.safetensors",
        batch_window_ms: float = 2.0,
        timeout_ms: int | None = None,
    ) -> None:
        """Write the contract's Services and Route as LocalPlatform.apply does, with these
        autoscaling annotations on every Service, and wake the gateway."""
        data = yaml.safe_load((REPO / "examples" / "mlp" / "model.yaml").read_text())
        data["contract"]["name"] = contract
        data["variant"]["batching"]["window_ms"] = batch_window_ms
        if timeout_ms is not None:
            data["variant"]["batching"]["timeout_ms"] = timeout_ms
        data["variant"]["model"].update(uri=str(self.weights / uri), python_path=str(self.weights))
        model = validate_model_file(data)
        spec = model.variant.model_dump(mode="json", by_alias=True, exclude={"version"})
        variants = tuple(DesiredVariant(v, spec) for v in [*traffic, *shadows])
        contract_spec = model.contract.model_dump(mode="json", exclude={"name"})
        state = DesiredState(contract, contract_spec, traffic, variants)
        pipe = self.redis.pipeline()
        for obj in make_objects(state, "runtime:test"):
            meta = obj["metadata"]
            if obj["kind"] == "Service":
                obj["spec"]["template"]["metadata"]["annotations"].update(annotations or {})
            hash_key = names.LOCAL_SERVICES if obj["kind"] == "Service" else names.LOCAL_ROUTES
            field_key = names.object_key(meta["namespace"], meta["name"])
            pipe.hset(hash_key, field_key, orjson.dumps(obj))
        pipe.publish(names.LOCAL_CHANGED, contract)
        pipe.execute()
        self.deployed.add(contract)

    def remove(self, contract: str) -> None:
        namespace, _ = names.split_contract(contract)
        for hash_key in (names.LOCAL_SERVICES, names.LOCAL_ROUTES):
            for key in self.redis.hkeys(hash_key):
                text = key.decode() if isinstance(key, bytes) else key
                if text.startswith(namespace + "/"):
                    self.redis.hdel(hash_key, key)
        self.redis.publish(names.LOCAL_CHANGED, contract)
        self.deployed.discard(contract)

    def predict_url(self, contract: str) -> str:
        return f"{self.url}/contracts/{contract}/v1/{names.split_contract(contract)[1]}/predict"

    def runtime_pids(self, prefix: str = "") -> list[int]:
        """Runtimes the supervisor runs, by their PID files (`<namespace>_<service>-<port>`)."""
        pids = []
        for pid_file in (self.home / "pids" / "runtimes").glob(f"{prefix}*.pid"):
            with contextlib.suppress(FileNotFoundError, ValueError):  # one being removed
                pids.append(int(pid_file.read_text()))
        return pids

    def zygote_children(self) -> list[psutil.Process]:
        zygote = int((self.home / "pids" / "zygote.pid").read_text())
        return [p for p in psutil.Process(zygote).children() if p.status() != "zombie"]

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        text = httpx.get(self.url + "/metrics").text
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def gateway(
    redis_url: str, mlp: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    """One gateway process (`python -m forestflow_control_plane gateway`, zygote and all) per
    module; each test deploys contracts of its own."""
    home = tmp_path_factory.mktemp("gateway")
    settings = Settings(home=home, redis_url=redis_url, gateway_port=free_port(), domain=DOMAIN)
    redis = Redis.from_url(redis_url)
    redis.delete(names.LOCAL_SERVICES, names.LOCAL_ROUTES, names.LOCAL_STATUS)
    with (home / "gateway.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "forestflow_control_plane", "gateway"],
            env={**os.environ, **settings.to_env()}, stdout=log, stderr=log,
        )
    try:
        eventually(lambda: _healthy(settings.gateway_url, process), 60, "the gateway to start")
        yield Harness(settings.gateway_url, home, redis, mlp)
    finally:
        process.terminate()
        process.wait(60)
        redis.close()


def _healthy(url: str, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        pytest.fail(f"the gateway exited with {process.returncode}")
    try:
        return httpx.get(url + "/healthz").status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def gw(gateway: Harness) -> Iterator[Harness]:
    yield gateway
    for contract in list(gateway.deployed):
        gateway.remove(contract)
    eventually(lambda: not gateway.runtime_pids(), 30, "the test's runtimes to stop")


@dataclass(frozen=True)
class Answer:
    status: int
    variant: str
    text: str


async def send_many(url: str, count: int, concurrency: int) -> list[Answer]:
    """`count` predictions, `concurrency` at a time (aiohttp: httpx would be the bottleneck)."""
    answers: list[Answer] = []
    remaining = iter(range(count))
    body = orjson.dumps(INPUT)
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def worker() -> None:
            for _ in remaining:
                async with session.post(url, data=body, headers=headers) as response:
                    variant = response.headers.get("x-forestflow-variant", "")
                    answers.append(Answer(response.status, variant, await response.text()))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answers


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """`eventually`, without blocking the event loop the test's clients run on."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def served(gw: Harness, url: str, host: str | None = None) -> bool:
    """True once the gateway routes `url` (it has read the objects) and a replica answers."""
    headers = {"host": host} if host else {}
    return httpx.post(url, json=INPUT, headers=headers, timeout=60).status_code == 200


def test_the_split_follows_the_route_within_three_points(gw: Harness) -> None:
    gw.deploy("split/scoring", {"v1": 70, "v2": 30})
    url = gw.predict_url("split/scoring")
    eventually(lambda: served(gw, url), 60, "the contract to be served")
    before = {v: gw.metric("forestflow_gateway_requests_total", contract="split/scoring",
                           version=v, code="200") for v in ("v1", "v2")}
    answers = asyncio.run(send_many(url, 2000, 20))
    assert [a.status for a in answers] == [200] * 2000
    counts = Counter(a.variant for a in answers)
    assert abs(counts["v1"] / 2000 - 0.70) <= 0.03, counts
    assert abs(counts["v2"] / 2000 - 0.30) <= 0.03, counts
    for version, percent in (("v1", 70), ("v2", 30)):
        labels = {"contract": "split/scoring", "version": version}
        got = gw.metric("forestflow_gateway_requests_total", code="200", **labels)
        assert got - before[version] == counts[version]
        assert gw.metric("forestflow_gateway_traffic_percent", **labels) == percent
        assert gw.metric("forestflow_gateway_replicas", **labels) == 1


def test_a_burst_on_a_variant_at_zero_waits_for_one_hydration_then_it_goes_to_zero(
    gw: Harness,
) -> None:
    gw.deploy("burst/scoring", {"v1": 100}, annotations={A + "max-scale": "1", A +
              "scale-to-zero-pod-retention-period": "1s"})
    labels = {"contract": "burst/scoring", "version": "v1"}
    eventually(lambda: gw.metric("forestflow_gateway_replicas", **labels) == 0 and
               ("forestflow_gateway_replicas", frozenset(labels.items())) in gw.metrics(),
               10, "the gateway to know the variant")
    answers = asyncio.run(send_many(gw.predict_url("burst/scoring"), 50, 50))
    assert [a.status for a in answers] == [200] * 50, {a.text for a in answers}
    (pid,) = gw.runtime_pids("burst_")
    assert gw.metric("forestflow_gateway_hydrations_total", outcome="success", **labels) == 1
    assert gw.metric("forestflow_gateway_hydration_seconds_count", **labels) == 1

    eventually(lambda: not gw.runtime_pids("burst_"), 15, "dehydration after 1 s idle")
    eventually(lambda: not psutil.pid_exists(pid) and gw.zygote_children() == [], 15,
               "the runtime process to be gone")
    assert gw.metric("forestflow_gateway_replicas", **labels) == 0


def test_a_service_route_reaches_a_variant_no_route_targets(gw: Harness) -> None:
    gw.deploy("shadowed/scoring", {"v1": 100}, shadows=["v2"])
    contract_host = f"scoring.shadowed.{DOMAIN}"
    eventually(lambda: served(gw, f"{gw.url}/v1/scoring/predict", contract_host), 60,
               "the contract to be served")
    hosts = ("ff-scoring-v2", "scoring", "v1-scoring")
    by_host = [
        httpx.post(
            f"{gw.url}/v1/scoring/predict", json=INPUT, headers={"host": f"{h}.shadowed.{DOMAIN}"}
        )
        for h in hosts
    ]
    assert [(r.status_code, r.headers["x-forestflow-variant"]) for r in by_host] == [
        (200, "v2"), (200, "v1"), (200, "v1")
    ]
    by_path = httpx.post(
        f"{gw.url}/services/shadowed/ff-scoring-v2/v1/scoring/predict", json=INPUT, timeout=60
    )
    assert (by_path.status_code, by_path.headers["x-forestflow-variant"]) == (200, "v2")
    assert by_path.json() == by_host[0].json()
    labels = {"contract": "shadowed/scoring", "version": "v2"}
    assert gw.metric("forestflow_gateway_requests_total", code="200", **labels) == 2
    assert gw.metric("forestflow_gateway_traffic_percent", **labels) == 0
    missing = httpx.post(f"{gw.url}/services/shadowed/ff-scoring-v9/x", json=INPUT)
    assert missing.status_code == 404 and "service shadowed/ff-scoring-v9" in missing.text


GATEWAY_SERIES = [
    "forestflow_gateway_requests_total",
    "forestflow_gateway_request_duration_seconds_bucket",
    "forestflow_gateway_request_duration_seconds_count",
    "forestflow_gateway_inflight",
    "forestflow_gateway_replicas",
    "forestflow_gateway_traffic_percent",
    "forestflow_gateway_hydrations_total",
    "forestflow_gateway_hydration_seconds_bucket",
    "forestflow_gateway_restarts_total",
]


def test_metrics_count_each_answer_by_code_and_time_it(gw: Harness) -> None:
    gw.deploy("counted/scoring", {"v1": 100})
    url = gw.predict_url("counted/scoring")
    eventually(lambda: served(gw, url), 60, "the contract to be served")
    bad = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400
    answers = asyncio.run(send_many(url, 25, 5))
    assert {a.status for a in answers} == {200}
    labels = {"contract": "counted/scoring", "version": "v1"}
    metrics = gw.metrics()
    assert {name for name, _ in metrics} >= set(GATEWAY_SERIES)
    value = gw.metric
    assert value("forestflow_gateway_requests_total", code="200", **labels) == 26
    assert value("forestflow_gateway_requests_total", code="400", **labels) == 1
    assert value("forestflow_gateway_request_duration_seconds_count", **labels) == 27
    assert value("forestflow_gateway_inflight", **labels) == 0
    assert value("forestflow_gateway_replicas", **labels) == 1
    assert value("forestflow_gateway_traffic_percent", **labels) == 100
    assert value("forestflow_gateway_hydrations_total", outcome="success", **labels) == 1
    assert value("forestflow_gateway_hydrations_total", outcome="failure", **labels) == 0
    assert value("forestflow_gateway_restarts_total", **labels) == 0


def test_unknown_hosts_and_contracts_are_404_and_the_gateway_is_healthy(gw: Harness) -> None:
    assert httpx.get(gw.url + "/healthz").json() == {"status": "ok"}
    nowhere = httpx.post(f"{gw.url}/v1/x/predict", headers={"host": "example.com"})
    assert nowhere.status_code == 404 and "no contract matches" in nowhere.text
    untracked = httpx.post(f"{gw.url}/contracts/none/here/v1/x/predict", json=INPUT)
    assert untracked.status_code == 404 and "contract none/here has no traffic" in untracked.text
