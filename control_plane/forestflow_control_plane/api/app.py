"""The control-plane HTTP API. Thin: parse, call the store, enqueue a job or apply the
platform's desired state, map errors.

Errors are JSON `{"detail": str, "errors": [{"field", "message"}]}` with 401, 403, 404,
409, 413 or 422; bad input never yields a 500.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import State

from forestflow_control_plane.api import errors as api_errors
from forestflow_control_plane.api.auth import Principal, Role, Tokens
from forestflow_control_plane.api.errors import (
    READ_ERRORS,
    WRITE_ERRORS,
    ForbiddenError,
    PayloadTooLargeError,
    UnauthorizedError,
    errors_of,
)
from forestflow_control_plane.api.responses import RolloutResponse, rollout_out, rollout_response
from forestflow_control_plane.platforms.base import Platform
from forestflow_control_plane.policies.lifecycle import refuse_while_serving, retire
from forestflow_control_plane.rollouts.deploys import register, swap_of
from forestflow_control_plane.rollouts.engine import Action, Rollouts
from forestflow_control_plane.rollouts.jobs import (
    JOB_RETRY,
    rq_realise,
    rq_schedule,
    start_rollout,
    swap_in_place,
)
from forestflow_control_plane.settings import Settings
from forestflow_control_plane.shadows.payload_log import Payloads, read_payloads
from forestflow_control_plane.shadows.results import ShadowReport, report
from forestflow_control_plane.spec.model_file import (
    FieldError,
    ModelFile,
    ModelFileError,
    check_local_artifacts,
    parse_model_file,
)
from forestflow_control_plane.spec.variant import DNS_LABEL
from forestflow_control_plane.state.records import ContractSnapshot, VariantRecord, VariantState
from forestflow_control_plane.state.store import NotFoundError, Store

MAX_MODEL_FILE_BYTES = 1 << 20
JOB_TIMEOUT_S = 3600


CONTRACT_PATH = "/v1/contracts/{namespace}/{name}"


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
Version = Annotated[str, Path(pattern=DNS_LABEL, description="a variant's version, e.g. v3")]
JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,100}$")]
ExpectedGeneration = Annotated[
    int | None,
    Query(
        ge=0,
        description="the contract's generation as last read; 409 when it has moved on since",
    ),
]
Force = Annotated[
    bool, Query(description="delete even while versions serve traffic (clients then get 404)")
]
Admin = Annotated[Principal, Depends(admin)]


class ApiParts(Protocol):
    """What the API is handed by the composition root."""

    @property
    def settings(self) -> Settings: ...

    @property
    def redis(self) -> Redis: ...

    @property
    def store(self) -> Store: ...

    @property
    def queue(self) -> Queue: ...

    @property
    def platform(self) -> Platform: ...

    def close(self) -> None: ...


def create_app(parts: ApiParts, tokens: Tokens) -> FastAPI:
    settings = parts.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.redis = parts.redis
        app.state.store = parts.store
        app.state.queue = parts.queue
        app.state.realise = rq_realise(parts.queue)
        # It controls rollouts but never judges a gate (no metrics source) nor calls the
        # platform: a worker's job applies what it changed.
        app.state.rollouts = Rollouts(
            parts.store, parts.platform, rq_schedule(parts.queue), apply_later=app.state.realise
        )
        yield
        parts.close()

    app = FastAPI(title="ForestFlow control plane", version="0.1.0", lifespan=lifespan)
    app.state.tokens = tokens
    api_errors.install(app)

    @app.get("/healthz", tags=["health"])
    def healthz(request: Request) -> dict[str, str]:
        request.app.state.redis.ping()
        return {"status": "ok"}

    @app.post(
        "/v1/deploy",
        status_code=202,
        tags=["deploy"],
        responses=errors_of(401, 403, 409, 413, 422),
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
        # Parsing, the artifact checks and Redis are blocking work: off the event loop.
        return await run_in_threadpool(deployed, request.app.state, body, who.name)

    def deployed(state: State, body: bytes, who: str) -> dict[str, Any]:
        try:
            text = body.decode()
        except UnicodeDecodeError:
            raise ModelFileError([FieldError("", "body is not UTF-8 text")]) from None
        model = parse_model_file(text)
        if settings.platform == "local":
            check_local_artifacts(model)
        snapshot = register(state.store, model, who)
        target = f"{model.contract.name}@{model.variant.version}"
        swap = swap_of(snapshot, model)
        if swap is not None:
            job = state.queue.enqueue(
                swap_in_place, model.contract.name, model.variant.version, swap,
                job_timeout=JOB_TIMEOUT_S, retry=JOB_RETRY,
                description=f"in-place swap {target}",
            )
        else:
            job = state.queue.enqueue(
                start_rollout, model.contract.name, model.variant.version,
                job_timeout=JOB_TIMEOUT_S, retry=JOB_RETRY, description=f"rollout {target}",
            )
        return {
            "contract": model.contract.name,
            "version": model.variant.version,
            "generation": snapshot.contract.generation,
            "job": job.id,
            "url": f"{settings.gateway_url}/contracts/{model.contract.name}",
        }

    @app.get("/v1/contracts", tags=["contracts"], responses=errors_of(401))
    def list_contracts(request: Request, _: Reader) -> dict[str, list[str]]:
        return {"contracts": request.app.state.store.contracts()}

    @app.get(CONTRACT_PATH, tags=["contracts"], responses=READ_ERRORS)
    def get_contract(
        namespace: Namespace, name: Name, request: Request, _: Reader
    ) -> dict[str, Any]:
        snapshot = request.app.state.store.get(f"{namespace}/{name}")
        return {
            **snapshot.to_dict(),
            "rollout": rollout_out(snapshot),
            "url": f"{settings.gateway_url}/contracts/{namespace}/{name}",
        }

    @app.delete(CONTRACT_PATH, tags=["contracts"], responses=WRITE_ERRORS)
    def delete_contract(
        namespace: Namespace,
        name: Name,
        request: Request,
        who: Admin,
        force: Force = False,
        expected_generation: ExpectedGeneration = None,
    ) -> dict[str, Any]:
        """Delete the contract and its variants, and their objects on the platform; its
        event log stays. Refused (409) while a version serves traffic, unless force=true."""
        contract = f"{namespace}/{name}"
        try:
            deleted = request.app.state.store.delete(
                contract,
                who=who.name,
                check=None if force else refuse_while_serving,
                expected_generation=expected_generation,
            )
        except NotFoundError:
            # A delete that committed but died before its apply was enqueued left objects.
            request.app.state.realise(contract)
            raise
        request.app.state.realise(contract)
        return deleted.to_dict()

    @app.get(CONTRACT_PATH + "/variants", tags=["variants"], responses=READ_ERRORS)
    def list_variants(
        namespace: Namespace, name: Name, request: Request, _: Reader
    ) -> dict[str, Any]:
        """The contract's variants, oldest first, expired and failed ones included."""
        snapshot = request.app.state.store.get(f"{namespace}/{name}")
        return {"contract": snapshot.contract.name, "variants": snapshot.to_dict()["variants"]}

    @app.get(CONTRACT_PATH + "/variants/{version}", tags=["variants"], responses=READ_ERRORS)
    def get_variant(
        namespace: Namespace, name: Name, version: Version, request: Request, _: Reader
    ) -> dict[str, Any]:
        snapshot = request.app.state.store.get(f"{namespace}/{name}")
        return _variant(snapshot, version).to_dict()

    @app.delete(CONTRACT_PATH + "/variants/{version}", tags=["variants"], responses=WRITE_ERRORS)
    def delete_variant(
        namespace: Namespace,
        name: Name,
        version: Version,
        request: Request,
        who: Admin,
        expected_generation: ExpectedGeneration = None,
    ) -> dict[str, Any]:
        """Retire a variant: it is marked expired and its Service goes away. Refused (409)
        while it serves traffic or a rollout runs on it. Deleting an expired variant again
        writes nothing and answers it as it is."""
        contract = f"{namespace}/{name}"
        store: Store = request.app.state.store
        after = store.get(contract)
        if _variant(after, version).state is not VariantState.EXPIRED:
            after = store.update(
                contract,
                lambda before: retire(before, contract, version, who.name),
                who=who.name,
                what=f"delete {version}",
                expected_generation=expected_generation,
            )
        request.app.state.realise(contract)
        return after.variants[version].to_dict()

    @app.get(CONTRACT_PATH + "/traffic", tags=["contracts"], responses=READ_ERRORS)
    def get_traffic(
        namespace: Namespace, name: Name, request: Request, _: Reader
    ) -> dict[str, Any]:
        snapshot = request.app.state.store.get(f"{namespace}/{name}")
        return {"contract": snapshot.contract.name, "traffic": snapshot.contract.traffic}

    @app.get(CONTRACT_PATH + "/events", tags=["contracts"], responses=READ_ERRORS)
    def get_events(
        namespace: Namespace, name: Name, request: Request, _: Reader
    ) -> dict[str, Any]:
        """The contract's audit log, oldest first; a deleted contract keeps its own."""
        contract = f"{namespace}/{name}"
        events = request.app.state.store.events(contract)
        if not events:
            request.app.state.store.get(contract)  # 404 unless it exists
        return {"events": [vars(e) for e in events]}

    @app.get(CONTRACT_PATH + "/payloads", tags=["contracts"], responses=READ_ERRORS)
    def get_payloads(
        namespace: Namespace,
        name: Name,
        request: Request,
        _: Reader,
        count: Annotated[int, Query(ge=1, le=1000, description="events at most")] = 20,
        variant: Annotated[str | None, Query(pattern=DNS_LABEL, description="one version")] = None,
        after: Annotated[
            str | None,
            Query(pattern=r"^[0-9]{1,19}-[0-9]{1,19}$", description="a previous answer's cursor"),
        ] = None,
    ) -> Payloads:
        """Sampled request/response events (`payload_logging`), oldest first: the last
        `count`, or with `after` the next `count` newer than that cursor."""
        contract = f"{namespace}/{name}"
        request.app.state.store.get(contract)  # 404 unless it exists
        return read_payloads(request.app.state.redis, contract, count, variant, after)

    @app.get(CONTRACT_PATH + "/shadows", tags=["contracts"], responses=READ_ERRORS)
    def get_shadows(
        namespace: Namespace, name: Name, request: Request, _: Reader
    ) -> ShadowReport:
        """How each shadow's answers compare with the primaries' on mirrored requests:
        current shadows and former ones with results, oldest first."""
        snapshot = request.app.state.store.get(f"{namespace}/{name}")
        return ShadowReport(snapshot.contract.name, report(request.app.state.redis, snapshot))

    @app.get(CONTRACT_PATH + "/rollout", tags=["rollouts"], responses=READ_ERRORS)
    def get_rollout(
        namespace: Namespace, name: Name, request: Request, _: Reader
    ) -> RolloutResponse:
        """The contract's current (or last) rollout: candidate, step, status, reason, and the
        candidate's plan."""
        return rollout_response(request.app.state.store.get(f"{namespace}/{name}"))

    @app.post(CONTRACT_PATH + "/rollout/{action}", tags=["rollouts"], responses=WRITE_ERRORS)
    def act(
        namespace: Namespace, name: Name, action: Action, request: Request, who: Admin
    ) -> RolloutResponse:
        """promote, pause, resume, rollback or abort the contract's rollout."""
        contract = f"{namespace}/{name}"
        request.app.state.rollouts.act(contract, action, who.name)
        return rollout_response(request.app.state.store.get(contract))

    @app.get("/v1/jobs/{job_id}", tags=["jobs"], responses=READ_ERRORS)
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


def _variant(snapshot: ContractSnapshot, version: str) -> VariantRecord:
    if version not in snapshot.variants:
        raise NotFoundError(f"variant {snapshot.contract.name}@{version} not found")
    return snapshot.variants[version]


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]
