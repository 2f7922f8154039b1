"""OIP v2 tensors to arrays and back: the one codec that the v2 HTTP adapter and the stream
consumer share, so that a stream message is read and answered by the same rules as a request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from forestflow_runtime.dataplane import DataPlane, OutputTensor
from forestflow_runtime.errors import InvalidRequest, ModelNotReady
from forestflow_runtime.protocols.binary import BinaryReader
from forestflow_runtime.validation import (
    array_from_bytes,
    array_from_json,
    check_batch,
    check_datatype,
    check_shape,
)


def decode_inputs(
    plane: DataPlane, document: Mapping[str, object], reader: BinaryReader
) -> tuple[np.ndarray, ...]:
    """The document's `inputs` as arrays in the plane's declared order, checked against their
    specs and sharing one batch dimension; a tensor sent as binary is read from `reader`."""
    if not plane.ready:
        raise ModelNotReady("model is not ready")
    items = document.get("inputs")
    if not isinstance(items, list) or not items:
        raise InvalidRequest("inputs: expected a non-empty list of tensors")
    arrays: list[np.ndarray | None] = [None] * len(plane.inputs)
    fields: list[str] = [""] * len(plane.inputs)
    for position, item in enumerate(items):
        field = f"inputs[{position}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{field}: expected an object")
        name = item.get("name")
        index = plane.input_index.get(name) if isinstance(name, str) else None
        if index is None:
            known = ", ".join(plane.input_index)
            raise InvalidRequest(f"{field}.name: unknown input {name!r} ({known})")
        if arrays[index] is not None:
            raise InvalidRequest(f"{field}.name: input {name!r} given twice")
        spec = plane.inputs[index]
        check_datatype(field, spec, item.get("datatype"))
        shape = check_shape(field, spec, item.get("shape"))
        parameters = item.get("parameters")
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is not None:
            arrays[index] = array_from_bytes(field, spec, reader.take(field, size), shape)
        else:
            arrays[index] = array_from_json(field, spec, item.get("data"), shape)
        fields[index] = field
    reader.finish()
    missing = [spec.name for spec, a in zip(plane.inputs, arrays, strict=True) if a is None]
    if missing:
        raise InvalidRequest(f"inputs: missing {', '.join(missing)}")
    present = [a for a in arrays if a is not None]
    check_batch(fields, present)
    return tuple(present)


def encode_outputs(
    selected: Iterable[tuple[OutputTensor, bool]],
) -> tuple[list[dict[str, object]], list[bytes]]:
    """The v2 `outputs` entries, and the raw bytes of those flagged binary, in order: such an
    entry carries its size (binary_data_size) instead of its data. The entries hold numpy
    arrays, for orjson's OPT_SERIALIZE_NUMPY."""
    entries: list[dict[str, object]] = []
    binaries: list[bytes] = []
    for tensor, binary in selected:
        entry: dict[str, object] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.array.shape),
        }
        if binary:
            raw = tensor.array.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            binaries.append(raw)
        else:
            entry["data"] = tensor.array.ravel()
        entries.append(entry)
    return entries, binaries
