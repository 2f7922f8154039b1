"""KServe v1: POST /v1/models/{name}:predict with {"instances": [...]} -> {"predictions": [...]}.

Single-input models only. instances is a batch; a single instance of the declared
per-instance shape is accepted as well and its prediction comes back unbatched. A model with
several outputs answers one {output name: value} object per instance.
"""

import numpy as np

from forestflow_runtime.dataplane import DataPlane, OutputTensor
from forestflow_runtime.http import (
    Request,
    Response,
    decode_object,
    json_response,
    server_timing,
)
from forestflow_runtime.routing import Route, route
from forestflow_runtime.validation import instances_array


class V1Endpoints:
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def routes(self) -> list[Route]:
        return [
            route("POST", "/v1/models/{name}:predict", self.predict, "v1"),
            route("GET", "/v1/models/{name}", self.model_status),
        ]

    async def model_status(self, request: Request) -> Response:
        self.plane.check_model(request.params["name"])
        return json_response(200, {"name": self.plane.name, "ready": self.plane.ready})

    async def predict(self, request: Request) -> Response:
        plane = self.plane
        plane.check_model(request.params["name"])
        spec = plane.single_input("v1")
        document = decode_object(request.body)
        batch, single = instances_array("instances", spec, document.get("instances"))
        inference = await plane.infer((batch,), request.timeout_s(plane.default_timeout_s))
        return json_response(
            200, {"predictions": predictions(inference.outputs, single)},
            (server_timing(inference.seconds),),
        )


def predictions(outputs: list[OutputTensor], single: bool) -> object:
    if len(outputs) == 1:
        array: np.ndarray = outputs[0].array
        return array[0] if single else array
    rows = [{t.name: t.array[i] for t in outputs} for i in range(outputs[0].array.shape[0])]
    return rows[0] if single else rows
