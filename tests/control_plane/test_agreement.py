"""The comparison of a shadow's answer with the primary's, row by row."""

from __future__ import annotations

import numpy as np
import pytest

from forestflow_control_plane.shadows.agreement import Agreement, MismatchError, compare

A = np.array


def probs(*rows: list[float]) -> np.ndarray:
    return A(rows, dtype=np.float32)


ROWS: list[tuple[str, dict[str, np.ndarray], dict[str, np.ndarray], Agreement]] = [
    ("identical", {"y": probs([0.1, 0.7, 0.2], [0.5, 0.3, 0.2])},
     {"y": probs([0.1, 0.7, 0.2], [0.5, 0.3, 0.2])}, Agreement(2, 2, 0.0, 0.0, 6)),
    ("one row picks another class", {"y": A([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]])},
     {"y": A([[0.1, 0.7, 0.2], [0.2, 0.3, 0.5]])}, Agreement(2, 1, 0.3, 0.6, 6)),
    ("same class, other scores", {"y": A([[0.0, 1.0], [1.0, 0.0]])},
     {"y": A([[0.25, 0.75], [0.5, 0.5]])}, Agreement(2, 2, 0.5, 1.5, 4)),
    ("rank 3: a row per position", {"y": A([[[1, 0], [0, 1], [1, 0]]])},
     {"y": A([[[1, 0], [1, 0], [1, 0]]])}, Agreement(3, 2, 1.0, 2.0, 6)),
    ("labels: a row per element", {"label": A([0, 2, 1, 1])}, {"label": A([0, 1, 1, 1])},
     Agreement(4, 3, 1.0, 1.0, 4)),
    ("a scalar", {"s": A(3.0)}, {"s": A(3.5)}, Agreement(1, 0, 0.5, 0.5, 1)),
    ("integers and floats compare as numbers", {"y": A([[1, 5]], dtype=np.int64)},
     {"y": A([[1.0, 4.0]])}, Agreement(1, 1, 1.0, 1.0, 2)),
    ("every output counts", {"a": A([[1.0, 0.0]]), "b": A([2.0, 3.0])},
     {"a": A([[0.0, 1.0]]), "b": A([2.0, 3.0])}, Agreement(3, 2, 1.0, 2.0, 4)),
    ("the shadow's extra outputs are ignored", {"y": A([[1.0, 0.0]])},
     {"y": A([[1.0, 0.0]]), "debug": A([9.0])}, Agreement(1, 1, 0.0, 0.0, 2)),
    ("an empty batch", {"y": np.zeros((0, 3))}, {"y": np.zeros((0, 3))},
     Agreement(0, 0, 0.0, 0.0, 0)),
]


@pytest.mark.parametrize(("name", "primary", "shadow", "want"), ROWS, ids=[r[0] for r in ROWS])
def test_compare(
    name: str, primary: dict[str, np.ndarray], shadow: dict[str, np.ndarray], want: Agreement
) -> None:
    got = compare(primary, shadow)
    assert (got.rows, got.agreed, got.elements) == (want.rows, want.agreed, want.elements)
    assert got.max_abs_diff == pytest.approx(want.max_abs_diff, abs=1e-6)
    assert got.abs_diff_sum == pytest.approx(want.abs_diff_sum, abs=1e-6)


def test_mean_abs_diff_is_over_elements() -> None:
    assert compare({"y": A([[0.0, 0.0]])}, {"y": A([[1.0, 0.5]])}).mean_abs_diff == 0.75
    assert Agreement(0, 0, 0.0, 0.0, 0).mean_abs_diff == 0.0


MISMATCHES: list[tuple[str, dict[str, np.ndarray], dict[str, np.ndarray], str]] = [
    ("missing output", {"y": A([[1.0]])}, {"z": A([[1.0]])}, "outputs.y: missing"),
    ("other shape", {"y": A([[1.0, 0.0]])}, {"y": A([[1.0, 0.0, 0.0]])},
     r"outputs.y: shape \[1, 3\] from the shadow, \[1, 2\] from the primary"),
    ("other batch", {"y": A([[1.0], [2.0]])}, {"y": A([[1.0]])}, "outputs.y: shape"),
    ("not numbers", {"y": A(["a", "b"])}, {"y": A(["a", "b"])},
     "outputs.y: the primary's values are not numbers"),
    ("NaN from the shadow", {"y": A([[1.0, 0.0]])}, {"y": A([[np.nan, 0.0]])},
     "outputs.y: the shadow answered NaN"),
    ("infinity from the primary", {"y": A([[np.inf]])}, {"y": A([[1.0]])},
     "outputs.y: the primary answered NaN or infinity"),
    ("no output at all", {}, {"y": A([1.0])}, "the primary answered no output"),
]


@pytest.mark.parametrize(
    ("name", "primary", "shadow", "message"), MISMATCHES, ids=[r[0] for r in MISMATCHES]
)
def test_mismatch_is_an_error_naming_the_output(
    name: str, primary: dict[str, np.ndarray], shadow: dict[str, np.ndarray], message: str
) -> None:
    with pytest.raises(MismatchError, match=message):
        compare(primary, shadow)
