"""Artifact formats and URIs, loaded for real from files written by torch in tmp_path."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

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
    ("unsupported scheme", ModelFormat.TORCHSCRIPT, "unsupported URI scheme"),
    ("sklearn without pickle", ModelFormat.SKLEARN, "FF_ALLOW_PICKLE"),
    ("state_dict without class", ModelFormat.STATE_DICT, "FF_MODEL_CLASS"),
]


@pytest.mark.parametrize(
    ("model_format", "message"), [r[1:] for r in LOAD_ERRORS], ids=[r[0] for r in LOAD_ERRORS]
)
def test_load_errors_say_why(tmp_path: Path, model_format: ModelFormat, message: str) -> None:
    (tmp_path / "a.pt").write_bytes(b"x")
    (tmp_path / "b.pt").write_bytes(b"x")
    uri = "s3://bucket/model.pt" if "scheme" in message else str(tmp_path)
    with pytest.raises(ModelLoadError, match=message):
        load_and_warm(ModelSource(uri, model_format), INPUT_4)


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is not None, reason="installed")
def test_onnx_without_onnxruntime_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="needs the 'onnxruntime' package"):
        load_and_warm(ModelSource(str(tmp_path / "m.onnx"), ModelFormat.ONNX), INPUT_4)
