"""How the API answers what went wrong: one error body, the status of each meaningful
exception, and the error responses each route documents in OpenAPI."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from forestflow_control_plane.platforms.base import PlatformError
from forestflow_control_plane.spec.model_file import ModelFileError
from forestflow_control_plane.state.store import ConflictError, NotFoundError


class FieldMessage(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    """Every error answer: `detail` says what is wrong and what to do; `errors` names fields."""

    detail: str
    errors: list[FieldMessage]


ERRORS = {
    401: "no bearer token, or an unknown one",
    403: "the token's role may not make this call",
    404: "no such contract, variant or job",
    409: "the call conflicts with what is stored; the message says what to do",
    413: "the body is too large",
    422: "invalid input; the message names the field",
}


def errors_of(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": ERRORS[code]} for code in codes}


READ_ERRORS = errors_of(401, 404, 422)
WRITE_ERRORS = errors_of(401, 403, 404, 409, 422)


class PayloadTooLargeError(ValueError):
    """The request body exceeds what the endpoint accepts."""


class UnauthorizedError(PermissionError):
    """No bearer token, or one that is not known."""


class ForbiddenError(PermissionError):
    """A known token whose role may not make this call."""



def install(app: FastAPI) -> None:
    """Map every meaningful exception to its status and the one error body."""
    def handler(status: int) -> Any:
        async def respond(request: Request, exc: Exception) -> JSONResponse:
            errors = [vars(e) for e in getattr(exc, "errors", [])]
            return JSONResponse({"detail": str(exc), "errors": errors}, status_code=status)

        return respond

    app.add_exception_handler(ModelFileError, handler(422))
    app.add_exception_handler(NotFoundError, handler(404))
    app.add_exception_handler(ConflictError, handler(409))
    app.add_exception_handler(PayloadTooLargeError, handler(413))
    app.add_exception_handler(ForbiddenError, handler(403))

    async def unauthorized(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc), "errors": []},
            status_code=401,
            headers={"www-authenticate": "Bearer"},
        )

    app.add_exception_handler(UnauthorizedError, unauthorized)

    async def store_down(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": f"the store (Redis) is unavailable, retry: {exc}", "errors": []},
            status_code=503,
            headers={"retry-after": "1"},
        )

    app.add_exception_handler(RedisConnectionError, store_down)
    app.add_exception_handler(PlatformError, handler(502))
    app.add_exception_handler(RedisTimeoutError, store_down)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"field": ".".join(str(p) for p in e["loc"][1:]), "message": e["msg"]}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    app.add_exception_handler(RequestValidationError, invalid)
