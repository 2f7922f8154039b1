"""Runtime configuration, read once from FF_* environment variables into frozen dataclasses.

Every problem is a ConfigError naming the variable, so the supervisor's log says what to fix.
"""

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from forestflow_runtime.datatypes import NUMPY_DTYPES


class ConfigError(ValueError):
    """A missing or malformed FF_* variable; the message starts with the variable's name."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


class ModelFormat(enum.StrEnum):
    TORCHSCRIPT = "torchscript"
    TORCH_EXPORT = "torch_export"
    STATE_DICT = "state_dict"
    ONNX = "onnx"
    SKLEARN = "sklearn"


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A declared tensor; shape None means any shape. The first dim is the batch dim."""

    name: str
    datatype: str
    shape: tuple[int, ...] | None


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Everything needed to load one artifact; a hot swap replaces uri and format only."""

    uri: str
    format: ModelFormat
    model_class: str | None = None
    code_path: Path | None = None
    allow_pickle: bool = False
    device: str = "cpu"


@dataclass(frozen=True, slots=True)
class BatchingConfig:
    max_batch_size: int = 32
    window_ms: float = 2.0
    max_queue: int = 256
    request_timeout_ms: float = 30000.0


@dataclass(frozen=True, slots=True)
class PayloadConfig:
    """Sampling of request/response pairs to a Redis stream; off when sample_rate is 0."""

    sample_rate: float = 0.0
    redis_url: str | None = None
    stream: str = "forestflow:payloads"
    max_buffer: int = 1000
    max_stream_len: int = 10000


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """Requests read from a Redis stream (consumer group), results written to another; off
    when input is empty. consumer is this replica's name in the group (default host-pid)."""

    input: str = ""
    output: str = ""
    dead_letter: str = ""
    group: str = "forestflow"
    consumer: str = ""
    max_failures: int = 3
    claim_idle_ms: int = 60000
    max_stream_len: int = 100000
    redis_url: str | None = None


# A request body past this is refused (413) before it is read whole: 64 MiB, room for a
# batch of images as base64 or binary tensors.
MAX_REQUEST_BYTES = 64 * 2**20


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    model_name: str
    source: ModelSource
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...] = ()
    batching: BatchingConfig = BatchingConfig()
    host: str = "127.0.0.1"
    port: int = 8080
    cpu_threads: int | None = None
    contract: str = ""
    variant: str = ""
    payloads: PayloadConfig = PayloadConfig()
    stream: StreamConfig = StreamConfig()
    max_request_bytes: int = MAX_REQUEST_BYTES


DEFAULT_INPUTS = (TensorSpec("input0", "FP32", None),)
_DEVICE = re.compile(r"cpu|cuda(:\d+)?|mps")


def load_config(env: Mapping[str, str]) -> RuntimeConfig:
    """Build the configuration from an environment mapping (os.environ in production)."""
    source = _model_source(env)
    window_ms = _number(env, "FF_BATCH_WINDOW_MS", 2.0, minimum=0.0)
    payload_rate = _number(env, "FF_PAYLOAD_SAMPLE_RATE", 0.0, minimum=0.0)
    if payload_rate > 1.0:
        raise ConfigError("FF_PAYLOAD_SAMPLE_RATE", f"must be between 0 and 1, got {payload_rate}")
    if payload_rate > 0 and not env.get("FF_REDIS_URL"):
        raise ConfigError("FF_REDIS_URL", "required when FF_PAYLOAD_SAMPLE_RATE > 0")
    threads = env.get("FF_CPU_THREADS")
    model_name = _required(env, "FF_MODEL_NAME")
    return RuntimeConfig(
        model_name=model_name,
        source=source,
        inputs=_tensor_specs(env, "FF_INPUTS") or DEFAULT_INPUTS,
        outputs=_tensor_specs(env, "FF_OUTPUTS"),
        batching=BatchingConfig(
            max_batch_size=_integer(env, "FF_MAX_BATCH_SIZE", 32, minimum=1),
            window_ms=window_ms,
            max_queue=_integer(env, "FF_MAX_QUEUE", 256, minimum=1),
            request_timeout_ms=_number(env, "FF_REQUEST_TIMEOUT_MS", 30000.0, minimum=1.0),
        ),
        max_request_bytes=_integer(env, "FF_MAX_REQUEST_BYTES", MAX_REQUEST_BYTES, minimum=1),
        host=env.get("FF_HOST", "127.0.0.1"),
        port=_integer(env, "FF_PORT", 8080, minimum=0, maximum=65535),
        cpu_threads=None if threads is None else _integer(env, "FF_CPU_THREADS", 0, minimum=1),
        contract=env.get("FF_CONTRACT", ""),
        variant=env.get("FF_VARIANT", ""),
        payloads=PayloadConfig(
            sample_rate=payload_rate,
            redis_url=env.get("FF_REDIS_URL") or None,
            stream=env.get("FF_PAYLOAD_STREAM", "forestflow:payloads"),
            max_stream_len=_integer(env, "FF_PAYLOAD_MAX_LENGTH", 10000, minimum=1),
        ),
        stream=_stream_config(env, env.get("FF_CONTRACT") or model_name),
    )


