"""The batching core on its own: real threads and Futures, a plain function as the model."""

import asyncio
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from forestflow_runtime.batching import Batcher, Model
from forestflow_runtime.config import BatchingConfig
from forestflow_runtime.errors import DeadlineExceeded, ModelFailed, QueueFull


class Recorder:
    """A BatchObserver that keeps what it saw."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def batch_done(self, rows: int, model_seconds: float) -> None:
        self.batches.append(rows)


class GatedModel:
    """Doubles its input; the first call blocks until released, so the test controls 'busy'."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.seen: list[np.ndarray] = []

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.seen.append(inputs[0].copy())
        self.entered.set()
        self.release.wait(10)
        return [inputs[0] * 2]


def rows(*values: float, width: int = 4) -> tuple[np.ndarray, ...]:
    return (np.array([[v] * width for v in values], dtype=np.float32),)


async def started(config: BatchingConfig, model: Model) -> tuple[Batcher, Recorder]:
    recorder = Recorder()
    batcher = Batcher(config, recorder)
    batcher.model = model
    batcher.start()
    return batcher, recorder


async def wait_for(predicate: Callable[[], object], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


async def test_lone_request_is_not_delayed_by_the_window() -> None:
    batcher, recorder = await started(BatchingConfig(window_ms=500), lambda x: [x[0] + 1])
    begun = time.perf_counter()
    (out,) = await batcher.infer(rows(1.0), timeout_s=5)
    assert time.perf_counter() - begun < 0.1
    np.testing.assert_array_equal(out, rows(2.0)[0])
    assert recorder.batches == [1]
    await batcher.close()


async def test_requests_batch_while_model_is_busy_and_results_split_back() -> None:
    model = GatedModel()
    batcher, recorder = await started(BatchingConfig(max_batch_size=32), model)
    first = asyncio.create_task(batcher.infer(rows(0.0), 5))
    await asyncio.to_thread(model.entered.wait, 5)
    rest = [asyncio.create_task(batcher.infer(rows(float(i), float(i)), 5)) for i in range(1, 11)]
    await wait_for(lambda: batcher.depth == 10)
    model.release.set()
    results = await asyncio.gather(first, *rest)
    assert recorder.batches == [1, 20]
    for i, (out,) in enumerate(results[1:], start=1):
        np.testing.assert_array_equal(out, rows(2.0 * i, 2.0 * i)[0])
    await batcher.close()


async def test_max_batch_size_caps_rows() -> None:
    model = GatedModel()
    batcher, recorder = await started(BatchingConfig(max_batch_size=4, window_ms=0), model)
    first = asyncio.create_task(batcher.infer(rows(0.0), 5))
    await asyncio.to_thread(model.entered.wait, 5)
    rest = [asyncio.create_task(batcher.infer(rows(float(i)), 5)) for i in range(10)]
    await wait_for(lambda: batcher.depth == 10)
    model.release.set()
    await asyncio.gather(first, *rest)
    assert recorder.batches == [1, 4, 4, 2]
    await batcher.close()


async def test_different_instance_shapes_are_never_mixed() -> None:
    model = GatedModel()
    batcher, recorder = await started(BatchingConfig(), model)
    first = asyncio.create_task(batcher.infer(rows(0.0), 5))
    await asyncio.to_thread(model.entered.wait, 5)
    narrow = [asyncio.create_task(batcher.infer(rows(1.0), 5)) for _ in range(3)]
    wide = [asyncio.create_task(batcher.infer(rows(1.0, width=5), 5)) for _ in range(2)]
    await wait_for(lambda: batcher.depth == 5)
    model.release.set()
    await asyncio.gather(first, *narrow, *wide)
    assert sorted(recorder.batches) == [1, 2, 3]
    assert {a.shape[1] for a in model.seen[1:]} == {4, 5}
    assert all(len({a.shape[1:]}) == 1 for a in model.seen)
    await batcher.close()


async def test_wrong_output_size_fails_the_whole_batch() -> None:
    batcher, _ = await started(BatchingConfig(), lambda x: [x[0][:1]])
    with pytest.raises(ModelFailed, match="refusing to split"):
        await batcher.infer(rows(1.0, 2.0), 5)
    await batcher.close()


async def test_cancelled_request_never_reaches_the_model() -> None:
    model = GatedModel()
    batcher, recorder = await started(BatchingConfig(), model)
    first = asyncio.create_task(batcher.infer(rows(0.0), 5))
    await asyncio.to_thread(model.entered.wait, 5)
    keep = asyncio.create_task(batcher.infer(rows(1.0), 5))
    dropped = asyncio.create_task(batcher.infer(rows(99.0), 5))
    await wait_for(lambda: batcher.depth == 2)
    dropped.cancel()
    model.release.set()
    await asyncio.gather(first, keep)
    assert recorder.batches == [1, 1]
    assert all(99.0 not in a for a in model.seen)
    await batcher.close()


async def test_full_queue_refuses_at_once() -> None:
    model = GatedModel()
    batcher, _ = await started(BatchingConfig(max_queue=2), model)
    running = asyncio.create_task(batcher.infer(rows(0.0), 5))
    await asyncio.to_thread(model.entered.wait, 5)
    queued = [asyncio.create_task(batcher.infer(rows(1.0), 5)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        await batcher.infer(rows(2.0), 5)
    model.release.set()
    await asyncio.gather(running, *queued)
    await batcher.close()


async def test_deadline_answers_while_the_model_is_still_busy() -> None:
    model = GatedModel()
    batcher, _ = await started(BatchingConfig(), model)
    begun = time.perf_counter()
    with pytest.raises(DeadlineExceeded):
        await batcher.infer(rows(1.0), timeout_s=0.05)
    assert time.perf_counter() - begun < 1.0
    model.release.set()
    await batcher.close()


async def test_under_load_the_window_gathers_and_ends_once_the_batch_is_full() -> None:
    model = GatedModel()
    batcher, recorder = await started(BatchingConfig(window_ms=300), model)
    first = asyncio.create_task(batcher.infer(rows(0.0), 5))
    await asyncio.to_thread(model.entered.wait, 5)
    crowd = [asyncio.create_task(batcher.infer(rows(1.0), 5)) for _ in range(3)]
    await wait_for(lambda: batcher.depth == 3)
    model.release.set()
    await asyncio.gather(first, *crowd)  # batches [1, 3]: concurrency is evident now
    began = time.perf_counter()
    early = asyncio.create_task(batcher.infer(rows(2.0), 5))
    await asyncio.sleep(0.05)
    assert not early.done(), "a request under load should wait for company"
    late = [asyncio.create_task(batcher.infer(rows(3.0), 5)) for _ in range(2)]
    await asyncio.gather(early, *late)
    assert recorder.batches == [1, 3, 3]
    assert time.perf_counter() - began < 0.25, "the window should end once 3 rows are in"
    await batcher.close()


class SleepyModel:
    """Doubles its input after sleeping `seconds`: a model with a known batch time."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        time.sleep(self.seconds)
        return [inputs[0] * 2]


async def test_after_a_shared_batch_the_next_waits_for_the_clients_it_answered() -> None:
    batcher, recorder = await started(BatchingConfig(window_ms=100), SleepyModel(0.2))
    lone = asyncio.create_task(batcher.infer(rows(0.0), 5))
    await asyncio.sleep(0.01)
    cohort = [asyncio.create_task(batcher.infer(rows(1.0), 5)) for _ in range(3)]
    await lone
    await asyncio.sleep(0.05)  # the cohort's batch is running; one more client queues
    early = asyncio.create_task(batcher.infer(rows(2.0), 5))
    await asyncio.gather(*cohort)
    # Two of the cohort's clients come straight back: the queued request, though it has waited
    # longer than a window already, waits for them rather than going alone.
    again = [asyncio.create_task(batcher.infer(rows(3.0), 5)) for _ in range(2)]
    await asyncio.gather(early, *again)
    assert recorder.batches == [1, 3, 3]
    await batcher.close()


async def test_thread_init_runs_on_the_model_thread_before_any_call() -> None:
    names: list[str] = []
    batcher = Batcher(
        BatchingConfig(),
        Recorder(),
        thread_init=lambda: names.append(f"init:{threading.current_thread().name}"),
    )

    def model(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        names.append(f"call:{threading.current_thread().name}")
        return [inputs[0]]

    batcher.model = model
    batcher.start()
    await batcher.infer(rows(1.0), 5)
    await batcher.infer(rows(2.0), 5)
    assert names == ["init:ff-model", "call:ff-model", "call:ff-model"]
    await batcher.close()
