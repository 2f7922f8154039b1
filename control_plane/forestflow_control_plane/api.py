"""The control-plane HTTP API. Thin: parse, call the store or enqueue a job, map errors.

Errors are JSON `{"detail": str, "errors": [{"field", "message"}]}` with 404, 409, 413
or 422; bad input never yields a 500.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job

from forestflow_control_plane import names
from forestflow_control_plane.auth import Principal, Role, Tokens
from forestflow_control_plane.deployments import register, swap_of
from forestflow_control_plane.model_file import (
    DNS_LABEL,
    FieldError,
    ModelFile,
    ModelFileError,
    check_local_artifacts,
    parse_model_file,
)
from forestflow_control_plane.rollouts import (
    Action,
    Rollouts,
    platform_for,
    rq_schedule,
    start_rollout,
)
from forestflow_control_plane.settings import Settings
from forestflow_control_plane.store import ConflictError, NotFoundError, Store
from forestflow_control_plane.swaps import swap_in_place

MAX_MODEL_FILE_BYTES = 1 << 20
JOB_TIMEOUT_S = 3600


class PayloadTooLargeError(ValueError):
    """The request body exceeds what the endpoint accepts."""


class UnauthorizedError(PermissionError):
    """No bearer token, or one that is not known."""


class ForbiddenError(PermissionError):
    """A known token whose role may not make this call."""


BEARER = HTTPBearer(auto_error=False, description="read or admin token")


def reader(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
) -> Principal:
    if credentials is None:
        raise UnauthorizedError("missing bearer token")
    principal = request.app.state.tokens.principal(credentials.credentials)
    if principal is None:
        raise UnauthorizedError("unknown bearer token")
    return principal


def admin(principal: Annotated[Principal, Depends(reader)]) -> Principal:
    if principal.role is not Role.ADMIN:
        raise ForbiddenError(f"{principal.name} has the {principal.role} role; admin needed")
    return principal


Reader = Annotated[Principal, Depends(reader)]
Namespace = Annotated[str, Path(pattern=DNS_LABEL)]
Name = Namespace
JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,100}$")]
Admin = Annotated[Principal, Depends(admin)]


def create_app(settings: Settings, tokens: Tokens) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = Redis.from_url(settings.redis_url)
        app.state.redis = redis
        app.state.store = Store(redis)
        app.state.queue = Queue(names.ROLLOUT_QUEUE, connection=redis)
        app.state.rollouts = Rollouts(
            app.state.store, platform_for(settings, redis), rq_schedule(app.state.queue)
        )
        yield
        redis.close()

    app = FastAPI(title="ForestFlow control plane", version="0.1.0", lifespan=lifespan)
    app.state.tokens = tokens
    _errors(app)

    @app.get("/healthz", tags=["health"])
    def healthz(request: Request) -> dict[str, str]:
        request.app.state.redis.ping()
        return {"status": "ok"}

    @app.post(
        "/v1/deploy",
        status_code=202,
        tags=["deploy"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/yaml": {"schema": ModelFile.model_json_schema()}},
            }
        },
    )
    async def deploy(request: Request, who: Admin) -> dict[str, Any]:
        """Register a variant from a model.yaml body and start its rollout."""
        body = await request.body()
        if len(body) > MAX_MODEL_FILE_BYTES:
            raise PayloadTooLargeError(f"model file over {MAX_MODEL_FILE_BYTES} bytes")
        try:
            text = body.decode()
        except UnicodeDecodeError:
            raise ModelFileError([FieldError("", "body is not UTF-8 text")]) from None
        model = parse_model_file(text)
        if settings.platform == "local":
            check_local_artifacts(model)
        store: Store = request.app.state.store
        snapshot = register(store, model, who.name)
        target = f"{model.contract.name}@{model.variant.version}"
        swap = swap_of(snapshot, model)
        if swap is not None:
            job = request.app.state.queue.enqueue(
                swap_in_place, model.contract.name, model.variant.version, swap,
                job_timeout=JOB_TIMEOUT_S, description=f"in-place swap {target}",
            )
        else:
            job = request.app.state.queue.enqueue(
                start_rollout, model.contract.name, model.variant.version,
                job_timeout=JOB_TIMEOUT_S, description=f"rollout {target}",
            )
        return {
            "contract": model.contract.name,
            "version": model.variant.version,
            "generation": snapshot.contract.generation,
            "job": job.id,
            "url": f"{settings.gateway_url}/contracts/{model.contract.name}",
        }

    @app.get("/v1/contracts", tags=["contracts"])
    def list_contracts(request: Request, _: Reader) -> dict[str, list[str]]:
        return {"contracts": request.app.state.store.contracts()}

    @app.get("/v1/contracts/{namespace}/{name}", tags=["contracts"])
    def get_contract(
        namespace: Namespace, name: Name, request: Request, _: Reader
    ) -> dict[str, Any]:
        snapshot = request.app.state.store.get(f"{namespace}/{name}")
        return {**snapshot.to_dict(), "url": f"{settings.gateway_url}/contracts/{namespace}/{name}"}

    @app.get("/v1/contracts/{namespace}/{name}/traffic", tags=["contracts"])
    def get_traffic(
        namespace: Namespace, name: Name, request: Request, _: Reader
    ) -> dict[str, Any]:
        snapshot = request.app.state.store.get(f"{namespace}/{name}")
        return {"contract": snapshot.contract.name, "traffic": snapshot.contract.traffic}

    @app.get("/v1/contracts/{namespace}/{name}/events", tags=["contracts"])
    def get_events(
        namespace: Namespace, name: Name, request: Request, _: Reader
    ) -> dict[str, Any]:
        contract = f"{namespace}/{name}"
        request.app.state.store.get(contract)
        return {"events": [vars(e) for e in request.app.state.store.events(contract)]}

    @app.get("/v1/contracts/{namespace}/{name}/rollout", tags=["rollouts"])
    def get_rollout(
        namespace: Namespace, name: Name, request: Request, _: Reader
    ) -> dict[str, Any]:
        """The contract's current (or last) rollout: candidate, step, status, reason."""
        snapshot = request.app.state.store.get(f"{namespace}/{name}")
        return {
            "contract": snapshot.contract.name,
            "traffic": snapshot.contract.traffic,
            "rollout": snapshot.contract.rollout,
        }

    @app.post("/v1/contracts/{namespace}/{name}/rollout/{action}", tags=["rollouts"])
    def act(
        namespace: Namespace, name: Name, action: Action, request: Request, who: Admin
    ) -> dict[str, Any]:
        """promote, pause, resume, rollback or abort the contract's rollout."""
        result: dict[str, Any] = request.app.state.rollouts.act(
            f"{namespace}/{name}", action, who.name
        )
        return result

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    def get_job(job_id: JobId, request: Request, _: Reader) -> dict[str, Any]:
        try:
            job = Job.fetch(job_id, connection=request.app.state.redis)
        except NoSuchJobError:
            raise NotFoundError(f"job {job_id!r} not found") from None
        status = job.get_status(refresh=True)
        latest = job.latest_result()
        return {
            "job": job.id,
            "status": status.value if status else "unknown",
            "result": job.return_value(),
            "error": _last_line(latest.exc_string) if latest and latest.exc_string else None,
        }

    return app


def _errors(app: FastAPI) -> None:
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

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"field": ".".join(str(p) for p in e["loc"][1:]), "message": e["msg"]}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    app.add_exception_handler(RequestValidationError, invalid)


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]
