"""Model artifact URIs (local path, file://, http(s)://) resolved to a local file to load."""

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

from forestflow_runtime.config import ModelFormat
from forestflow_runtime.errors import ModelLoadError

SUFFIXES: dict[ModelFormat, tuple[str, ...]] = {
    ModelFormat.TORCHSCRIPT: (".pt", ".pth", ".torchscript"),
    ModelFormat.TORCH_EXPORT: (".pt2",),
    ModelFormat.STATE_DICT: (".safetensors", ".pt", ".pth"),
    ModelFormat.ONNX: (".onnx",),
    ModelFormat.SKLEARN: (".joblib", ".pkl", ".pickle"),
}
_DOWNLOAD_TIMEOUT_S = 300.0


@contextmanager
def fetched(uri: str, model_format: ModelFormat) -> Iterator[Path]:
    """Yield a local file for uri; downloads live in a temp dir removed once loading is done."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        with tempfile.TemporaryDirectory(prefix="ff-model-") as workdir:
            yield _download(uri, Path(workdir) / (Path(parsed.path).name or "model"))
        return
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
    elif parsed.scheme == "" or len(parsed.scheme) == 1:  # a bare path, or a Windows drive
        path = Path(uri)
    else:
        raise ModelLoadError(f"unsupported URI scheme {parsed.scheme!r} in {uri!r}")
    yield _pick_file(path, model_format)


def _download(uri: str, target: Path) -> Path:
    try:
        with (
            httpx.stream("GET", uri, follow_redirects=True, timeout=_DOWNLOAD_TIMEOUT_S) as reply,
            target.open("wb") as out,
        ):
            reply.raise_for_status()
            for chunk in reply.iter_bytes(1 << 20):
                out.write(chunk)
    except httpx.HTTPError as exc:
        raise ModelLoadError(f"download of {uri} failed: {exc}") from exc
    return target


def _pick_file(path: Path, model_format: ModelFormat) -> Path:
    """A directory is accepted when it holds exactly one file with the format's suffix."""
    if path.is_file():
        return path
    if not path.exists():
        raise ModelLoadError(f"model artifact {str(path)!r} does not exist")
    suffixes = SUFFIXES[model_format]
    for suffix in suffixes:
        matches = sorted(p for p in path.iterdir() if p.suffix == suffix and p.is_file())
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ModelLoadError(f"{path} holds several {suffix} files; name one in the URI")
    raise ModelLoadError(f"{path} holds no {'/'.join(suffixes)} file for format {model_format}")
