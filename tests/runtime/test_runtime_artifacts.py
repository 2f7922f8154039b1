"""Artifact URIs through fsspec: real models written into fsspec's in-process memory:// store."""

import io
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch
from safetensors.torch import save

from forestflow_runtime.config import ModelFormat, ModelSource
from forestflow_runtime.errors import ModelLoadError
from forestflow_runtime.loading import load_and_warm
from tests.runtime.runtime_harness import INPUT_4, affine_reference, affine_weights

BATCH = np.arange(12, dtype=np.float32).reshape(3, 4)
MEMORY = fsspec.filesystem("memory")


@pytest.fixture
def store() -> Iterator[str]:
    """A fresh folder in the memory filesystem (one per process, so shared): its memory:// URI."""
    root = f"/ff-test-{uuid.uuid4().hex}"
    MEMORY.mkdir(root)
    yield f"memory://{root}"
    MEMORY.rm(root, recursive=True)


def put(uri: str, data: bytes) -> str:
    MEMORY.pipe_file(uri.removeprefix("memory://"), data)
    return uri


def test_torchscript_file_from_memory_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, store: str, torchscript_model: Path
) -> None:
    """Downloaded into a temp dir that is gone once the model is loaded."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    uri = put(f"{store}/models/model.pt", torchscript_model.read_bytes())
    predictor = load_and_warm(ModelSource(uri, ModelFormat.TORCHSCRIPT), INPUT_4)
    assert list(tmp_path.iterdir()) == []
    (out,) = predictor.predict([BATCH])
    with torch.inference_mode():
        want = torch.jit.load(str(torchscript_model))(torch.from_numpy(BATCH))
    np.testing.assert_allclose(out, want.numpy(), rtol=1e-5)


def test_state_dict_directory_prefers_safetensors(code_dir: Path, store: str) -> None:
    """The .safetensors file wins over a .pt one, and keeps its name so its reader is used."""
    put(f"{store}/v3/weights.safetensors", save(affine_weights(7)))
    legacy = io.BytesIO()
    torch.save(affine_weights(8), legacy)
    put(f"{store}/v3/weights.pt", legacy.getvalue())
    put(f"{store}/v3/README.md", b"not a model")
    source = ModelSource(f"{store}/v3", ModelFormat.STATE_DICT, "ffnets:Affine", code_path=code_dir)
    (out,) = load_and_warm(source, INPUT_4).predict([BATCH])
    np.testing.assert_allclose(out, affine_reference(7, torch.from_numpy(BATCH)), rtol=1e-5)


FETCH_ERRORS = [
    ("unknown protocol", "nosuch://bucket/model.pt", None, "unsupported URI scheme 'nosuch'"),
    (
        "backend not installed",
        "s3://bucket/model.pt",
        "s3fs",
        r"s3:// artifacts: Install s3fs .*\(install forestflow\[remote\]\)",
    ),
    (
        "fsspec not installed",
        "memory://bucket/model.pt",
        "fsspec",
        r"memory:// artifacts need fsspec: install forestflow\[remote\]",
    ),
    ("missing object", "memory://ff-test-nowhere/model.pt", None, "does not exist"),
]


@pytest.mark.parametrize(
    ("uri", "absent", "message"), [r[1:] for r in FETCH_ERRORS], ids=[r[0] for r in FETCH_ERRORS]
)
def test_fetch_errors_say_what_to_do(
    monkeypatch: pytest.MonkeyPatch, uri: str, absent: str | None, message: str
) -> None:
    if absent is not None:  # a None entry makes `import absent` raise ImportError
        monkeypatch.setitem(sys.modules, absent, None)
    with pytest.raises(ModelLoadError, match=message):
        load_and_warm(ModelSource(uri, ModelFormat.TORCHSCRIPT), INPUT_4)


DIRECTORY_ERRORS = [
    ("ambiguous", ("a.pt", "b.pt"), "several .pt files; name one in the URI"),
    ("no model", ("model.onnx",), "holds no .pt/.pth/.torchscript file"),
]


@pytest.mark.parametrize(
    ("names", "message"), [r[1:] for r in DIRECTORY_ERRORS], ids=[r[0] for r in DIRECTORY_ERRORS]
)
def test_remote_directory_needs_one_model_file(
    store: str, names: tuple[str, ...], message: str
) -> None:
    for name in names:
        put(f"{store}/{name}", b"x")
    with pytest.raises(ModelLoadError, match=message):
        load_and_warm(ModelSource(store, ModelFormat.TORCHSCRIPT), INPUT_4)
