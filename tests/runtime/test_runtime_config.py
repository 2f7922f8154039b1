"""FF_* environment -> RuntimeConfig, and the failures that name their variable."""

import pytest

from forestflow_runtime.config import ConfigError, ModelFormat, TensorSpec, load_config

BASE = {"FF_MODEL_NAME": "m", "FF_MODEL_URI": "/models/m.pt"}
BAD_DTYPE = '[{"name": "x", "datatype": "F", "shape": [-1]}]'
BATCHLESS = '[{"name": "x", "datatype": "FP32", "shape": [4]}]'


def test_defaults() -> None:
    config = load_config(BASE)
    assert config.source.format is ModelFormat.TORCHSCRIPT
    assert (config.host, config.port, config.source.device) == ("127.0.0.1", 8080, "cpu")
    batching = config.batching
    assert (batching.max_batch_size, batching.window_ms, batching.max_queue) == (32, 2.0, 256)
    assert batching.request_timeout_ms == 30000
    assert config.inputs == (TensorSpec("input0", "FP32", None),)


def test_everything_set() -> None:
    config = load_config(
        {
            **BASE,
            "FF_MODEL_FORMAT": "state_dict",
            "FF_MODEL_CLASS": "nets:Net",
            "FF_DEVICE": "cuda:1",
            "FF_PORT": "9001",
            "FF_MAX_BATCH_SIZE": "8",
            "FF_BATCH_WINDOW_MS": "0.5",
            "FF_CPU_THREADS": "2",
            "FF_INPUTS": '[{"name": "x", "datatype": "FP16", "shape": [-1, 3, 8]}]',
            "FF_OUTPUTS": '[{"name": "y", "datatype": "INT64", "shape": [-1]}]',
            "FF_CONTRACT": "fraud/scoring",
            "FF_VARIANT": "v3",
            "FF_PAYLOAD_MAX_LENGTH": "500",
        }
    )
    assert config.payloads.max_stream_len == 500
    assert config.source.model_class == "nets:Net" and config.source.device == "cuda:1"
    assert config.inputs == (TensorSpec("x", "FP16", (-1, 3, 8)),)
    assert config.outputs == (TensorSpec("y", "INT64", (-1,)),)
    assert (config.port, config.cpu_threads, config.batching.window_ms) == (9001, 2, 0.5)
    assert (config.contract, config.variant) == ("fraud/scoring", "v3")


BAD = [
    ("no name", {"FF_MODEL_URI": "x"}, "FF_MODEL_NAME"),
    ("no uri", {"FF_MODEL_NAME": "m"}, "FF_MODEL_URI"),
    ("format", {**BASE, "FF_MODEL_FORMAT": "tf"}, "FF_MODEL_FORMAT"),
    ("class", {**BASE, "FF_MODEL_FORMAT": "state_dict"}, "FF_MODEL_CLASS"),
    ("pickle", {**BASE, "FF_MODEL_FORMAT": "sklearn"}, "FF_ALLOW_PICKLE"),
    ("device", {**BASE, "FF_DEVICE": "tpu"}, "FF_DEVICE"),
    ("port", {**BASE, "FF_PORT": "http"}, "FF_PORT"),
    ("port range", {**BASE, "FF_PORT": "70000"}, "FF_PORT"),
    ("batch", {**BASE, "FF_MAX_BATCH_SIZE": "0"}, "FF_MAX_BATCH_SIZE"),
    ("window", {**BASE, "FF_BATCH_WINDOW_MS": "-1"}, "FF_BATCH_WINDOW_MS"),
    ("timeout", {**BASE, "FF_REQUEST_TIMEOUT_MS": "soon"}, "FF_REQUEST_TIMEOUT_MS"),
    ("code path", {**BASE, "FF_MODEL_CODE_PATH": "/no/such/dir"}, "FF_MODEL_CODE_PATH"),
    ("inputs json", {**BASE, "FF_INPUTS": "[{"}, "FF_INPUTS"),
    ("inputs dtype", {**BASE, "FF_INPUTS": BAD_DTYPE}, "FF_INPUTS"),
    ("inputs batch", {**BASE, "FF_INPUTS": BATCHLESS}, "FF_INPUTS"),
    ("outputs", {**BASE, "FF_OUTPUTS": '{"name": "y"}'}, "FF_OUTPUTS"),
    ("sample rate", {**BASE, "FF_PAYLOAD_SAMPLE_RATE": "2"}, "FF_PAYLOAD_SAMPLE_RATE"),
    ("redis", {**BASE, "FF_PAYLOAD_SAMPLE_RATE": "0.5"}, "FF_REDIS_URL"),
    ("stream cap", {**BASE, "FF_PAYLOAD_MAX_LENGTH": "0"}, "FF_PAYLOAD_MAX_LENGTH"),
]  # fmt: skip


@pytest.mark.parametrize(("env", "variable"), [r[1:] for r in BAD], ids=[r[0] for r in BAD])
def test_bad_config_names_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env)
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")
