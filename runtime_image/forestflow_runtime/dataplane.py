"""The protocol-agnostic core: one model's readiness, metadata, inference and hot swap.

Adapters (protocols/) turn HTTP bodies into arrays in declared input order and call infer();
nothing here knows about HTTP. A hot swap loads and warms the new model on a thread beside the
old one, then flips the batcher's model reference; batches already running keep the old one.
"""

import asyncio
import dataclasses
import functools
import logging
import time
from dataclasses import dataclass

import numpy as np

from forestflow_runtime.batching import Batcher
from forestflow_runtime.config import ModelFormat, ModelSource, RuntimeConfig, TensorSpec
from forestflow_runtime.datatypes import NUMPY_DTYPES, datatype_of
from forestflow_runtime.errors import (
    DeadlineExceeded,
    InvalidRequest,
    ModelFailed,
    ModelNotFound,
    QueueFull,
)
from forestflow_runtime.loading import configure_threads, load_and_warm
from forestflow_runtime.metrics import RuntimeMetrics
from forestflow_runtime.payloads import PayloadSink

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutputTensor:
    name: str
    datatype: str
    array: np.ndarray


@dataclass(frozen=True, slots=True)
class Inference:
    """The outputs, and the seconds the request spent in this runtime's queue and model: the
    latency the payload stream records and the Server-Timing header reports, so that a
    shadow's latency compares with its primary's like for like."""

    outputs: list[OutputTensor]
    seconds: float


@dataclass(frozen=True, slots=True)
class SwapResult:
    uri: str
    format: ModelFormat
    seconds: float


class DataPlane:
    def __init__(self, config: RuntimeConfig, metrics: RuntimeMetrics) -> None:
        self.config = config
        self.name = config.model_name
        self.metrics = metrics
        self.source = config.source
        self.platform = ""
        self.ready = False
        self.input_index = {spec.name: i for i, spec in enumerate(config.inputs)}
        self.default_timeout_s = config.batching.request_timeout_ms / 1000.0
        self.batcher = Batcher(
            config.batching, metrics, functools.partial(configure_threads, config.cpu_threads)
        )
        self.inflight = 0
        self.payloads = (
            PayloadSink(config.payloads, config.contract, config.variant, metrics)
            if config.payloads.sample_rate > 0
            else None
        )
        metrics.watch_load(queue_depth=lambda: self.batcher.depth, inflight=lambda: self.inflight)
        self._swap_lock = asyncio.Lock()
        # Swaps asked for and not yet done, in order: each takes the lock in turn.
        self.loading: list[ModelSource] = []

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.config.inputs

    def check_model(self, name: str, version: str | None = None) -> None:
        """404 for any name but ours, and for a version other than our variant (if set)."""
        if name != self.name or (version is not None and version != self.config.variant):
            shown = name if version is None else f"{name} version {version}"
            raise ModelNotFound(f"model {shown!r} is not served here (serving {self.name!r})")

    def start(self) -> None:
        self.batcher.start()
        if self.payloads is not None:
            self.payloads.start()

    async def close(self) -> None:
        self.ready = False
        await self.batcher.close()
        if self.payloads is not None:
            await self.payloads.close()

    async def load(self) -> None:
        """The initial load + warm-up; ready flips only after it succeeds.

        Holds the swap lock, so an early swap request waits instead of being overwritten.
        """
        async with self._swap_lock:
            started = time.perf_counter()
            predictor = await asyncio.to_thread(load_and_warm, self.source, self.config.inputs)
            self.batcher.model = predictor.predict
            self.platform = predictor.platform
            self.metrics.model_loaded(time.perf_counter() - started)
            self.ready = True

    async def swap(self, uri: str, model_format: ModelFormat | None) -> SwapResult:
        """Replace the model in place; on any failure the old model keeps serving."""
        source = dataclasses.replace(
            self.source, uri=uri, format=model_format or self.source.format
        )
        self.loading.append(source)
        try:
            async with self._swap_lock:
                started = time.perf_counter()
                try:
                    predictor = await asyncio.to_thread(load_and_warm, source, self.config.inputs)
                except Exception:
                    self.metrics.swap(False, time.perf_counter() - started)
                    raise
                self.batcher.model = predictor.predict
                self.source, self.platform = source, predictor.platform
                seconds = time.perf_counter() - started
                self.metrics.swap(True, seconds)
                self.metrics.model_loaded(seconds)
                self.ready = True
        finally:
            self.loading.remove(source)
        log.info("swapped model %s to %s (%s) in %.3fs", self.name, uri, source.format, seconds)
        return SwapResult(uri, source.format, seconds)

    async def infer(
        self, inputs: tuple[np.ndarray, ...], timeout_s: float, request_id: str | None = None
    ) -> Inference:
        """Run validated inputs (declared order, shared batch dim) through the batcher."""
        started = time.perf_counter()
        self.inflight += 1
        try:
            arrays = await self.batcher.infer(inputs, timeout_s)
        except QueueFull:
            self.metrics.rejected()
            raise
        except DeadlineExceeded:
            self.metrics.deadline_exceeded()
            raise
        finally:
            self.inflight -= 1
        outputs = self._named(arrays)
        seconds = time.perf_counter() - started
        if self.payloads is not None:
            self.payloads.record(
                request_id,
                {spec.name: array for spec, array in zip(self.inputs, inputs, strict=True)},
                {tensor.name: tensor.array for tensor in outputs},
                seconds,
            )
        return Inference(outputs, seconds)

    def _named(self, arrays: list[np.ndarray]) -> list[OutputTensor]:
        declared = self.config.outputs
        if declared and len(declared) != len(arrays):
            raise ModelFailed(f"model returned {len(arrays)} outputs, {len(declared)} declared")
        if not declared:
            return [OutputTensor(f"output{i}", datatype_of(a), a) for i, a in enumerate(arrays)]
        return [
            OutputTensor(
                spec.name, spec.datatype, a.astype(NUMPY_DTYPES[spec.datatype], copy=False)
            )
            for spec, a in zip(declared, arrays, strict=True)
        ]

    def single_input(self, protocol: str) -> TensorSpec:
        """v1 and plain JSON carry one unnamed tensor; multi-input models need v2."""
        if len(self.config.inputs) != 1:
            raise InvalidRequest(
                f"{protocol}: this model takes {len(self.config.inputs)} inputs; "
                f"use POST /v2/models/{self.name}/infer"
            )
        return self.config.inputs[0]
