"""Loaded models behind one call: a list of numpy arrays in, a list of numpy arrays out.

The batcher only ever sees Predictor.predict, so every framework looks the same to it; each
call runs on the model's single worker thread.
"""

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch


class Predictor(Protocol):
    platform: str

    def predict(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]: ...


class TorchPredictor:
    """A torch module (TorchScript, exported program or eager) run under inference_mode."""

    def __init__(self, module: Any, device: str, platform: str) -> None:
        self.module = module
        self.device = torch.device(device)
        self.platform = platform

    def predict(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        # from_numpy shares memory and must not see read-only buffers (binary request bodies).
        tensors = [torch.from_numpy(a if a.flags.writeable else a.copy()) for a in inputs]
        if self.device.type != "cpu":  # .to() costs ~5 us a call even when it is a no-op
            tensors = [t.to(self.device) for t in tensors]
        with torch.inference_mode():
            result = self.module(*tensors)
        return [_to_numpy(t) for t in _flatten(result)]


class OnnxPredictor:
    platform = "onnx_onnxv1"

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]

    def predict(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        feeds = dict(zip(self.input_names, inputs, strict=True))
        return [np.asarray(o) for o in self.session.run(None, feeds)]


class SklearnPredictor:
    platform = "sklearn"

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def predict(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(self.estimator.predict(*inputs))]


def _flatten(result: object) -> list[torch.Tensor]:
    """Models may return a tensor, a tuple/list of tensors, or a dict (kept in key order)."""
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, Mapping):
        return [_as_tensor(v) for v in result.values()]
    if isinstance(result, Sequence):
        return [_as_tensor(v) for v in result]
    return [_as_tensor(result)]


def _as_tensor(value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"model returned {type(value).__name__}, expected tensors")
    return value


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """C-contiguous (JSON and binary encoders need it), keeping 0-d results 0-d."""
    array = (tensor if tensor.device.type == "cpu" else tensor.cpu()).detach().numpy()
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)
