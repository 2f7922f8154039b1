"""Artifact formats and URIs, loaded for real from files written by torch, onnx and joblib."""

import sys
from pathlib import Path

import joblib
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from sklearn.linear_model import LinearRegression

from forestflow_runtime.config import ModelFormat, ModelSource, TensorSpec
from forestflow_runtime.errors import ModelLoadError
from forestflow_runtime.loading import load_and_warm
from tests.runtime.runtime_harness import INPUT_4, affine_reference, affine_weights

BATCH = np.arange(12, dtype=np.float32).reshape(3, 4)


def affine_module(seed: int) -> torch.nn.Module:
    module = torch.nn.Linear(4, 3)
    weights = affine_weights(seed)
    module.load_state_dict({"weight": weights["linear.weight"], "bias": weights["linear.bias"]})
    return module.eval()


def check_affine(source: ModelSource, seed: int) -> None:
    predictor = load_and_warm(source, INPUT_4)
    (out,) = predictor.predict([BATCH])
    np.testing.assert_allclose(out, affine_reference(seed, torch.from_numpy(BATCH)), rtol=1e-5)


def test_torch_export_program(tmp_path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(
        affine_module(4), (torch.zeros(2, 4),), dynamic_shapes={"input": {0: batch}}
    )
    torch.export.save(program, str(tmp_path / "model.pt2"))
    check_affine(ModelSource(str(tmp_path / "model.pt2"), ModelFormat.TORCH_EXPORT), seed=4)


def test_state_dict_from_pt_file_and_directory_uri(code_dir: Path, tmp_path: Path) -> None:
    torch.save(affine_weights(5), tmp_path / "weights.pt")
    source = ModelSource(
        f"file://{tmp_path}", ModelFormat.STATE_DICT, "ffnets:Affine", code_path=code_dir
    )
    check_affine(source, seed=5)


def test_pt_state_dict_loads_weights_only(code_dir: Path, tmp_path: Path) -> None:
    torch.save({"linear.weight": object()}, tmp_path / "evil.pt")
    source = ModelSource(
        str(tmp_path / "evil.pt"), ModelFormat.STATE_DICT, "ffnets:Affine", code_path=code_dir
    )
    with pytest.raises(ModelLoadError, match="Weights only load failed"):
        load_and_warm(source, INPUT_4)


def test_warm_up_rejects_a_model_that_loses_the_batch_dim(tmp_path: Path) -> None:
    class Total(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.sum()

    torch.jit.script(Total()).save(str(tmp_path / "total.pt"))
    with pytest.raises(ModelLoadError, match="warm-up: output 0 has shape"):
        load_and_warm(ModelSource(str(tmp_path / "total.pt"), ModelFormat.TORCHSCRIPT), INPUT_4)


def test_warm_up_skipped_when_instance_shape_unknown(tmp_path: Path) -> None:
    torch.jit.script(affine_module(1)).save(str(tmp_path / "m.pt"))
    unknown = (TensorSpec("x", "FP32", (-1, -1)),)
    predictor = load_and_warm(ModelSource(str(tmp_path / "m.pt"), ModelFormat.TORCHSCRIPT), unknown)
    assert predictor.platform == "pytorch_torchscript"


LOAD_ERRORS = [
    ("ambiguous dir", ModelFormat.TORCHSCRIPT, "several .pt files"),
    ("sklearn without pickle", ModelFormat.SKLEARN, "FF_ALLOW_PICKLE"),
    ("state_dict without class", ModelFormat.STATE_DICT, "FF_MODEL_CLASS"),
]


@pytest.mark.parametrize(
    ("model_format", "message"), [r[1:] for r in LOAD_ERRORS], ids=[r[0] for r in LOAD_ERRORS]
)
def test_load_errors_say_why(tmp_path: Path, model_format: ModelFormat, message: str) -> None:
    (tmp_path / "a.pt").write_bytes(b"x")
    (tmp_path / "b.pt").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=message):
        load_and_warm(ModelSource(str(tmp_path), model_format), INPUT_4)


def save_affine_onnx(path: Path, seed: int) -> Path:
    """The affine model as a hand-built ONNX graph: torch.onnx.export needs onnxscript or its
    deprecated TorchScript path, and this way the model owes nothing to torch.

    The batch dim is symbolic, so one session serves every batch size the batcher forms.
    """
    weights = affine_weights(seed)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "weight", "bias"], ["y"], transB=1)],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[
            numpy_helper.from_array(weights["linear.weight"].numpy(), "weight"),
            numpy_helper.from_array(weights["linear.bias"].numpy(), "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def test_onnx_model_serves_any_batch_size(tmp_path: Path) -> None:
    source = ModelSource(str(save_affine_onnx(tmp_path / "model.onnx", 6)), ModelFormat.ONNX)
    predictor = load_and_warm(source, INPUT_4)
    assert predictor.platform == "onnx_onnxv1"
    for rows in (1, 3, 32):
        batch = np.linspace(-1, 1, rows * 4, dtype=np.float32).reshape(rows, 4)
        (out,) = predictor.predict([batch])
        assert out.shape == (rows, 3)
        np.testing.assert_allclose(out, affine_reference(6, torch.from_numpy(batch)), rtol=1e-5)


def test_onnx_without_onnxruntime_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    path = save_affine_onnx(tmp_path / "m.onnx", 6)
    message = r"needs the 'onnxruntime' package, not installed: install forestflow\[onnx\]"
    with pytest.raises(ModelLoadError, match=message):
        load_and_warm(ModelSource(str(path), ModelFormat.ONNX), INPUT_4)


def test_onnx_on_cuda_needs_the_cuda_provider(tmp_path: Path) -> None:
    """The dev extra's onnxruntime is the CPU build: a cuda variant must not run on the CPU."""
    path = save_affine_onnx(tmp_path / "m.onnx", 6)
    with pytest.raises(ModelLoadError, match="no CUDA provider; install onnxruntime-gpu"):
        load_and_warm(ModelSource(str(path), ModelFormat.ONNX, device="cuda:0"), INPUT_4)


def test_sklearn_joblib_loads_only_when_pickles_are_allowed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    coef, intercept = np.array([0.5, -1.0, 2.0, 0.25]), 3.0
    features = rng.normal(size=(64, 4))
    estimator = LinearRegression().fit(features, features @ coef + intercept)
    joblib.dump(estimator, tmp_path / "model.joblib")

    refused = ModelSource(str(tmp_path / "model.joblib"), ModelFormat.SKLEARN)
    with pytest.raises(ModelLoadError, match="FF_ALLOW_PICKLE"):
        load_and_warm(refused, INPUT_4)
    source = ModelSource(str(tmp_path), ModelFormat.SKLEARN, allow_pickle=True)
    predictor = load_and_warm(source, INPUT_4)
    assert predictor.platform == "sklearn"
    (out,) = predictor.predict([BATCH])
    np.testing.assert_allclose(out, BATCH.astype(np.float64) @ coef + intercept, rtol=1e-6)
