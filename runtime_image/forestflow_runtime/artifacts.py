"""Model artifact URIs resolved to a local file to load.

Local paths and file:// are read in place. http(s):// is downloaded with httpx; every other
scheme (s3://, gs://, or any fsspec protocol) goes through fsspec, the `remote` extra, whose
backends (s3fs, gcsfs) read credentials their own usual way. Downloads land in a temp dir that
is removed once loading is done. A URI may name a file, or a directory (a prefix on object
stores) holding exactly one file with the format's suffix; one file is fetched, so formats that
need files beside them (ONNX external data) must be local.
"""

import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import ParseResult, unquote, urlparse

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
_REMOTE_EXTRA = "install forestflow[remote]"


@contextmanager
def fetched(uri: str, model_format: ModelFormat) -> Iterator[Path]:
    """Yield a local file for uri; downloads live in a temp dir removed once loading is done."""
    parsed = urlparse(uri)
    local = _local_path(uri, parsed)
    if local is not None:
        yield _pick_file(local, model_format)
        return
    with tempfile.TemporaryDirectory(prefix="ff-model-") as workdir:
        if parsed.scheme in ("http", "https"):
            yield _download(uri, Path(workdir) / (Path(parsed.path).name or "model"))
        else:
            yield _download_fsspec(uri, parsed.scheme, model_format, Path(workdir))


def _local_path(uri: str, parsed: ParseResult) -> Path | None:
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or len(parsed.scheme) == 1:  # a bare path, or a Windows drive
        return Path(uri)
    return None


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


def _download_fsspec(uri: str, scheme: str, model_format: ModelFormat, workdir: Path) -> Path:
    fs, remote = _filesystem(uri, scheme)
    try:
        if fs.isdir(remote):
            files = (e["name"] for e in fs.ls(remote, detail=True) if e["type"] == "file")
            remote = _choose(files, model_format, uri)
        target = workdir / PurePosixPath(remote).name
        fs.get_file(remote, str(target))
    except FileNotFoundError:
        raise ModelLoadError(f"model artifact {uri!r} does not exist") from None
    except OSError as exc:
        raise ModelLoadError(f"download of {uri} failed: {exc}") from exc
    return target


def _filesystem(uri: str, scheme: str) -> tuple[Any, str]:
    """fsspec is optional, and so is each protocol's backend; both say what to install."""
    try:
        import fsspec  # the `remote` extra, imported only for a URI that needs it
    except ImportError:
        raise ModelLoadError(f"{scheme}:// artifacts need fsspec: {_REMOTE_EXTRA}") from None
    try:
        fs, remote = fsspec.core.url_to_fs(uri)
    except ImportError as exc:  # the protocol's backend, e.g. s3fs or gcsfs
        raise ModelLoadError(f"{scheme}:// artifacts: {exc} ({_REMOTE_EXTRA})") from None
    except ValueError:  # fsspec knows no such protocol
        raise ModelLoadError(f"unsupported URI scheme {scheme!r} in {uri!r}") from None
    return fs, remote


def _pick_file(path: Path, model_format: ModelFormat) -> Path:
    if path.is_file():
        return path
    if not path.exists():
        raise ModelLoadError(f"model artifact {str(path)!r} does not exist")
    return Path(_choose((str(p) for p in path.iterdir() if p.is_file()), model_format, str(path)))


def _choose(files: Iterable[str], model_format: ModelFormat, where: str) -> str:
    """A directory is accepted when it holds exactly one file with the format's suffix."""
    names = list(files)
    suffixes = SUFFIXES[model_format]
    for suffix in suffixes:
        matches = sorted(name for name in names if Path(name).suffix == suffix)
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ModelLoadError(f"{where} holds several {suffix} files; name one in the URI")
    raise ModelLoadError(f"{where} holds no {'/'.join(suffixes)} file for format {model_format}")
