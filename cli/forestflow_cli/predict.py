"""`ffctl predict CONTRACT`: one Open Inference Protocol v2 infer request through the
gateway, to the contract (its traffic split decides the version) or, with `--version`, to
one version by its tag route. The request's tensor names, datatypes and shapes come from
the contract's spec, read from the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import typer
from rich.table import Table

from forestflow_cli.exit_codes import ExitCode, fail
from forestflow_cli.options import ContractArg, Gateway, Output, Server, Token
from forestflow_cli.output import Format, add_row, emit
from forestflow_cli.session import api, configured

VARIANT_HEADER = "x-forestflow-variant"
DTYPES: dict[str, Any] = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    "BF16": np.float32, "BYTES": np.object_,
}


class InputError(ValueError):
    """The given input does not fit the contract; the message names the input or option."""


InputJson = Annotated[
    str | None,
    typer.Option(
        "--input", "-i", show_default=False,
        help="JSON: the data of the contract's only input (nested lists), {name: data} per "
        "input, or a whole v2 request {\"inputs\": [...]}.",
    ),
]
InputFile = Annotated[
    Path | None,
    typer.Option(
        "--file", "-f", exists=True, dir_okay=False, show_default=False,
        help="The same as --input from a .json file, or a .npy array (.npz: one per input).",
    ),
]
Version = Annotated[
    str | None,
    typer.Option("--version", show_default=False, help="Call this version by its tag route."),
]
Timeout = Annotated[float, typer.Option(help="Seconds to wait for the answer (a cold start).")]


def predict(
    contract: ContractArg,
    input_json: InputJson = None,
    file: InputFile = None,
    version: Version = None,
    timeout: Timeout = 120.0,
    server: Server = None,
    token: Token = None,
    gateway: Gateway = None,
    output: Output = Format.TABLE,
) -> None:
    """Send one inference request through the gateway and print the outputs.

    json / yaml: the v2 response unchanged. A 4xx answer exits 2, a 5xx answer 1."""
    with api(server, token) as client:
        body = client.contract(contract)
    if version is not None:
        _check_routable(body, version)
    try:
        request = infer_request(body["spec"]["inputs"], read_input(input_json, file))
    except InputError as exc:
        fail(str(exc), ExitCode.BAD_INPUT)
    url = infer_url(body, version, configured(server, token, gateway).gateway.value)
    try:
        response = httpx.post(url, json=request, timeout=timeout)
    except httpx.TransportError as exc:
        fail(f"cannot reach the gateway at {url}: {exc}", ExitCode.UNREACHABLE)
    if response.status_code >= 400:
        code = ExitCode.BAD_INPUT if response.status_code < 500 else ExitCode.FAILED
        fail(f"({response.status_code}) {response.text}", code)
    served = response.headers.get(VARIANT_HEADER, "?")
    emit(response.json(), output, lambda r: outputs_table(r, f"{contract} @ {served}"))


def _check_routable(contract: dict[str, Any], version: str) -> None:
    """A version has a tag route while it is routable: every live one but a shadow."""
    states = {v["version"]: v["state"] for v in contract["variants"]}
    if version not in states:
        fail(f"--version: {contract['name']} has no version {version!r} "
             f"({', '.join(states)})", ExitCode.BAD_INPUT)
    if version not in contract["traffic"]:
        fail(f"--version: {contract['name']}@{version} is {states[version]}: it has no route",
             ExitCode.BAD_INPUT)


def read_input(input_json: str | None, file: Path | None) -> Any:
    """The JSON value, or the array(s) of a .npy / .npz file."""
    if (input_json is None) == (file is None):
        raise InputError("give the input with exactly one of --input or --file")
    if file is not None and file.suffix in (".npy", ".npz"):
        try:
            loaded = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"--file: {file}: {exc}") from None
        return dict(loaded) if isinstance(loaded, np.lib.npyio.NpzFile) else loaded
    text = file.read_text() if file is not None else str(input_json)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{'--file' if file else '--input'}: not valid JSON: {exc}") from None


def infer_request(specs: list[dict[str, Any]], value: Any) -> dict[str, Any]:
    """A v2 infer request for the contract's inputs `specs`; a whole request is sent as it
    is (the runtime checks it)."""
    if isinstance(value, dict) and "inputs" in value:
        return value
    names = [s["name"] for s in specs]
    if not isinstance(value, dict):
        if len(specs) != 1:
            raise InputError(
                f"the contract has {len(specs)} inputs ({', '.join(names)}): give "
                "{name: data} for each"
            )
        value = {names[0]: value}
    unknown = sorted(set(value) - set(names))
    missing = [n for n in names if n not in value]
    if unknown or missing:
        raise InputError(f"inputs: expected {', '.join(names)}; unknown {unknown}, "
                         f"missing {missing}")
    return {"inputs": [_tensor(spec, value[spec["name"]]) for spec in specs]}


def _tensor(spec: dict[str, Any], data: Any) -> dict[str, Any]:
    name, datatype, want = spec["name"], spec["datatype"], spec["shape"]
    try:
        array = np.asarray(data, dtype=DTYPES[datatype])
    except (ValueError, TypeError) as exc:
        raise InputError(f"input {name!r}: not a {datatype} tensor: {exc}") from None
    shape = list(array.shape)
    if len(shape) != len(want) or any(w not in (-1, s) for w, s in zip(want, shape, strict=False)):
        raise InputError(f"input {name!r}: shape {shape} does not fit the contract's {want}")
    flat = array.ravel()
    data_out = [str(x) for x in flat] if datatype == "BYTES" else flat.tolist()
    return {"name": name, "datatype": datatype, "shape": shape, "data": data_out}


def infer_url(contract: dict[str, Any], version: str | None, gateway: str | None) -> str:
    """The v2 infer URL of the contract, or of one version through its tag route
    (`/contracts/<ns>/<version>-<name>/...`)."""
    namespace, name = contract["name"].split("/")
    path = f"/contracts/{contract['name']}"
    base = gateway.rstrip("/") if gateway else contract["url"].removesuffix(path)
    route = name if version is None else f"{version}-{name}"
    return f"{base}/contracts/{namespace}/{route}/v2/models/{name}/infer"


def outputs_table(response: dict[str, Any], title: str) -> Table:
    table = Table("OUTPUT", "DATATYPE", "SHAPE", "DATA", title=title)
    for tensor in response.get("outputs", []):
        data = tensor["data"]
        try:
            shown = np.reshape(np.asarray(data), tensor["shape"]).tolist()
        except ValueError:
            shown = data
        add_row(table, tensor["name"], tensor["datatype"], str(tensor["shape"]), str(shown))
    return table
