from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from forestflow_control_plane.model_file import (
    ModelFileError,
    check_local_artifacts,
    parse_model_file,
    validate_model_file,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = yaml.safe_load((REPO / "examples" / "mlp" / "model.yaml").read_text())


def with_change(path: str, value: object) -> dict[str, object]:
    """The example model file with one field set (or removed when value is DELETE)."""
    data = yaml.safe_load(yaml.safe_dump(EXAMPLE))
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return data


DELETE = object()

BAD = [
    ("missing version", "variant.version", DELETE, "variant.version", "Field required"),
    ("missing model", "variant.model", DELETE, "variant.model", "Field required"),
    ("unknown format", "variant.model.format", "pickle", "variant.model.format", "Input should"),
    ("misspelt field", "variant.scalling", {}, "variant.scalling", "unknown field"),
    ("bad contract name", "contract.name", "Fraud", "contract.name", "pattern"),
    ("state_dict without class", "variant.model.class", DELETE, "variant.model.class", "required"),
    ("zero dim", "contract.inputs", [{"name": "x", "datatype": "FP32", "shape": [0]}],
     "contract.inputs.0.shape", "positive"),
    ("bad device", "variant.device", "tpu", "variant.device", "pattern"),
    ("min above max", "variant.scaling.min_replicas", 5, "variant.scaling.min_replicas",
     "must not exceed"),
]


@pytest.mark.parametrize(
    ("name", "path", "value", "field", "message"), BAD, ids=[b[0] for b in BAD]
)
def test_bad_model_files_name_the_field(
    name: str, path: str, value: object, field: str, message: str
) -> None:
    with pytest.raises(ModelFileError) as info:
        validate_model_file(with_change(path, value))
    fields = {e.field: e.message for e in info.value.errors}
    assert field in fields, fields
    assert message in fields[field]


def test_example_parses_with_defaults() -> None:
    model = validate_model_file(EXAMPLE)
    assert model.contract.name == "examples/mlp"
    assert model.variant.model.model_class == "model:MLP"
    assert model.variant.batching.max_queue == 256
    assert model.rollout.phase_in.policy == "immediate"


@pytest.mark.parametrize("text", ["contract: [", "- a list", ""])
def test_not_a_mapping_or_not_yaml(text: str) -> None:
    with pytest.raises(ModelFileError):
        parse_model_file(text)


def test_missing_local_artifact_names_the_uri(tmp_path: Path) -> None:
    model = validate_model_file(with_change("variant.model.uri", str(tmp_path / "nope.pt")))
    with pytest.raises(ModelFileError) as info:
        check_local_artifacts(model)
    assert info.value.errors[0].field == "variant.model.uri"
    assert "nope.pt" in info.value.errors[0].message


def test_remote_artifacts_are_not_checked_here() -> None:
    model = validate_model_file(with_change("variant.model.uri", "https://example.com/m.pt"))
    model = model.model_copy(update={"variant": model.variant.model_copy(
        update={"model": model.variant.model.model_copy(update={"python_path": None})})})
    check_local_artifacts(model)
