"""Golden manifests: what the builders make for a fixed contract, kept in knative/golden/.
Run with FF_UPDATE_GOLDEN=1 to rewrite them after an intended change, then review the diff."""

from __future__ import annotations

import os

import yaml

from forestflow_control_plane.knative.resources import make_objects
from forestflow_control_plane.policies.desired import desired_state
from forestflow_control_plane.spec.model_file import parse_model_file
from forestflow_control_plane.state.records import (
    ContractRecord,
    ContractSnapshot,
    VariantRecord,
    VariantState,
)
from tests.support import REPO

GOLDEN = REPO / "knative" / "golden" / "fraud-scoring.yaml"
MODEL_YAML = """
contract:
  name: fraud/scoring
  inputs: [{name: features, datatype: FP32, shape: [-1, 32]}]
  outputs: [{name: score, datatype: FP32, shape: [-1, 1]}]
variant:
  version: v1
  model: {uri: "https://models.example.com/fraud/v1.pt2", format: torch_export}
  resources: {cpu: "2", memory: 2Gi}
  scaling: {min_replicas: 0, max_replicas: 4, target_concurrency: 16, retention_seconds: 300,
            initial_replicas: 1, window_seconds: 60, container_concurrency: 32,
            progress_deadline_seconds: 900}
"""


def snapshot() -> ContractSnapshot:
    model = parse_model_file(MODEL_YAML)
    v1 = model.variant.model_dump(mode="json", by_alias=True, exclude={"version"})
    v2 = {
        **v1,
        "model": {**v1["model"], "uri": "https://models.example.com/fraud/v2.pt2"},
        "routing": {"sticky_header": "x-customer-id"},
    }
    v3 = {
        **v1,
        "model": {**v1["model"], "uri": "https://models.example.com/fraud/v3.pt2"},
        "shadow": {"sample_rate": 0.1},
        "payload_logging": {"sample_rate": 0.1, "max_length": 1000},
    }
    contract = ContractRecord(
        "fraud/scoring",
        model.contract.model_dump(mode="json", exclude={"name"}),
        traffic={"v1": 90, "v2": 10},
    )
    variants = {
        "v1": VariantRecord("fraud/scoring", "v1", v1, VariantState.SERVING, created_at=1.0),
        "v2": VariantRecord("fraud/scoring", "v2", v2, VariantState.PHASING_IN, created_at=2.0),
        "v3": VariantRecord("fraud/scoring", "v3", v3, VariantState.SHADOW, created_at=3.0),
    }
    return ContractSnapshot(contract, variants)


def test_manifests_match_golden() -> None:
    objects = make_objects(desired_state(snapshot()), "ghcr.io/forestflow/runtime:0.1.0")
    text = yaml.safe_dump_all(objects, sort_keys=False)
    if os.environ.get("FF_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()
