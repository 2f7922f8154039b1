"""The dry-run views of the Knative objects, YAML manifests and kn commands, against golden
files."""

from __future__ import annotations

import os

import pytest

from forestflow_control_plane.knative.render import kn_commands, manifests_yaml
from forestflow_control_plane.knative.resources import make_objects
from forestflow_control_plane.policies.desired import desired_state
from tests.support import REPO

from .knative_support import IMAGE, fraud
from .test_golden import GOLDEN, snapshot

KN_GOLDEN = REPO / "knative" / "golden" / "fraud-scoring.kn.sh"


def test_dry_run_views_match_golden() -> None:
    objects = make_objects(desired_state(snapshot()), IMAGE)  # the sticky header too
    assert manifests_yaml(objects) == GOLDEN.read_text()
    text = "\n\n".join(kn_commands(objects)) + "\n"
    if os.environ.get("FF_UPDATE_GOLDEN"):
        KN_GOLDEN.write_text(text)
    assert text == KN_GOLDEN.read_text()


def test_kn_commands_refuse_what_kn_cannot_say() -> None:
    service = make_objects(fraud(), IMAGE)[0]
    service["spec"]["template"]["spec"]["volumes"] = []
    with pytest.raises(ValueError, match=r"ff-scoring-v1: kn cannot express \['volumes'\]"):
        kn_commands([service])
