"""The variant's part of model.yaml: its contract's tensors, its artifact, and how it runs
(device, batching, scaling, resources, payload logging, streaming). Shared by model_file."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TensorSpec(Strict):
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


class ContractSpec(Strict):
    """The use case clients call: its name and the tensors it takes and gives."""

    name: str = Field(pattern=CONTRACT_NAME, description="namespace/name, e.g. fraud/scoring")
    inputs: list[TensorSpec] = Field(min_length=1, description="what every request carries")
    outputs: list[TensorSpec] = Field(min_length=1, description="what every answer carries")


class ModelArtifact(Strict):
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


class Batching(Strict):
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


class Scaling(Strict):
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


class Resources(Strict):
    """Requests and limits of each replica (Knative)."""

    cpu: str | None = Field(default=None, pattern=QUANTITY, description="e.g. \"2\" or 500m")
    memory: str | None = Field(default=None, pattern=QUANTITY, description="e.g. 2Gi")
    gpu: int = Field(default=0, ge=0, le=16, description="nvidia.com/gpu on Knative")


class PayloadLogging(Strict):
    """Sampled request/response events on a capped Redis Stream, for audits and replays."""

    sample_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of requests logged to forestflow:payloads"
    )
    max_length: int = Field(default=100_000, ge=1, le=100_000_000, description="stream cap")


STREAM_KEY = r"^[!-~]{1,256}$"  # a Redis key that travels in an env variable: no spaces


class Streaming(Strict):
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


class VariantSpec(Strict):
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