def _stream_config(env: Mapping[str, str], owner: str) -> StreamConfig:
    """Off without FF_STREAM_INPUT; output and dead-letter streams default to names derived
    from the contract (the model name when there is none), as the control plane derives them."""
    source = _stream_key(env, "FF_STREAM_INPUT", "")
    if not source:
        return StreamConfig()
    if not env.get("FF_REDIS_URL"):
        raise ConfigError("FF_REDIS_URL", "required when FF_STREAM_INPUT is set")
    output = _stream_key(env, "FF_STREAM_OUTPUT", f"ff:stream:{owner}:out")
    dead_letter = _stream_key(env, "FF_STREAM_DEAD_LETTER", f"ff:stream:{owner}:dead")
    for variable, key in (("FF_STREAM_OUTPUT", output), ("FF_STREAM_DEAD_LETTER", dead_letter)):
        if key == source:
            raise ConfigError(variable, f"must differ from FF_STREAM_INPUT ({source!r})")
    return StreamConfig(
        input=source,
        output=output,
        dead_letter=dead_letter,
        group=_stream_key(env, "FF_STREAM_GROUP", "forestflow"),
        max_failures=_integer(env, "FF_STREAM_MAX_FAILURES", 3, minimum=1, maximum=1000),
        claim_idle_ms=_integer(env, "FF_STREAM_CLAIM_IDLE_MS", 60000, minimum=1),
        max_stream_len=_integer(env, "FF_STREAM_MAX_LENGTH", 100000, minimum=1),
        redis_url=env["FF_REDIS_URL"],
    )


def _stream_key(env: Mapping[str, str], name: str, default: str) -> str:
    """A Redis key or group name: unset or empty means the default; no whitespace inside."""
    value = env.get(name, "").strip() or default
    if any(c.isspace() for c in value):
        raise ConfigError(name, f"must not contain whitespace, got {value!r}")
    return value


def _model_source(env: Mapping[str, str]) -> ModelSource:
    uri = _required(env, "FF_MODEL_URI")
    raw_format = env.get("FF_MODEL_FORMAT", ModelFormat.TORCHSCRIPT.value)
    try:
        model_format = ModelFormat(raw_format)
    except ValueError:
        allowed = ", ".join(f.value for f in ModelFormat)
        problem = f"must be one of {allowed}, got {raw_format!r}"
        raise ConfigError("FF_MODEL_FORMAT", problem) from None
    model_class = env.get("FF_MODEL_CLASS") or None
    if model_format is ModelFormat.STATE_DICT and (model_class is None or ":" not in model_class):
        raise ConfigError("FF_MODEL_CLASS", "state_dict format needs 'module:Class'")
    allow_pickle = env.get("FF_ALLOW_PICKLE", "false").lower() in ("1", "true", "yes")
    if model_format is ModelFormat.SKLEARN and not allow_pickle:
        raise ConfigError("FF_ALLOW_PICKLE", "sklearn models are pickles; set it to 'true'")
    device = env.get("FF_DEVICE", "cpu")
    if not _DEVICE.fullmatch(device):
        raise ConfigError("FF_DEVICE", f"must be cpu, cuda, cuda:N or mps, got {device!r}")
    code_path = env.get("FF_MODEL_CODE_PATH") or None
    if code_path is not None and not Path(code_path).is_dir():
        raise ConfigError("FF_MODEL_CODE_PATH", f"{code_path!r} is not a directory")
    return ModelSource(
        uri=uri,
        format=model_format,
        model_class=model_class,
        code_path=None if code_path is None else Path(code_path),
        allow_pickle=allow_pickle,
        device=device,
    )


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(name, "is required")
    return value


def _integer(
    env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int | None = None
) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise ConfigError(name, f"out of range, got {value}")
    return value


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"must be a number, got {raw!r}") from None
    if not value >= minimum:
        raise ConfigError(name, f"must be >= {minimum}, got {raw}")
    return value


def _tensor_specs(env: Mapping[str, str], name: str) -> tuple[TensorSpec, ...]:
    raw = env.get(name)
    if not raw:
        return ()
    try:
        items = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(name, f"not valid JSON: {exc}") from None
    if not isinstance(items, list):
        raise ConfigError(name, "must be a JSON list of {name, datatype, shape}")
    return tuple(_tensor_spec(name, index, item) for index, item in enumerate(items))


def _tensor_spec(variable: str, index: int, item: object) -> TensorSpec:
    if not isinstance(item, dict):
        raise ConfigError(variable, f"[{index}] must be an object")
    name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
    if not isinstance(name, str) or not name:
        raise ConfigError(variable, f"[{index}].name must be a non-empty string")
    if datatype not in NUMPY_DTYPES:
        raise ConfigError(variable, f"[{index}].datatype {datatype!r} is not a numeric OIP type")
    if not (
        isinstance(shape, list)
        and shape
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape)
    ):
        raise ConfigError(variable, f"[{index}].shape must be a non-empty list of ints >= -1")
    if shape[0] != -1:
        raise ConfigError(variable, f"[{index}].shape[0] is the batch dim and must be -1")
    return TensorSpec(name=name, datatype=datatype, shape=tuple(shape))
