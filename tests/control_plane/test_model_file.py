from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from forestflow_control_plane.spec.model_file import (
    ModelFileError,
    check_local_artifacts,
    parse_model_file,
    validate_model_file,
)
from forestflow_control_plane.spec.reference import reference

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
    ("unknown strategy", "rollout.strategy", "blue_green", "rollout.strategy", "Input should"),
    ("misspelt gate field", "rollout.gate", {"margn": 0.1}, "rollout.gate.margn",
     "unknown field"),
    ("error rate above 1", "slo", {"error_rate": 1.5}, "slo.error_rate", "less than or equal"),
    ("zero latency slo", "slo", {"p95_latency_ms": 0}, "slo.p95_latency_ms", "greater than"),
    ("sample rate above 1", "shadow", {"sample_rate": 2}, "shadow.sample_rate",
     "less than or equal"),
    ("shadow swapped in place", "rollout.strategy", "in_place", "rollout.strategy",
     "a shadow takes no traffic"),
    ("negative ttl", "expiry", {"ttl_seconds": -1}, "expiry.ttl_seconds", "greater than"),
    ("header with a space", "routing", {"sticky_header": "x user"}, "routing.sticky_header",
     "pattern"),
    ("payload rate above 1", "variant.payload_logging", {"sample_rate": 1.1},
     "variant.payload_logging.sample_rate", "less than or equal"),
]


@pytest.mark.parametrize(
    ("name", "path", "value", "field", "message"), BAD, ids=[b[0] for b in BAD]
)
def test_bad_model_files_name_the_field(
    name: str, path: str, value: object, field: str, message: str
) -> None:
    data = with_change(path, value)
    if name == "shadow swapped in place":
        data["shadow"] = True
    with pytest.raises(ModelFileError) as info:
        validate_model_file(data)
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


@pytest.mark.parametrize(
    ("value", "rate"), [(True, 1.0), ({"sample_rate": 0.25}, 0.25), (False, None), (None, None)]
)
def test_shadow_flag_or_block(value: object, rate: float | None) -> None:
    model = validate_model_file({**EXAMPLE, "shadow": value})
    assert (model.shadow.sample_rate if model.shadow else None) == rate


def test_policies_parse() -> None:
    model = validate_model_file({
        **EXAMPLE,
        "rollout": {
            "strategy": "revision",
            "phase_in": {"policy": "canary", "steps": [10, 100], "hold_seconds": 5},
            "gate": {"margin": 0.5, "min_requests": 20},
        },
        "slo": {"p95_latency_ms": 50, "error_rate": 0.01},
        "expiry": {"keep_latest": 2, "ttl_seconds": 3600},
        "routing": {"sticky_header": "x-user-id"},
    })
    assert model.rollout.gate is not None and model.rollout.gate.margin == 0.5
    assert model.rollout.gate.recheck_seconds == 10.0
    assert model.slo.p95_latency_ms == 50
    assert model.expiry.ttl_seconds == 3600
    assert model.routing.sticky_header == "x-user-id"


def test_readme_model_yaml_reference_is_valid() -> None:
    """The README's full example documents every field: it must parse as it stands."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## model.yaml") :]
    block = section[section.index("```yaml\n") + len("```yaml\n") : section.index("```\n", 8)]
    model = parse_model_file(block)
    assert model.rollout.gate is not None and model.slo.p95_latency_ms == 50
    assert model.routing.sticky_header == "x-user-id"


STREAMING_BAD = [
    ("no input stream", {}, "variant.streaming.input_stream", "Field required"),
    ("space in stream", {"input_stream": "my in"}, "variant.streaming.input_stream", "pattern"),
    ("output is input", {"input_stream": "a", "output_stream": "a"},
     "variant.streaming.output_stream", "must differ from input_stream"),
    ("dead letter is input", {"input_stream": "a", "dead_letter_stream": "a"},
     "variant.streaming.dead_letter_stream", "must differ from input_stream"),
    ("zero failures", {"input_stream": "a", "max_failures": 0},
     "variant.streaming.max_failures", "greater than or equal"),
    ("misspelt field", {"input_stream": "a", "groupe": "g"}, "variant.streaming.groupe",
     "unknown field"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "field", "message"), [r[1:] for r in STREAMING_BAD], ids=[r[0] for r in STREAMING_BAD]
)
def test_bad_streaming_names_the_field(value: object, field: str, message: str) -> None:
    with pytest.raises(ModelFileError) as info:
        validate_model_file(with_streaming(value))
    fields = {e.field: e.message for e in info.value.errors}
    assert field in fields, fields
    assert message in fields[field]


def with_streaming(value: object, min_replicas: int = 1) -> dict[str, object]:
    data = with_change("variant.streaming", value)
    data["variant"].setdefault("scaling", {})["min_replicas"] = min_replicas  # type: ignore[attr-defined]
    return data


def test_streaming_is_off_by_default_and_needs_only_an_input_stream() -> None:
    assert validate_model_file(EXAMPLE).variant.streaming is None
    model = validate_model_file(with_streaming({"input_stream": "mlp:in"}))
    streaming = model.variant.streaming
    assert streaming is not None and streaming.input_stream == "mlp:in"
    assert (streaming.output_stream, streaming.dead_letter_stream) == (None, None)
    assert (streaming.group, streaming.max_failures) == ("forestflow", 3)


def test_a_streaming_variant_may_not_scale_to_zero() -> None:
    with pytest.raises(ModelFileError) as info:
        validate_model_file(with_streaming({"input_stream": "mlp:in"}, min_replicas=0))
    fields = {e.field: e.message for e in info.value.errors}
    assert "do not wake a variant at zero" in fields["variant.scaling.min_replicas"]


def test_readme_reference_table_is_the_schemas() -> None:
    """README's model.yaml reference is generated; FF_UPDATE_GOLDEN=1 regenerates it."""
    path = REPO / "README.md"
    readme = path.read_text()
    begin, end = "<!-- model.yaml reference: begin -->\n", "<!-- model.yaml reference: end -->"
    head, rest = readme.split(begin)
    table, tail = rest.split(end)
    if os.environ.get("FF_UPDATE_GOLDEN"):
        path.write_text(head + begin + reference() + end + tail)
        table = reference()
    assert table == reference(), "README's reference is stale: run with FF_UPDATE_GOLDEN=1"
