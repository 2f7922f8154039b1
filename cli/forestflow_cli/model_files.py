"""Reading a model.yaml for `ffctl deploy`: local paths are relative to the file, so they
are made absolute before the file leaves this machine."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REMOTE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]+://")


def read_model_file(path: Path) -> str:
    """The file's text with `variant.model.uri` and `python_path` made absolute. Text that
    is not a well-formed model file goes as it is: the API names what is wrong."""
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    model = _get(data, "variant", "model")
    if model is None:
        return text
    base = path.resolve().parent
    for key in ("uri", "python_path"):
        value = model.get(key)
        if isinstance(value, str) and value and not REMOTE.match(value):
            model[key] = str((base / value.removeprefix("file://")).resolve())
    return yaml.safe_dump(data, sort_keys=False)


def example_input(contract: dict[str, Any]) -> list[Any]:
    """A batch of one instance shaped like the contract's first input, for the curl line."""
    shape = [1 if d == -1 else d for d in contract["spec"]["inputs"][0]["shape"]]

    def fill(dims: list[int]) -> Any:
        if not dims:
            return 0.5
        return [fill(dims[1:]) for _ in range(dims[0])]

    return list(fill(shape))


def _get(data: Any, *keys: str) -> dict[str, Any] | None:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data if isinstance(data, dict) else None
