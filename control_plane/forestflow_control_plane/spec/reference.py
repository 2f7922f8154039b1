"""The model.yaml reference as a Markdown table, generated from the schema itself, so the
README's reference can never disagree with what `ffctl deploy` accepts.

`python -m forestflow_control_plane.spec.reference` prints it.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from forestflow_control_plane.spec.model_file import ModelFile


def reference() -> str:
    rows = ["| field | type | default | what |", "| --- | --- | --- | --- |"]
    rows += [
        f"| `{path}` | {kind} | {default} | {what} |"
        for path, kind, default, what in _fields(ModelFile, "")
    ]
    return "\n".join(rows) + "\n"


def _fields(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str, str, str]]:
    for name, info in model.model_fields.items():
        path = prefix + (info.alias or name)
        nested = _model_of(info.annotation)
        yield path, _kind(info.annotation), _default(info), _what(info, nested)
        if nested is not None:
            yield from _fields(nested, path + "[]." if _is_list(info.annotation) else path + ".")


def _model_of(annotation: Any) -> type[BaseModel] | None:
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) is list


def _kind(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_kind(a) for a in args if a is not type(None)) + " (optional)"
    if origin is list:
        return f"list of {_kind(args[0])}"
    if origin is typing.Annotated:
        return _kind(args[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.default
    if value is PydanticUndefined or value is None or isinstance(value, BaseModel):
        return ""
    return f"`{str(value).lower() if isinstance(value, bool) else value}`"


def _what(info: FieldInfo, nested: type[BaseModel] | None) -> str:
    """The field's description, else the first sentence of its section's docstring."""
    text = info.description or ""
    if not text and nested is not None and nested.__doc__:
        text = " ".join(nested.__doc__.split()).split(". ")[0].rstrip(".")
    return text.replace("|", "\\|")


if __name__ == "__main__":
    print(reference(), end="")
