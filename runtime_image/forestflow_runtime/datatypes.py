"""OIP tensor datatypes and their numpy equivalents: the one table every boundary converts by."""

import numpy as np

NUMPY_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}

_NAMES_BY_DTYPE = {dtype: name for name, dtype in NUMPY_DTYPES.items()}


def datatype_of(array: np.ndarray) -> str:
    """The OIP name of an array's dtype, for outputs whose datatype was not declared."""
    try:
        return _NAMES_BY_DTYPE[array.dtype]
    except KeyError:
        raise TypeError(f"dtype {array.dtype} has no OIP datatype") from None
