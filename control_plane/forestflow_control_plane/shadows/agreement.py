"""How far a shadow's answer is from the primary's, for the same request: a pure function
over the two sets of named output tensors.

A row is one prediction: every slice along the last axis of an output (one per batch
item of a `[-1, classes]` output), or, for an output of rank 0 or 1, each element (a
label). A row agrees when both pick the same class: the same argmax along the last axis,
or the same element. Absolute differences are taken element-wise over every output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


class MismatchError(ValueError):
    """The two answers cannot be compared (a missing output, another shape, a non-number);
    the message names the output."""


@dataclass(frozen=True)
class Agreement:
    """One comparison. `abs_diff_sum / elements` is the mean absolute difference."""

    rows: int
    agreed: int
    max_abs_diff: float
    abs_diff_sum: float
    elements: int

    @property
    def mean_abs_diff(self) -> float:
        return self.abs_diff_sum / self.elements if self.elements else 0.0


def compare(primary: Mapping[str, np.ndarray], shadow: Mapping[str, np.ndarray]) -> Agreement:
    """Compare the shadow's outputs with every output the primary answered; the shadow's
    extra outputs are ignored. Raises MismatchError when they cannot be compared."""
    if not primary:
        raise MismatchError("outputs: the primary answered no output")
    rows = agreed = elements = 0
    max_abs = total_abs = 0.0
    for name, want in primary.items():
        if name not in shadow:
            raise MismatchError(f"outputs.{name}: missing from the shadow's answer")
        a, b = _numbers(name, want, "primary"), _numbers(name, shadow[name], "shadow")
        if a.shape != b.shape:
            raise MismatchError(
                f"outputs.{name}: shape {list(b.shape)} from the shadow,"
                f" {list(a.shape)} from the primary"
            )
        same = _same_class(a, b)
        rows += same.size
        agreed += int(same.sum())
        if a.size:
            diff = np.abs(a - b)
            max_abs = max(max_abs, float(diff.max()))
            total_abs += float(diff.sum())
            elements += diff.size
    return Agreement(rows, agreed, max_abs, total_abs, elements)


def _same_class(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.ndim <= 1:
        return np.atleast_1d(a == b)
    if a.shape[-1] == 0:
        return np.ones(a.shape[:-1], dtype=bool).ravel()
    return (np.argmax(a, axis=-1) == np.argmax(b, axis=-1)).ravel()


def _numbers(name: str, array: np.ndarray, side: str) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise MismatchError(f"outputs.{name}: the {side}'s values are not numbers")
    values = array.astype(np.float64, copy=False)
    if not np.isfinite(values).all():
        raise MismatchError(f"outputs.{name}: the {side} answered NaN or infinity")
    return values
