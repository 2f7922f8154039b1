"""The control plane's shape, held by tests: rooms by concern, one entry that reads the
environment, one composition root that picks concrete platforms, no module over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import REPO

PACKAGE = REPO / "control_plane" / "forestflow_control_plane"
CONCRETE = (
    "forestflow_control_plane.platforms.knative",
    "forestflow_control_plane.platforms.local",
)
SOURCES = ("control_plane", "runtime_image", "cli", "tests", "e2e", "bench")


def modules(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if ".venv" not in p.parts)


def imported(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_the_top_level_holds_at_most_eight_modules_beside_its_subpackages() -> None:
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= 8, top


def test_every_subpackage_says_what_it_owns() -> None:
    for init in PACKAGE.rglob("__init__.py"):
        assert ast.get_docstring(ast.parse(init.read_text())), init


def test_concrete_platforms_are_imported_only_by_the_composition_root_and_platforms() -> None:
    for path in modules(PACKAGE):
        inside = path.relative_to(PACKAGE)
        if inside.parts[0] == "platforms" or inside.name == "composition.py":
            continue
        wrong = {m for m in imported(path) if m.startswith(CONCRETE)}
        assert not wrong, f"{inside} imports {sorted(wrong)}"


def test_settings_are_read_from_the_environment_only_at_process_entry() -> None:
    """`python -m forestflow_control_plane` and `ffctl up`'s launcher are the entries."""
    entries = {PACKAGE / "__main__.py", PACKAGE / "platforms" / "local" / "launcher.py"}
    for path in modules(PACKAGE):
        if path not in entries:
            assert "from_env(" not in path.read_text() or path.name == "settings.py", path


@pytest.mark.parametrize("source", SOURCES)
def test_no_module_is_over_400_lines(source: str) -> None:
    long = {str(p.relative_to(REPO)): n for p in modules(REPO / source)
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
