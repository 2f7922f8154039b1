"""The model.yaml schema: what a user writes to deploy one variant under a contract.

Unknown or misspelt fields are errors that name them; every error carries the dotted path
of the field it is about, so the API and ffctl can say exactly what to fix.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

DNS_LABEL = r"^[a-z]([-a-z0-9]{0,30}[a-z0-9])?$"
CONTRACT_NAME = r"^[a-z]([-a-z0-9]{0,30}[a-z0-9])?/[a-z]([-a-z0-9]{0,30}[a-z0-9])?$"
DEVICE = r"^(cpu|mps|cuda(:[0-9]+)?)$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"

Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BF16", "BYTES",
]
ModelFormat = Literal["torchscript", "torch_export", "state_dict", "onnx", "sklearn"]
Dim = Annotated[int, Field(ge=-1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TensorSpec(_Strict):
    name: str = Field(min_length=1, max_length=64, description="the tensor's name in requests")
    datatype: Datatype = Field(description="Open Inference Protocol datatype")
    shape: list[Dim] = Field(
        min_length=1, max_length=8, description="-1: any size; the first dimension is the batch"
    )

    @model_validator(mode="after")
    def _no_zero_dims(self) -> TensorSpec:
        if 0 in self.shape:
            raise ValueError("shape: dimensions are positive sizes or -1 (any)")
        return self


class ContractSpec(_Strict):
    """The use case clients call: its name and the tensors it takes and gives."""

    name: str = Field(pattern=CONTRACT_NAME, description="namespace/name, e.g. fraud/scoring")
    inputs: list[TensorSpec] = Field(min_length=1, description="what every request carries")
    outputs: list[TensorSpec] = Field(min_length=1, description="what every answer carries")


class ModelArtifact(_Strict):
    """Where the weights are and how to load them."""

    uri: str = Field(
        min_length=1,
        description="local path (relative to model.yaml), file://, http(s)://, s3://, gs://",
    )
    format: ModelFormat = Field(description="how the artifact is loaded")
    model_class: str | None = Field(
        default=None, alias="class", pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="module:Class whose instance loads a state dict (format state_dict)",
    )
    python_path: str | None = Field(
        default=None, description="directory that holds the module of `class`"
    )
    allow_pickle: bool = Field(
        default=False, description="sklearn/joblib artifacts unpickle: opt in explicitly"
    )

    @model_validator(mode="after")
    def _format_needs(self) -> ModelArtifact:
        if self.format == "state_dict" and not self.model_class:
            raise ValueError("class: required when format is state_dict")
        if self.format == "sklearn" and not self.allow_pickle:
            raise ValueError("allow_pickle: must be true for format sklearn (it unpickles)")
        return self


class Batching(_Strict):
    """Dynamic batching and backpressure in the runtime."""

    max_batch_size: int = Field(default=32, ge=1, le=4096, description="rows per model call")
    window_ms: float = Field(
        default=2.0, ge=0, le=1000, description="how long a batch may wait to fill (model busy)"
    )
    max_queue: int = Field(
        default=256, ge=1, le=100_000, description="requests waiting; beyond, 503 + Retry-After"
    )
    timeout_ms: int = Field(
        default=30_000, ge=1, le=3_600_000, description="per-request deadline; beyond, 504"
    )


class Scaling(_Strict):
    """The Knative autoscaler's settings for the variant's revision; the bounds are the ones
    Knative's webhook and ForestFlow's cluster config (knative/config-*.yaml) accept."""

    min_replicas: int = Field(default=0, ge=0, le=100, description="0: scale to zero when idle")
    max_replicas: int = Field(default=1, ge=1, le=100, description="the autoscaler's ceiling")
    metric: Literal["concurrency", "rps"] = Field(
        default="concurrency", description="what the autoscaler scales on"
    )
    target_concurrency: int = Field(
        default=8, ge=1, le=10_000,
        description="per replica: requests in flight (metric concurrency) or per second (rps)",
    )
    initial_replicas: int | None = Field(
        default=None, ge=0, le=100, description="replicas a new revision starts with"
    )
    window_seconds: int | None = Field(
        default=None, ge=6, le=3600, description="the autoscaler's stable window"
    )
    container_concurrency: int = Field(
        default=0, ge=0, le=1000, description="hard limit of requests per replica; 0: none"
    )
    retention_seconds: float = Field(
        default=60.0, ge=0, le=3600, description="idle time before scaling to zero"
    )
    progress_deadline_seconds: int = Field(
        default=600, ge=1, le=86_400,
        description="how long a new revision may take to become ready (model load included)",
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> Scaling:
        for field in ("min_replicas", "initial_replicas"):
            value = getattr(self, field)
            if value is not None and value > self.max_replicas:
                raise ValueError(
                    f"{field}: {value} must not exceed max_replicas ({self.max_replicas})"
                )
        return self


class Resources(_Strict):
    """Requests and limits of each replica (Knative)."""

    cpu: str | None = Field(default=None, pattern=QUANTITY, description="e.g. \"2\" or 500m")
    memory: str | None = Field(default=None, pattern=QUANTITY, description="e.g. 2Gi")
    gpu: int = Field(default=0, ge=0, le=16, description="nvidia.com/gpu on Knative")


class PayloadLogging(_Strict):
    """Sampled request/response events on a capped Redis Stream, for audits and replays."""

    sample_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of requests logged to forestflow:payloads"
    )
    max_length: int = Field(default=100_000, ge=1, le=100_000_000, description="stream cap")


STREAM_KEY = r"^[!-~]{1,256}$"  # a Redis key that travels in an env variable: no spaces


class Streaming(_Strict):
    """Requests also taken from a Redis Stream (consumer group, at-least-once) through the
    same batcher as HTTP; results go to output_stream, messages failing max_failures
    deliveries to dead_letter_stream. Unset streams derive from the contract:
    ff:stream:<namespace>/<name>:out and ff:stream:<namespace>/<name>:dead."""

    input_stream: str = Field(pattern=STREAM_KEY, description="Redis Stream of requests")
    output_stream: str | None = Field(
        default=None, pattern=STREAM_KEY, description="default ff:stream:<contract>:out"
    )
    dead_letter_stream: str | None = Field(
        default=None, pattern=STREAM_KEY, description="default ff:stream:<contract>:dead"
    )
    group: str = Field(default="forestflow", pattern=STREAM_KEY, description="consumer group")
    max_failures: int = Field(
        default=3, ge=1, le=1000, description="deliveries before a message is dead-lettered"
    )

    @model_validator(mode="after")
    def _not_the_input(self) -> Streaming:
        for field in ("output_stream", "dead_letter_stream"):
            if getattr(self, field) == self.input_stream:
                raise ValueError(f"{field}: must differ from input_stream")
        return self


class VariantSpec(_Strict):
    """This model version: artifact, device, batching, scaling."""

    version: str = Field(pattern=DNS_LABEL, description="e.g. v3; also the version's route tag")
    model: ModelArtifact
    device: str = Field(default="cpu", pattern=DEVICE, description="cpu, cuda, cuda:N or mps")
    cpu_threads: int | None = Field(
        default=None, ge=1, le=256, description="torch intra-op threads"
    )
    resources: Resources = Resources()
    batching: Batching = Batching()
    scaling: Scaling = Scaling()
    payload_logging: PayloadLogging = PayloadLogging()
    streaming: Streaming | None = Field(default=None, description="requests from a Redis Stream")

    @model_validator(mode="after")
    def _streaming_stays_up(self) -> VariantSpec:
        if self.streaming is not None and self.scaling.min_replicas < 1:
            raise ValueError(
                "scaling.min_replicas: a streaming variant needs at least 1 replica: stream "
                "messages do not wake a variant at zero"
            )
        return self


class PhaseIn(_Strict):
    """How the new variant takes traffic: `immediate`; `canary` through explicit `steps`,
    each held `hold_seconds`; or `linear`, an even ramp over `duration_seconds` moving
    every `interval_seconds`."""

    policy: Literal["immediate", "canary", "linear"] = Field(
        default="immediate", description="how the new variant takes traffic"
    )
    steps: list[Annotated[int, Field(ge=1, le=100)]] | None = Field(
        default=None, min_length=1, max_length=100,
        description="canary: rising percents ending at 100, e.g. [5, 25, 100]",
    )
    hold_seconds: float = Field(
        default=60.0, ge=0, le=7 * 86_400, description="canary: time at each step"
    )
    duration_seconds: float | None = Field(
        default=None, gt=0, le=30 * 86_400, description="linear: time from 0 to 100 %"
    )
    interval_seconds: float = Field(
        default=30.0, gt=0, le=86_400, description="linear: time between moves"
    )

    @model_validator(mode="after")
    def _policy_needs(self) -> PhaseIn:
        if self.policy == "canary":
            if not self.steps:
                raise ValueError("steps: required for a canary, e.g. [5, 25, 50, 100]")
            rising = all(a < b for a, b in itertools.pairwise(self.steps))
            if self.steps[-1] != 100 or not rising:
                raise ValueError("steps: must increase and end at 100")
        elif self.steps is not None:
            raise ValueError(f"steps: only for a canary, not for {self.policy}")
        if self.policy == "linear":
            if self.duration_seconds is None:
                raise ValueError("duration_seconds: required for a linear ramp")
            if self.interval_seconds > self.duration_seconds:
                raise ValueError("interval_seconds: must not exceed duration_seconds")
        return self


class Gate(_Strict):
    """Step only while the candidate meets the SLO and stays within `margin` of the
    incumbent; fail and roll back otherwise. Undecided below `min_requests`."""

    margin: float = Field(default=0.2, ge=0, le=100, description="0.2: up to 20 % worse")
    min_requests: int = Field(
        default=100, ge=1, le=10_000_000, description="fewer in a step: undecided, the step holds"
    )
    recheck_seconds: float = Field(
        default=10.0, gt=0, le=3600, description="how often a step's gate is judged"
    )


class Rollout(_Strict):
    """How this variant replaces the serving ones."""

    strategy: Literal["revision", "in_place"] = Field(
        default="revision",
        description="revision: a new variant phases in; in_place: new weights swapped into "
        "the running replicas of the same version",
    )
    phase_in: PhaseIn = PhaseIn()
    gate: Gate | None = Field(default=None, description="gate every step on metrics")


class SLO(_Strict):
    """Absolute limits a gated rollout holds the candidate to."""

    p95_latency_ms: float | None = Field(
        default=None, gt=0, le=3_600_000, description="a gate fails a candidate above it"
    )
    error_rate: float | None = Field(
        default=None, ge=0, le=1, description="share of 5xx a gate allows"
    )


class Shadow(_Strict):
    """A shadow serves no client: it gets a mirrored copy of the contract's traffic."""

    sample_rate: float = Field(
        default=1.0, ge=0, le=1, description="share of production requests mirrored"
    )


