"""Plain JSON: POST /v1/{name}/predict with {"input": [...]} -> {"output": [...]}.

Single-input models only; input is a batch, or one instance (answered unbatched). A model with
several outputs answers {"output": {output name: value}}.
"""

from forestflow_runtime.dataplane import DataPlane
from forestflow_runtime.http import (
    Request,
    Response,
    decode_object,
    json_response,
    server_timing,
)
from forestflow_runtime.routing import Route, route
from forestflow_runtime.validation import instances_array


class PlainEndpoints:
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def routes(self) -> list[Route]:
        return [route("POST", "/v1/{name}/predict", self.predict, "plain")]

    async def predict(self, request: Request) -> Response:
        plane = self.plane
        plane.check_model(request.params["name"])
        spec = plane.single_input("plain")
        document = decode_object(request.body)
        batch, single = instances_array("input", spec, document.get("input"))
        inference = await plane.infer((batch,), request.timeout_s(plane.default_timeout_s))
        outputs, timing = inference.outputs, (server_timing(inference.seconds),)
        if len(outputs) == 1:
            array = outputs[0].array
            return json_response(200, {"output": array[0] if single else array}, timing)
        named = {t.name: t.array[0] if single else t.array for t in outputs}
        return json_response(200, {"output": named}, timing)
