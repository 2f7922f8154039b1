"""Server-side apply, as the API server does it for fake_kube.py: the manager owns the fields
it applied (lists are atomic, as in CRDs without list-type markers), a field it applied before
and no longer does goes away unless another manager owns it too, and taking a field another
manager owns with another value is a conflict unless forced. Ownership lives in
metadata.managedFields (FieldsV1), as on a cluster."""

from __future__ import annotations

import copy
from typing import Any

SERVER_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields")

Path = tuple[str, ...]


class ApplyConflictError(Exception):
    """Fields another manager owns with other values: (manager, path) each."""

    def __init__(self, conflicts: list[tuple[str, Path]]) -> None:
        super().__init__(", ".join(f"{m}: .{'.'.join(p)}" for m, p in conflicts))
        self.conflicts = conflicts


def merged(
    before: dict[str, Any] | None, config: dict[str, Any], manager: str, force: bool, now: str
) -> dict[str, Any]:
    """`before` (None: a new object) once `manager` applied `config`."""
    applied = _leaves(
        {k: v for k, v in config.items() if k not in ("apiVersion", "kind", "status")},
        skip={("metadata", "name"), ("metadata", "namespace"),
              *(("metadata", m) for m in SERVER_METADATA)},
    )
    obj = copy.deepcopy(before) if before else {
        "apiVersion": config["apiVersion"], "kind": config["kind"],
        "metadata": {"name": config["metadata"]["name"],
                     "namespace": config["metadata"].get("namespace")},
    }
    owners = _owners(obj)
    conflicts = sorted(
        (other, path) for other, paths in owners.items() if other != manager
        for path in paths & applied.keys() if _get(obj, path) != applied[path]
    )
    if conflicts and not force:
        raise ApplyConflictError(conflicts)
    for other, path in conflicts:
        owners[other].discard(path)
    others = set().union(*(p for m, p in owners.items() if m != manager))
    for path in owners.get(manager, set()) - applied.keys() - others:
        _remove(obj, path)
    for path, value in applied.items():
        _put(obj, path, value)
    owners[manager] = set(applied)
    obj["metadata"]["managedFields"] = [
        {"manager": m, "operation": "Apply", "apiVersion": config["apiVersion"], "time": now,
         "fieldsType": "FieldsV1", "fieldsV1": _fields_v1(paths)}
        for m, paths in sorted(owners.items()) if paths
    ]
    return obj


def same(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether an apply changed nothing: neither content nor who owns which field (the
    times of managedFields aside)."""
    return _state(before) == _state(after)


def _state(obj: dict[str, Any]) -> tuple[Any, dict[str, set[Path]]]:
    meta = {k: v for k, v in obj["metadata"].items() if k not in SERVER_METADATA}
    return {**obj, "metadata": meta}, _owners(obj)


def _owners(obj: dict[str, Any]) -> dict[str, set[Path]]:
    return {
        entry["manager"]: _paths(entry["fieldsV1"])
        for entry in obj["metadata"].get("managedFields") or []
    }


def _leaves(value: Any, skip: set[Path], prefix: Path = ()) -> dict[Path, Any]:
    if prefix in skip:
        return {}
    if not isinstance(value, dict) or not value:
        return {prefix: value}
    found: dict[Path, Any] = {}
    for key, child in value.items():
        found.update(_leaves(child, skip, (*prefix, key)))
    return found


def _fields_v1(paths: set[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for key in path:
            node = node.setdefault(f"f:{key}", {})
    return tree


def _paths(tree: dict[str, Any], prefix: Path = ()) -> set[Path]:
    if not tree:
        return {prefix}
    return set().union(*(_paths(child, (*prefix, key[2:])) for key, child in tree.items()))


def _get(obj: Any, path: Path) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _put(obj: dict[str, Any], path: Path, value: Any) -> None:
    for key in path[:-1]:
        if not isinstance(obj.get(key), dict):
            obj[key] = {}
        obj = obj[key]
    obj[path[-1]] = copy.deepcopy(value)


def _remove(obj: dict[str, Any], path: Path) -> None:
    """Drop the field, then the maps that it leaves empty."""
    parents = [obj]
    for key in path[:-1]:
        if not isinstance(parents[-1].get(key), dict):
            return
        parents.append(parents[-1][key])
    parents[-1].pop(path[-1], None)
    for depth in range(len(path) - 1, 0, -1):
        if parents[depth]:
            break
        del parents[depth - 1][path[depth - 1]]
