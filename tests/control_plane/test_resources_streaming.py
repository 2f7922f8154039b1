"""variant.streaming -> the runtime's FF_STREAM_* env, which the runtime's own config accepts."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from forestflow_control_plane.knative.resources import make_service
from forestflow_control_plane.policies.desired import DesiredVariant
from forestflow_control_plane.spec.model_file import validate_model_file
from forestflow_runtime.config import load_config
from tests.support import REPO

EXAMPLE = yaml.safe_load((REPO / "examples" / "mlp" / "model.yaml").read_text())
DERIVED = {
    "FF_STREAM_INPUT": "mlp:in",
    "FF_STREAM_OUTPUT": "ff:stream:examples/mlp:out",
    "FF_STREAM_DEAD_LETTER": "ff:stream:examples/mlp:dead",
    "FF_STREAM_GROUP": "forestflow",
    "FF_STREAM_MAX_FAILURES": "3",
}
EXPLICIT = {
    "input_stream": "mlp:in",
    "output_stream": "mlp:results",
    "dead_letter_stream": "mlp:poison",
    "group": "scorers",
    "max_failures": 5,
}

CASES = [
    ("off", None, False, {}),
    ("defaults derive from the contract", {"input_stream": "mlp:in"}, False, DERIVED),
    ("everything set", EXPLICIT, False, {
        "FF_STREAM_INPUT": "mlp:in",
        "FF_STREAM_OUTPUT": "mlp:results",
        "FF_STREAM_DEAD_LETTER": "mlp:poison",
        "FF_STREAM_GROUP": "scorers",
        "FF_STREAM_MAX_FAILURES": "5",
    }),
    ("a shadow takes no messages", {"input_stream": "mlp:in"}, True, {}),
]  # fmt: skip


def service_env(streaming: dict[str, Any] | None, shadow: bool) -> dict[str, str]:
    data = yaml.safe_load(yaml.safe_dump(EXAMPLE))
    if streaming is not None:
        data["variant"]["streaming"] = streaming
        data["variant"]["scaling"]["min_replicas"] = 1
    model = validate_model_file(data)
    spec = model.variant.model_dump(mode="json", by_alias=True, exclude={"version"})
    if shadow:
        spec["shadow"] = {"sample_rate": 1.0}
    contract_spec = model.contract.model_dump(mode="json", exclude={"name"})
    variant = DesiredVariant(model.variant.version, spec)
    service = make_service(model.contract.name, contract_spec, variant, "runtime:test")
    container = service["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


@pytest.mark.parametrize(
    ("streaming", "shadow", "want"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_streaming_env(
    streaming: dict[str, Any] | None, shadow: bool, want: dict[str, str]
) -> None:
    env = service_env(streaming, shadow)
    assert {k: v for k, v in env.items() if k.startswith("FF_STREAM_")} == want


def test_the_runtime_reads_the_env_it_is_given() -> None:
    """The supervisor adds FF_REDIS_URL; the runtime then streams exactly as model.yaml says."""
    env = {**service_env(EXPLICIT, False), "FF_REDIS_URL": "redis://127.0.0.1:6379/0"}
    stream = load_config(env).stream
    assert (stream.input, stream.output, stream.dead_letter) == (
        "mlp:in",
        "mlp:results",
        "mlp:poison",
    )
    assert (stream.group, stream.max_failures) == ("scorers", 5)
