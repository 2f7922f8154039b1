"""The models runtime_bench.py serves, as TorchScript files, and raw torch's throughput on
them: the ceiling any server can approach."""

import time
from pathlib import Path

import torch

MODELS = {"dummy": (128, []), "mlp_small": (768, [256, 3]), "mlp_large": (1024, [4096, 4096, 16])}


def build_model(name: str, directory: Path) -> Path:
    """A TorchScript file: the dummy doubles its input; the MLPs are Linear+ReLU stacks."""
    torch.manual_seed(0)
    width, layers = MODELS[name]
    modules: list[torch.nn.Module] = []
    for out in layers:
        modules += [torch.nn.Linear(width, out), torch.nn.ReLU()]
        width = out
    module = torch.nn.Sequential(*modules[:-1]) if modules else _Double()
    path = directory / f"{name}.pt"
    torch.jit.script(module.eval()).save(str(path))
    return path


class _Double(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def torch_throughput(model_path: Path, width: int, batch: int, seconds: float = 2.0) -> float:
    """Samples/s of bare forward passes at `batch`: the ceiling any server can approach."""
    model = torch.jit.load(str(model_path)).eval()
    x = torch.rand(batch, width)
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model(x)
            done += batch
    return done / (time.perf_counter() - start)
