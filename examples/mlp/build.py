"""Write the example's weights deterministically (seeded), as safetensors beside this file."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from model import MLP  # noqa: E402


def build(path: Path = HERE / "mlp.safetensors", seed: int = 0) -> Path:
    torch.manual_seed(seed)
    save_file(MLP().state_dict(), str(path))
    return path


if __name__ == "__main__":
    print(f"wrote {build()}")
