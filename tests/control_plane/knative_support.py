"""What the knative platform's tests share: the fake API server and the real client on it,
the platform over them, the golden contract's desired state, and reading a Route back."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from kubernetes import client

from forestflow_control_plane.platforms.knative import KnativePlatform
from forestflow_control_plane.policies.desired import DesiredState, DesiredVariant, desired_state

from .fake_kube import FakeKube
from .test_golden import snapshot

IMAGE = "ghcr.io/forestflow/runtime:0.1.0"
SERVICES = ["ff-scoring-v1", "ff-scoring-v2", "ff-scoring-v3"]
REDIS = "redis://redis.forestflow.svc.cluster.local:6379/0"
ENV = {"FF_REDIS_URL": REDIS}


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube(namespaces=("fraud", "examples"))


@pytest.fixture
def api(kube: FakeKube) -> Iterator[client.ApiClient]:
    with kube.serve() as api:
        yield api


@pytest.fixture
def platform(api: client.ApiClient) -> KnativePlatform:
    return KnativePlatform(api, IMAGE, redis_url=REDIS)


def fraud() -> DesiredState:
    """fraud/scoring: v1 90 %, v2 10 %, v3 a shadow (the golden contract, but for its
    sticky header, which only the local gateway honours)."""
    return replace(desired_state(snapshot()), sticky_header=None)


def traffic(kube: FakeKube, namespace: str, name: str) -> list[tuple[str, int]]:
    route = kube.get("routes", namespace, name)
    assert route is not None, f"no Route {namespace}/{name}"
    return [(t["tag"], t["percent"]) for t in route["spec"]["traffic"]]


def scaled(state: DesiredState, version: str = "v2") -> DesiredState:
    """`state` with `version` allowed twice the replicas: a change to its Service alone."""
    variants = tuple(
        DesiredVariant(v.version, {**v.spec, "scaling": {**v.spec["scaling"], "max_replicas": 8}})
        if v.version == version else v
        for v in state.variants
    )
    return replace(state, variants=variants)