class Routing(_Strict):
    """How the gateway picks a version for each request."""

    sticky_header: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9-]{1,64}$",
        description="requests with the same value of this header reach the same version",
    )


class Expiry(_Strict):
    """Retire old variants once a rollout succeeds; a variant with traffic never expires."""

    keep_latest: int | None = Field(
        default=None, ge=1, le=1000, description="expire all but the newest N"
    )
    ttl_seconds: float | None = Field(
        default=None, gt=0, le=10 * 365 * 86_400, description="expire variants this old"
    )
    on_replacement: bool = Field(
        default=False, description="expire the variants the new one replaced at 100 %"
    )


class ModelFile(_Strict):
    contract: ContractSpec
    variant: VariantSpec
    rollout: Rollout = Rollout()
    slo: SLO = SLO()
    expiry: Expiry = Expiry()
    shadow: Shadow | None = Field(default=None, description="true, or {sample_rate: 0.1}")
    routing: Routing = Routing()

    @field_validator("shadow", mode="before")
    @classmethod
    def _shadow_flag(cls, value: Any) -> Any:
        """`shadow: true` is the short form of `shadow: {sample_rate: 1.0}`."""
        if value is True:
            return {}
        return None if value is False else value

    @model_validator(mode="after")
    def _shadow_rolls_out_nothing(self) -> ModelFile:
        if self.shadow is not None and self.rollout.strategy == "in_place":
            raise ValueError("rollout.strategy: a shadow takes no traffic to swap in place")
        return self


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class ModelFileError(ValueError):
    """model.yaml is not valid; `errors` names every offending field."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


def parse_model_file(text: str) -> ModelFile:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ModelFileError([FieldError("", f"not valid YAML: {exc}")]) from None
    return validate_model_file(data)


def validate_model_file(data: Any) -> ModelFile:
    if not isinstance(data, dict):
        raise ModelFileError([FieldError("", "a model file is a mapping: contract, variant")])
    try:
        return ModelFile.model_validate(data)
    except ValidationError as exc:
        raise ModelFileError([_field_error(e) for e in exc.errors()]) from None


def _field_error(error: Any) -> FieldError:
    loc = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"])
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    message = message.removeprefix("Value error, ")
    # A model validator reports "field: why"; fold the field into the dotted path.
    if error["type"] == "value_error" and re.match(r"^[\w.]+: ", message):
        sub, _, message = message.partition(": ")
        loc = f"{loc}.{sub}" if loc else sub
    return FieldError(loc, message)


def local_path(uri: str) -> Path | None:
    """The filesystem path a URI names, or None for a remote one."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme in ("", ) or re.match(r"^[A-Za-z]$", parsed.scheme):
        return Path(uri)
    return None


def check_local_artifacts(model: ModelFile) -> None:
    """Refuse a model file whose local artifact or code directory does not exist."""
    errors = []
    path = local_path(model.variant.model.uri)
    if path is not None and not path.exists():
        errors.append(FieldError("variant.model.uri", f"no such file: {path}"))
    code = model.variant.model.python_path
    if code is not None and not Path(code).is_dir():
        errors.append(FieldError("variant.model.python_path", f"no such directory: {code}"))
    if errors:
        raise ModelFileError(errors)
