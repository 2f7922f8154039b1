"""knative_agreement's checks on the fake API; e2e/knative runs the same on the real one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from forestflow_control_plane.platforms.knative import KnativePlatform
from forestflow_control_plane.policies.desired import DesiredVariant

from . import knative_agreement as agreement
from . import knative_support as support
from .fake_kube import FakeKube
from .knative_support import fraud

kube, api, platform = support.kube, support.api, support.platform
T = TypeVar("T")
SERVED = {"v1": 90, "v2": 10}


class Fake:
    """The fake plays Knative's controllers as it answers: what will hold, holds at once."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.kube.get(plural, namespace, name)

    def names(self, plural: str, namespace: str) -> list[str]:
        return self.kube.names(plural, namespace)

    def eventually(self, check: Callable[[], T | None], what: str) -> T:
        found = check()
        assert found, f"the fake does not show {what}"
        return found

    def versions(self) -> dict[tuple[str, str], str]:
        return {
            (plural, name): self.kube.get(plural, "fraud", name)["metadata"]["resourceVersion"]
            for plural in ("services", "routes") for name in self.kube.names(plural, "fraud")
        }


def test_knatives_own_routes_survive_applies(kube: FakeKube, platform: KnativePlatform) -> None:
    agreement.knatives_own_routes_survive_applies(platform, Fake(kube), fraud(), SERVED)


def test_a_second_apply_changes_nothing(kube: FakeKube, platform: KnativePlatform) -> None:
    fake = Fake(kube)
    agreement.a_second_apply_changes_nothing(platform, fake, fraud(), SERVED, fake.versions)


def test_an_unready_version_is_no_target(kube: FakeKube, platform: KnativePlatform) -> None:
    state = fraud()
    big = {**state.variants[1].spec, "resources": {"cpu": "500"}}
    variants = (state.variants[0], DesiredVariant("v2", big), *state.variants[2:])
    stuck = replace(state, variants=variants)
    agreement.an_unready_version_is_no_target(platform, Fake(kube), stuck, "v2", {"v1": 100})
