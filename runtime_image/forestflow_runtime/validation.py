"""Checks of request tensors against the declared inputs, with messages that name the field.

Every failure is an InvalidRequest (400), never a 500: "inputs[0].shape: expected [-1, 4], got
[2, 3]". Conversions go through numpy in C; there are no per-element Python loops.
"""

from collections.abc import Sequence

import numpy as np

from forestflow_runtime.config import TensorSpec
from forestflow_runtime.datatypes import NUMPY_DTYPES
from forestflow_runtime.errors import InvalidRequest


def check_datatype(field: str, spec: TensorSpec, datatype: object) -> None:
    if datatype != spec.datatype:
        raise InvalidRequest(f"{field}.datatype: expected {spec.datatype}, got {datatype!r}")


def check_shape(field: str, spec: TensorSpec, shape: object) -> tuple[int, ...]:
    """The request's declared shape, as ints, matching the spec's (-1 matches any size)."""
    if not (
        isinstance(shape, list)
        and shape
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise InvalidRequest(f"{field}.shape: expected a non-empty list of sizes, got {shape!r}")
    if spec.shape is not None and not _fits(spec.shape, shape):
        raise InvalidRequest(f"{field}.shape: expected {list(spec.shape)}, got {shape}")
    return tuple(shape)


def _fits(want: Sequence[int], shape: Sequence[int]) -> bool:
    """Same rank, and every declared size is -1 (any) or equal."""
    return len(want) == len(shape) and all(w in (-1, d) for w, d in zip(want, shape, strict=True))


def array_from_json(
    field: str, spec: TensorSpec, data: object, shape: tuple[int, ...]
) -> np.ndarray:
    """JSON data (flat or nested, row-major) as an array of the declared dtype and shape."""
    if not isinstance(data, list):
        raise InvalidRequest(f"{field}.data: expected a list, got {type(data).__name__}")
    try:
        array = np.asarray(data, dtype=NUMPY_DTYPES[spec.datatype])
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidRequest(f"{field}.data: not a {spec.datatype} tensor: {exc}") from None
    expected = int(np.prod(shape))
    if array.size != expected:
        raise InvalidRequest(
            f"{field}.data: {array.size} elements do not fill shape {list(shape)} ({expected})"
        )
    return array.reshape(shape)


def array_from_bytes(
    field: str, spec: TensorSpec, raw: memoryview, shape: tuple[int, ...]
) -> np.ndarray:
    """Binary tensor extension: raw little-endian bytes of exactly the shape's size."""
    dtype = NUMPY_DTYPES[spec.datatype]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise InvalidRequest(
            f"{field}.parameters.binary_data_size: {len(raw)} bytes, shape {list(shape)} "
            f"of {spec.datatype} needs {expected}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def instances_array(field: str, spec: TensorSpec, instances: object) -> tuple[np.ndarray, bool]:
    """A v1/plain list of instances as a batch; (array, was_single_instance).

    A single instance of the declared per-instance shape is accepted too; it is run as a
    batch of one and answered unbatched.
    """
    if not isinstance(instances, list) or not instances:
        raise InvalidRequest(f"{field}: expected a non-empty list of instances")
    try:
        array = np.asarray(instances, dtype=NUMPY_DTYPES[spec.datatype])
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidRequest(f"{field}: not a {spec.datatype} tensor: {exc}") from None
    single = spec.shape is not None and array.ndim == len(spec.shape) - 1
    if single:
        array = array[np.newaxis]
    if spec.shape is not None and not _fits(spec.shape, array.shape):
        raise InvalidRequest(f"{field}.shape: expected {list(spec.shape)}, got {list(array.shape)}")
    return array, single


def check_batch(fields: Sequence[str], arrays: Sequence[np.ndarray]) -> None:
    """All inputs of one request are rows of the same batch."""
    rows = arrays[0].shape[0]
    for field, array in zip(fields[1:], arrays[1:], strict=True):
        if array.shape[0] != rows:
            raise InvalidRequest(
                f"{field}.shape[0]: batch size {array.shape[0]} differs from {fields[0]} ({rows})"
            )
    if rows == 0:
        raise InvalidRequest(f"{fields[0]}.shape[0]: batch is empty")
