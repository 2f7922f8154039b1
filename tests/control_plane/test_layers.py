"""Imports flow one way (STYLE.md): the control plane imports no runtime module, not even by a
string handed to importlib, and the runtime imports nothing of ours outside its own package.
The control plane may name a runtime module only to launch it, as the `-m` of a process's argv.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO

RUNTIME = "forestflow_runtime"
# The modules the local platform runs as processes (`python -m ...`), never imports.
LAUNCHED = frozenset({"forestflow_runtime", "forestflow_runtime.zygote"})


def _names(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _bare_strings(tree: ast.AST) -> set[int]:
    """Strings that are statements of their own (docstrings): prose, not code."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }


def _launched(tree: ast.AST) -> set[int]:
    """String constants that follow "-m" in a call's arguments or a list/tuple: an argv."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            items = node.args
        elif isinstance(node, ast.List | ast.Tuple):
            items = node.elts
        else:
            continue
        for flag, value in itertools.pairwise(items):
            if isinstance(flag, ast.Constant) and flag.value == "-m":
                found.add(id(value))
    return found


def violations(source: str, package: str, launched: frozenset[str] = frozenset()) -> list[str]:
    """Each import of `package` in `source`, and each string naming it (an importlib or
    runpy argument, say) other than a docstring or one of `launched` after an argv's "-m"."""
    tree = ast.parse(source)
    prose, argv = _bare_strings(tree), _launched(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if _names(alias.name, package)]
            found += [f"{node.lineno}: import {name}" for name in names]
        elif isinstance(node, ast.ImportFrom) and _names(node.module or "", package):
            found.append(f"{node.lineno}: from {node.module} import ...")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and package in node.value
            and id(node) not in prose
            and not (node.value in launched and id(node) in argv)
        ):
            found.append(f"{node.lineno}: string {node.value!r}")
    return found


CHECKER_ROWS = [
    ("import", "import forestflow_runtime.server", 1),
    ("from-import", "from forestflow_runtime.config import load_config", 1),
    ("importlib", 'importlib.import_module("forestflow_runtime.server")', 1),
    ("dunder import", '__import__("forestflow_runtime")', 1),
    ("name kept for later", 'MODULE = "forestflow_runtime.zygote"', 1),
    ("argv of another module", '[sys.executable, "-m", "forestflow_runtime.server"]', 1),
    ("launch in a list", '[sys.executable, "-m", "forestflow_runtime"]', 0),
    ("launch in a call", 'exec_(sys.executable, "-m", "forestflow_runtime.zygote", path)', 0),
    ("docstring", '"""Started as `python -m forestflow_runtime`."""', 0),
    ("a package of another name", "import forestflow_runtimes", 0),
]


@pytest.mark.parametrize(
    ("source", "want"), [r[1:] for r in CHECKER_ROWS], ids=[r[0] for r in CHECKER_ROWS]
)
def test_the_checker_finds_imports_and_names_but_not_launches(source: str, want: int) -> None:
    assert len(violations(source, RUNTIME, LAUNCHED)) == want


def _sources(package: Path) -> Iterator[tuple[str, str]]:
    for path in sorted(package.rglob("*.py")):
        yield str(path.relative_to(REPO)), path.read_text()


def test_the_control_plane_imports_no_runtime_module() -> None:
    package = REPO / "control_plane" / "forestflow_control_plane"
    found = {
        name: problems
        for name, source in _sources(package)
        if (problems := violations(source, RUNTIME, LAUNCHED))
    }
    assert found == {}


@pytest.mark.parametrize("other", ["forestflow_control_plane", "forestflow_cli"])
def test_the_runtime_imports_nothing_of_ours_outside_its_package(other: str) -> None:
    package = REPO / "runtime_image" / "forestflow_runtime"
    found = {
        name: problems
        for name, source in _sources(package)
        if (problems := violations(source, other))
    }
    assert found == {}
