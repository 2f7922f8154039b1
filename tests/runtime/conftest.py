"""Fixtures shared by the runtime tests: one ffnets module per session, model files and gates
per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from tests.runtime.runtime_harness import Gate, write_nets_module


@pytest.fixture(scope="session")
def code_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session-wide: the module is imported once per process, so it must not move."""
    return write_nets_module(tmp_path_factory.mktemp("code"))


@pytest.fixture(scope="session")
def torchscript_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    path = tmp_path_factory.mktemp("ts") / "model.pt"
    torch.jit.script(module.eval()).save(str(path))
    return path


@pytest.fixture
def gates(code_dir: Path) -> Iterator[Callable[[], Gate]]:
    """Makes this test's Gates; all open at its end, so that no held call outlives it."""
    made: list[Gate] = []

    def make() -> Gate:
        made.append(Gate(code_dir))
        return made[-1]

    yield make
    for gate in made:
        gate.open()


@pytest.fixture
def gate(gates: Callable[[], Gate]) -> Gate:
    return gates()
