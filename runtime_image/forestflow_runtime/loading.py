"""Turn a ModelSource into a warmed-up Predictor, for start-up and hot swap alike.

Runs on a worker thread: everything here blocks. Pickles (sklearn/joblib) load only when the
operator allowed them; torch state dicts load with weights_only=True or from safetensors.
"""

import importlib
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file as load_safetensors

from forestflow_runtime.artifacts import fetched
from forestflow_runtime.config import ModelFormat, ModelSource, TensorSpec
from forestflow_runtime.datatypes import NUMPY_DTYPES
from forestflow_runtime.errors import ModelLoadError
from forestflow_runtime.predictors import (
    OnnxPredictor,
    Predictor,
    SklearnPredictor,
    TorchPredictor,
)

log = logging.getLogger(__name__)


def configure_threads(cpu_threads: int | None) -> None:
    if cpu_threads is not None:
        torch.set_num_threads(cpu_threads)


def load_and_warm(source: ModelSource, inputs: tuple[TensorSpec, ...]) -> Predictor:
    """Load the artifact and run one batch of zeros through it; any failure is a ModelLoadError."""
    if source.format is ModelFormat.SKLEARN and not source.allow_pickle:
        raise ModelLoadError("sklearn models are pickles; the server runs with FF_ALLOW_PICKLE off")
    if source.format is ModelFormat.STATE_DICT and not source.model_class:
        raise ModelLoadError("state_dict models need FF_MODEL_CLASS, which this server lacks")
    try:
        with fetched(source.uri, source.format) as path:
            predictor = _load(source, path)
        warm_up(predictor, inputs)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"{source.format} model at {source.uri}: {exc}") from exc
    return predictor


def warm_up(predictor: Predictor, inputs: tuple[TensorSpec, ...]) -> None:
    """One batch-1 pass of the declared shape, so the first request pays no lazy init.

    Skipped (with a log line) when a non-batch dim is unknown: any guess could be wrong.
    """
    shapes = [spec.shape for spec in inputs]
    if any(shape is None or -1 in shape[1:] for shape in shapes):
        log.info("warm-up skipped: declared input shapes are not fully known")
        return
    zeros = [
        np.zeros((1, *(spec.shape or ())[1:]), dtype=NUMPY_DTYPES[spec.datatype]) for spec in inputs
    ]
    outputs = predictor.predict(zeros)
    for index, output in enumerate(outputs):
        if output.ndim == 0 or output.shape[0] != 1:
            raise ModelLoadError(
                f"warm-up: output {index} has shape {list(output.shape)} for a batch of 1"
            )


def _load(source: ModelSource, path: Path) -> Predictor:
    if source.format is ModelFormat.TORCHSCRIPT:
        module = torch.jit.load(str(path), map_location=source.device)
        return TorchPredictor(module.eval(), source.device, "pytorch_torchscript")
    if source.format is ModelFormat.TORCH_EXPORT:
        # Exported modules refuse .eval(); they are traced in eval mode already.
        module = torch.export.load(str(path)).module().to(source.device)
        return TorchPredictor(module, source.device, "pytorch_export")
    if source.format is ModelFormat.STATE_DICT:
        return _load_state_dict(source, path)
    if source.format is ModelFormat.ONNX:
        return _load_onnx(source, path)
    return _load_sklearn(path)


def _load_state_dict(source: ModelSource, path: Path) -> Predictor:
    cls = _import_class(source)
    if path.suffix == ".safetensors":
        state = load_safetensors(str(path), device="cpu")
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    module = cls()
    module.load_state_dict(state, strict=True)
    return TorchPredictor(module.eval().to(source.device), source.device, "pytorch_state_dict")


def _import_class(source: ModelSource) -> Any:
    if source.code_path is not None and str(source.code_path) not in sys.path:
        sys.path.insert(0, str(source.code_path))
    module_name, _, class_name = (source.model_class or "").partition(":")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(f"cannot import model class {source.model_class!r}: {exc}") from exc


def _optional(module: str, purpose: str, extra: str) -> Any:
    """Optional frameworks are imported only when a model of theirs is loaded."""
    try:
        return importlib.import_module(module)
    except ImportError:
        problem = f"{purpose} needs the {module!r} package, not installed"
        raise ModelLoadError(f"{problem}: install forestflow[{extra}]") from None


def _load_onnx(source: ModelSource, path: Path) -> Predictor:
    """On cuda:N, the CUDA provider on GPU N, with the CPU one for nodes it lacks.

    A CPU-only onnxruntime would quietly run a cuda variant on the CPU; that is refused.
    """
    ort = _optional("onnxruntime", "an onnx model", "onnx")
    providers: list[Any] = ["CPUExecutionProvider"]
    if source.device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ModelLoadError(
                f"device {source.device}: this onnxruntime has no CUDA provider; "
                "install onnxruntime-gpu"
            )
        gpu = int(source.device.partition(":")[2] or 0)
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": gpu}))
    return OnnxPredictor(ort.InferenceSession(str(path), providers=providers))


def _load_sklearn(path: Path) -> Predictor:
    joblib = _optional("joblib", "a sklearn model", "sklearn")
    return SklearnPredictor(joblib.load(path))
