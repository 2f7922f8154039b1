"""The OpenAPI document of this server (/openapi.json) and a Swagger UI page for it (/docs)."""

from typing import Any

from forestflow_runtime import __version__
from forestflow_runtime.config import TensorSpec

_ERROR = {
    "description": "error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/error"}}},
}


def _json(schema: dict[str, Any], description: str = "ok") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(
    summary: str, reply: dict[str, Any], body: dict[str, Any] | None = None
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": reply, "400": _ERROR, "404": _ERROR, "503": _ERROR, "504": _ERROR},
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return operation


def _tensor_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "datatype": {"type": "string"},
            "parameters": {"type": "object"},
            "data": {"type": "array", "items": {}},
        },
    }


def build_openapi(model: str, inputs: tuple[TensorSpec, ...]) -> dict[str, Any]:
    """Paths are spelled with the served model's name, so the page is ready to try out."""
    tensor = {"$ref": "#/components/schemas/tensor"}
    infer_request = {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {"type": "array", "items": tensor},
            "outputs": {"type": "array", "items": {"type": "object"}},
        },
    }
    infer_response = {
        "type": "object",
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {"type": "array", "items": tensor},
        },
    }
    batch = {"type": "array", "items": {}}
    declared = ", ".join(f"{s.name} {s.datatype} {list(s.shape or [-1])}" for s in inputs)
    any_object = {"type": "object"}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"ForestFlow runtime: {model}",
            "version": __version__,
            "description": f"OIP v2, KServe v1 and plain JSON. Inputs: {declared}.",
        },
        "paths": {
            "/v2/health/live": {"get": _operation("Liveness", _json(any_object))},
            "/v2/health/ready": {
                "get": _operation("Readiness (model loaded and warm)", _json(any_object))
            },
            "/v2": {"get": _operation("Server metadata", _json(any_object))},
            f"/v2/models/{model}": {"get": _operation("Model metadata", _json(any_object))},
            f"/v2/models/{model}/ready": {"get": _operation("Model readiness", _json(any_object))},
            f"/v2/models/{model}/infer": {
                "post": _operation("OIP v2 inference", _json(infer_response), infer_request)
            },
            f"/v1/models/{model}:predict": {
                "post": _operation(
                    "KServe v1 prediction",
                    _json({"type": "object", "properties": {"predictions": batch}}),
                    {
                        "type": "object",
                        "required": ["instances"],
                        "properties": {"instances": batch},
                    },
                )
            },
            f"/v1/{model}/predict": {
                "post": _operation(
                    "Plain JSON prediction",
                    _json({"type": "object", "properties": {"output": batch}}),
                    {"type": "object", "required": ["input"], "properties": {"input": batch}},
                )
            },
            "/v2/repository/index": {
                "post": _operation(
                    "The served model and the artifact it serves",
                    _json({"type": "array", "items": any_object}),
                )
            },
            f"/v2/repository/models/{model}/load": {
                "post": _operation(
                    "Hot swap to a new artifact",
                    _json(any_object),
                    {
                        "type": "object",
                        "properties": {
                            "parameters": {
                                "type": "object",
                                "required": ["uri"],
                                "properties": {
                                    "uri": {"type": "string"},
                                    "format": {"type": "string"},
                                },
                            }
                        },
                    },
                )
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text"}},
                }
            },
        },
        "components": {
            "schemas": {
                "tensor": _tensor_schema(),
                "error": {"type": "object", "properties": {"error": {"type": "string"}}},
            }
        },
    }


DOCS_HTML = b"""<!doctype html>
<html><head><title>ForestFlow runtime</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head><body><div id="ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script>
</body></html>
"""
