"""Protocol round trips against a real in-process server and a TorchScript model."""

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import torch
import tritonclient.http as triton
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from forestflow_runtime.config import ModelFormat, ModelSource, RuntimeConfig, TensorSpec
from tests.runtime.runtime_harness import INPUT_4, RunningServer, running_server

X = [[0.5, -1.0, 2.0, 3.0], [1.0, 0.0, -0.25, 4.0]]


@pytest.fixture(scope="module")
def server(torchscript_model: Path) -> Iterator[RunningServer]:
    config = RuntimeConfig(
        model_name="mlp",
        source=ModelSource(uri=f"file://{torchscript_model}", format=ModelFormat.TORCHSCRIPT),
        inputs=INPUT_4,
        outputs=(TensorSpec("scores", "FP32", (-1, 3)),),
        port=0,
        variant="v7",
    )
    with running_server(config) as running:
        yield running


@pytest.fixture(scope="module")
def expected(torchscript_model: Path) -> np.ndarray:
    module = torch.jit.load(str(torchscript_model))
    with torch.inference_mode():
        result: np.ndarray = module(torch.tensor(X)).numpy()
    return result


def test_v2_json_round_trip(server: RunningServer, expected: np.ndarray) -> None:
    body = {
        "id": "req-1",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": X}],
    }
    reply = httpx.post(f"{server.url}/v2/models/mlp/infer", json=body)
    assert reply.status_code == 200, reply.text
    document = reply.json()
    assert document["id"] == "req-1"
    assert document["model_name"] == "mlp" and document["model_version"] == "v7"
    (output,) = document["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("scores", "FP32", [2, 3])
    np.testing.assert_allclose(np.reshape(output["data"], (2, 3)), expected, rtol=1e-6)


def test_v2_versioned_path_and_metadata(server: RunningServer) -> None:
    metadata = httpx.get(f"{server.url}/v2/models/mlp/versions/v7").json()
    assert metadata["platform"] == "pytorch_torchscript"
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert metadata["versions"] == ["v7"]
    assert httpx.get(f"{server.url}/v2/models/mlp/versions/v8").status_code == 404
    assert httpx.get(f"{server.url}/v2/models/mlp/ready").json() == {"name": "mlp", "ready": True}
    assert httpx.get(f"{server.url}/v2/health/live").json() == {"live": True}
    assert "binary_tensor_data" in httpx.get(f"{server.url}/v2").json()["extensions"]


def test_v1_round_trip(server: RunningServer, expected: np.ndarray) -> None:
    reply = httpx.post(f"{server.url}/v1/models/mlp:predict", json={"instances": X})
    assert reply.status_code == 200, reply.text
    np.testing.assert_allclose(reply.json()["predictions"], expected, rtol=1e-6)


def test_plain_round_trip_batch_and_single_instance(
    server: RunningServer, expected: np.ndarray
) -> None:
    batch = httpx.post(f"{server.url}/v1/mlp/predict", json={"input": X})
    assert batch.status_code == 200, batch.text
    np.testing.assert_allclose(batch.json()["output"], expected, rtol=1e-6)
    single = httpx.post(f"{server.url}/v1/mlp/predict", json={"input": X[1]})
    np.testing.assert_allclose(single.json()["output"], expected[1], rtol=1e-6)


def _v2(shape: object, data: object, name: str = "x", datatype: str = "FP32") -> dict[str, object]:
    return {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}


V2 = "/v2/models/mlp/infer"
V1 = "/v1/models/mlp:predict"
PLAIN = "/v1/mlp/predict"
WANT_OUTPUT_Q = {**_v2([1, 4], [1] * 4), "outputs": [{"name": "q"}]}
BAD_REQUESTS = [
    ("wrong shape", V2, _v2([2, 3], [1] * 6), "inputs[0].shape: expected [-1, 4], got [2, 3]"),
    ("wrong datatype", V2, _v2([1, 4], [1] * 4, datatype="INT64"), "inputs[0].datatype"),
    ("unknown input", V2, _v2([1, 4], [1] * 4, name="z"), "inputs[0].name"),
    ("short data", V2, _v2([2, 4], [1] * 4), "inputs[0].data"),
    ("text data", V2, _v2([1, 4], ["a", "b", "c", "d"]), "inputs[0].data"),
    ("no inputs", V2, {"inputs": []}, "inputs"),
    ("unknown output", V2, WANT_OUTPUT_Q, "outputs[0].name"),
    ("v1 ragged", V1, {"instances": [[1, 2, 3, 4], [1, 2]]}, "instances"),
    ("v1 wrong width", V1, {"instances": [[1, 2, 3]]}, "instances.shape"),
    ("plain missing", PLAIN, {"inputs": [[1, 2, 3, 4]]}, "input"),
]


@pytest.mark.parametrize(
    ("path", "body", "names"), [r[1:] for r in BAD_REQUESTS], ids=[r[0] for r in BAD_REQUESTS]
)
def test_bad_input_is_400_naming_the_field(
    server: RunningServer, path: str, body: object, names: str
) -> None:
    reply = httpx.post(f"{server.url}{path}", json=body)
    assert reply.status_code == 400, reply.text
    assert names in reply.json()["error"]


@pytest.mark.parametrize("path", [V2, V1, PLAIN])
def test_malformed_json_is_400(server: RunningServer, path: str) -> None:
    reply = httpx.post(f"{server.url}{path}", content=b"{not json")
    assert reply.status_code == 400
    assert "malformed JSON" in reply.json()["error"]


@pytest.mark.parametrize(
    "path",
    ["/v2/models/other/infer", "/v1/models/other:predict", "/v1/other/predict"],
)
def test_unknown_model_is_404(server: RunningServer, path: str) -> None:
    reply = httpx.post(f"{server.url}{path}", json={"instances": X, "input": X})
    assert reply.status_code == 404
    assert "other" in reply.json()["error"]
    assert httpx.get(f"{server.url}/v2/models/other").status_code == 404


def test_openapi_and_docs(server: RunningServer) -> None:
    document = httpx.get(f"{server.url}/openapi.json").json()
    assert "/v2/models/mlp/infer" in document["paths"]
    docs = httpx.get(f"{server.url}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


V2_JSON = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": X}]}
V2_BINARY_OUT = {**V2_JSON, "outputs": [{"name": "scores", "parameters": {"binary_data": True}}]}


@pytest.mark.parametrize(("path", "body"), [
    ("/v2/models/mlp/infer", V2_JSON),
    ("/v2/models/mlp/infer", V2_BINARY_OUT),
    ("/v1/models/mlp:predict", {"instances": X}),
    ("/v1/mlp/predict", {"input": X}),
], ids=["v2", "v2-binary-out", "v1", "plain"])
def test_every_prediction_reports_its_time_in_the_runtime_as_server_timing(
    server: RunningServer, path: str, body: dict[str, object]
) -> None:
    began = time.perf_counter()
    reply = httpx.post(server.url + path, json=body)
    wall_ms = (time.perf_counter() - began) * 1000
    assert reply.status_code == 200, reply.text
    match = re.fullmatch(r"infer;dur=(\d+\.\d{3})", reply.headers["server-timing"])
    assert match is not None, reply.headers["server-timing"]
    assert 0 < float(match.group(1)) < wall_ms


def test_raw_binary_tensor_extension(server: RunningServer, expected: np.ndarray) -> None:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [2, 4],
                    "parameters": {"binary_data_size": 32},
                }
            ],
            "outputs": [{"name": "scores", "parameters": {"binary_data": True}}],
        }
    )
    body = header + np.asarray(X, dtype=np.float32).tobytes()
    reply = httpx.post(
        f"{server.url}{V2}",
        content=body,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert reply.status_code == 200, reply.text
    length = int(reply.headers["Inference-Header-Content-Length"])
    document = orjson.loads(reply.content[:length])
    assert document["outputs"][0]["parameters"] == {"binary_data_size": 24}
    scores = np.frombuffer(reply.content[length:], dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    short = httpx.post(
        f"{server.url}{V2}",
        content=body[:-4],
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert short.status_code == 400
    assert "inputs[0].parameters.binary_data_size" in short.json()["error"]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_round_trip(server: RunningServer, expected: np.ndarray, binary: bool) -> None:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        assert client.is_model_ready("mlp")
        tensor = triton.InferInput("x", [2, 4], "FP32")
        tensor.set_data_from_numpy(np.asarray(X, dtype=np.float32), binary_data=binary)
        result = client.infer(
            "mlp", [tensor], outputs=[triton.InferRequestedOutput("scores", binary_data=binary)]
        )
        np.testing.assert_allclose(result.as_numpy("scores"), expected, rtol=1e-6)
        default_outputs = client.infer("mlp", [tensor])  # asks for every output, in binary
        np.testing.assert_allclose(default_outputs.as_numpy("scores"), expected, rtol=1e-6)
    finally:
        client.close()


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
TENSORS = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["x", "y"]) | JSON_VALUES,
        "datatype": st.sampled_from(["FP32", "INT64"]) | JSON_VALUES,
        "shape": st.lists(st.integers(-2, 5), max_size=3) | JSON_VALUES,
        "data": st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), max_size=12)
        | JSON_VALUES,
        "parameters": JSON_VALUES,
    },
)


@settings(
    max_examples=50,
    deadline=None,
    phases=[Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    body=st.fixed_dictionaries(
        {}, optional={"inputs": st.lists(TENSORS, max_size=2) | JSON_VALUES, "outputs": JSON_VALUES}
    )
)
def test_any_json_body_is_answered_without_a_server_error(
    server: RunningServer, body: dict[str, object]
) -> None:
    payload = {**body, "instances": body.get("inputs"), "input": body.get("inputs")}
    with httpx.Client(base_url=server.url) as client:
        for path in (V2, V1, PLAIN):
            reply = client.post(path, json=payload)
            assert reply.status_code in (200, 400), (path, payload, reply.text)
