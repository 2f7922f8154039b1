"""Open Inference Protocol v2 REST, plus the binary tensor and model repository (load) extensions.

Paths accept the optional /versions/{version} segment; the version must be our variant. Tensors
are decoded and encoded by protocols/codec.py, which the stream consumer shares.
"""

from __future__ import annotations

from typing import Any

import orjson

from forestflow_runtime import __version__
from forestflow_runtime.config import ModelFormat
from forestflow_runtime.dataplane import DataPlane, Inference, OutputTensor
from forestflow_runtime.errors import InvalidRequest
from forestflow_runtime.http import (
    Request,
    Response,
    decode_object,
    json_response,
    server_timing,
)
from forestflow_runtime.protocols.binary import HEADER, BinaryReader, split_body
from forestflow_runtime.protocols.codec import decode_inputs, encode_outputs
from forestflow_runtime.routing import Route, route

EXTENSIONS = ["binary_tensor_data", "model_repository"]
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


class V2Endpoints:
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def routes(self) -> list[Route]:
        model = "/v2/models/{name}"
        versioned = "/v2/models/{name}/versions/{version}"
        return [
            route("POST", f"{model}/infer", self.infer, "v2"),
            route("POST", f"{versioned}/infer", self.infer, "v2"),
            route("GET", "/v2/health/live", self.live),
            route("GET", "/v2/health/ready", self.server_ready),
            route("GET", "/v2", self.server_metadata),
            route("GET", "/v2/", self.server_metadata),
            route("GET", model, self.model_metadata),
            route("GET", versioned, self.model_metadata),
            route("GET", f"{model}/ready", self.model_ready),
            route("GET", f"{versioned}/ready", self.model_ready),
            route("POST", "/v2/repository/index", self.index),
            route("POST", "/v2/repository/models/{name}/load", self.load),
        ]

    async def live(self, request: Request) -> Response:
        return json_response(200, {"live": True})

    async def server_ready(self, request: Request) -> Response:
        ready = self.plane.ready
        return json_response(200 if ready else 503, {"ready": ready})

    async def server_metadata(self, request: Request) -> Response:
        document = {"name": "forestflow-runtime", "version": __version__, "extensions": EXTENSIONS}
        return json_response(200, document)

    async def model_ready(self, request: Request) -> Response:
        self.plane.check_model(request.params["name"], request.params.get("version"))
        ready = self.plane.ready
        return json_response(200 if ready else 503, {"name": self.plane.name, "ready": ready})

    async def model_metadata(self, request: Request) -> Response:
        plane = self.plane
        plane.check_model(request.params["name"], request.params.get("version"))
        document: dict[str, Any] = {
            "name": plane.name,
            "platform": plane.platform,
            "inputs": [_tensor_metadata(s.name, s.datatype, s.shape) for s in plane.inputs],
            "outputs": [
                _tensor_metadata(s.name, s.datatype, s.shape) for s in plane.config.outputs
            ],
        }
        if plane.config.variant:
            document["versions"] = [plane.config.variant]
        return json_response(200, document)

    async def infer(self, request: Request) -> Response:
        plane = self.plane
        plane.check_model(request.params["name"], request.params.get("version"))
        body = split_body(request)
        document = decode_object(body.json)
        inputs = decode_inputs(plane, document, BinaryReader(body.binary))
        request_id = document.get("id")
        inference = await plane.infer(
            inputs,
            request.timeout_s(plane.default_timeout_s),
            request_id if isinstance(request_id, str) else None,
        )
        return self._response(document, inference)

    async def index(self, request: Request) -> Response:
        """The repository index (Triton's model repository extension), with the artifact
        the model serves and those it is loading: what a control plane compares with the
        spec it stored."""
        plane = self.plane
        entry: dict[str, Any] = {
            "name": plane.name,
            "state": "READY" if plane.ready else "LOADING",
            "uri": plane.source.uri,
            "format": plane.source.format.value,
        }
        if plane.config.variant:
            entry["version"] = plane.config.variant
        if plane.loading:
            entry["loading"] = [{"uri": s.uri, "format": s.format.value} for s in plane.loading]
        return json_response(200, [entry])

    async def load(self, request: Request) -> Response:
        """Hot swap: {"parameters": {"uri": ..., "format": ...?}} replaces the served model."""
        self.plane.check_model(request.params["name"])
        document = decode_object(request.body) if request.body else {}
        parameters = document.get("parameters")
        if not isinstance(parameters, dict) or not isinstance(parameters.get("uri"), str):
            raise InvalidRequest("parameters.uri: required, the new model artifact's URI")
        raw_format = parameters.get("format")
        try:
            model_format = None if raw_format is None else ModelFormat(raw_format)
        except ValueError:
            allowed = ", ".join(f.value for f in ModelFormat)
            raise InvalidRequest(
                f"parameters.format: {raw_format!r} is not one of {allowed}"
            ) from None
        result = await self.plane.swap(parameters["uri"], model_format)
        return json_response(
            200,
            {
                "name": self.plane.name,
                "uri": result.uri,
                "format": result.format.value,
                "load_seconds": result.seconds,
            },
        )

    def _response(self, document: dict[str, object], inference: Inference) -> Response:
        entries, binaries = encode_outputs(_selected_outputs(document, inference.outputs))
        reply: dict[str, object] = {"model_name": self.plane.name}
        if self.plane.config.variant:
            reply["model_version"] = self.plane.config.variant
        if "id" in document:
            reply["id"] = document["id"]
        reply["outputs"] = entries
        header = orjson.dumps(reply, option=_NUMPY)
        timing = server_timing(inference.seconds)
        if not binaries:
            return Response(200, header, headers=(timing,))
        return Response(
            200,
            b"".join([header, *binaries]),
            b"application/octet-stream",
            ((HEADER, str(len(header)).encode()), timing),
        )


def _selected_outputs(
    document: dict[str, object], outputs: list[OutputTensor]
) -> list[tuple[OutputTensor, bool]]:
    """Requested outputs (all by default), each with whether it goes back as binary."""
    parameters = document.get("parameters")
    binary_default = isinstance(parameters, dict) and parameters.get("binary_data_output") is True
    requested = document.get("outputs")
    if requested is None:
        return [(tensor, binary_default) for tensor in outputs]
    if not isinstance(requested, list):
        raise InvalidRequest("outputs: expected a list of {name}")
    by_name = {tensor.name: tensor for tensor in outputs}
    selected: list[tuple[OutputTensor, bool]] = []
    for position, item in enumerate(requested):
        name = item.get("name") if isinstance(item, dict) else None
        if name not in by_name:
            known = ", ".join(by_name)
            raise InvalidRequest(f"outputs[{position}].name: unknown output {name!r} ({known})")
        options = item.get("parameters") if isinstance(item, dict) else None
        binary = options.get("binary_data") if isinstance(options, dict) else None
        selected.append((by_name[name], binary_default if binary is None else binary is True))
    return selected


def _tensor_metadata(name: str, datatype: str, shape: tuple[int, ...] | None) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": [-1] if shape is None else list(shape)}
