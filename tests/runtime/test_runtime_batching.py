"""The batching core on its own: real threads and Futures, a plain function as the model, and
a fake clock wherever a window or a deadline decides the outcome, so that time moves only
when the test moves it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import numpy as np
import pytest

from forestflow_runtime.batching import Batcher, Model
from forestflow_runtime.config import BatchingConfig
from forestflow_runtime.errors import DeadlineExceeded, ModelFailed, QueueFull
from tests.runtime.fake_clock import FakeClock
from tests.runtime.turnstile import Turnstile

# How long a wait that should end at once may take before the test fails rather than hangs.
GUARD_S = 60.0
# Every request's deadline. Where a test runs on the real clock this is never reached, however
# loaded the machine; where it runs on a FakeClock only the test moves time.
DEADLINE_S = 600.0
T = TypeVar("T")


class Recorder:
    """A BatchObserver that keeps what it saw."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def batch_done(self, rows: int, model_seconds: float) -> None:
        self.batches.append(rows)


class GatedModel(Turnstile):
    """Doubles its input, but each call waits until the test lets it through: the test decides
    when the model is busy and when each batch ends."""

    def __init__(self) -> None:
        super().__init__("the model", GUARD_S)
        self.seen: list[np.ndarray] = []

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.seen.append(inputs[0].copy())
        self.pass_through()
        return [inputs[0] * 2]


def rows(*values: float, width: int = 4) -> tuple[np.ndarray, ...]:
    return (np.array([[v] * width for v in values], dtype=np.float32),)


async def started(
    config: BatchingConfig, model: Model, clock: FakeClock | None = None
) -> tuple[Batcher, Recorder]:
    recorder = Recorder()
    if clock is None:
        batcher = Batcher(config, recorder)
    else:
        batcher = Batcher(config, recorder, clock=clock, schedule=clock.schedule)
    batcher.model = model
    batcher.start()
    return batcher, recorder


async def wait_for(predicate: Callable[[], object], timeout_s: float = GUARD_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


async def answered(awaitable: Awaitable[T]) -> T:
    """The result of something that needs no time to pass; a hang fails the test instead."""
    async with asyncio.timeout(GUARD_S):
        return await awaitable


async def window_set(clock: FakeClock, ends_at: float) -> None:
    """Until the batcher sleeps on a window that ends at `ends_at` (the soonest timer)."""
    await wait_for(lambda: clock.pending()[:1] == [pytest.approx(ends_at)])


async def test_lone_request_is_not_delayed_by_the_window() -> None:
    clock = FakeClock()
    batcher, recorder = await started(BatchingConfig(window_ms=500), lambda x: [x[0] + 1], clock)
    (out,) = await answered(batcher.infer(rows(1.0), timeout_s=DEADLINE_S))
    np.testing.assert_array_equal(out, rows(2.0)[0])
    assert recorder.batches == [1]
    assert clock.delays == [DEADLINE_S], (
        "the only timer is the request's deadline: no window was set"
    )
    await batcher.close()


async def test_requests_batch_while_model_is_busy_and_results_split_back() -> None:
    model = GatedModel()
    batcher, recorder = await started(BatchingConfig(max_batch_size=32), model)
    first = asyncio.create_task(batcher.infer(rows(0.0), DEADLINE_S))
    await model.arrival(1)
    rest = [
        asyncio.create_task(batcher.infer(rows(float(i), float(i)), DEADLINE_S))
        for i in range(1, 11)
    ]
    await wait_for(lambda: batcher.depth == 10)
    model.open()
    results = await asyncio.gather(first, *rest)
    assert recorder.batches == [1, 20]
    for i, (out,) in enumerate(results[1:], start=1):
        np.testing.assert_array_equal(out, rows(2.0 * i, 2.0 * i)[0])
    await batcher.close()


async def test_max_batch_size_caps_rows() -> None:
    model = GatedModel()
    batcher, recorder = await started(BatchingConfig(max_batch_size=4, window_ms=0), model)
    first = asyncio.create_task(batcher.infer(rows(0.0), DEADLINE_S))
    await model.arrival(1)
    rest = [asyncio.create_task(batcher.infer(rows(float(i)), DEADLINE_S)) for i in range(10)]
    await wait_for(lambda: batcher.depth == 10)
    model.open()
    await asyncio.gather(first, *rest)
    assert recorder.batches == [1, 4, 4, 2]
    await batcher.close()


async def test_different_instance_shapes_are_never_mixed() -> None:
    model = GatedModel()
    batcher, recorder = await started(BatchingConfig(), model)
    first = asyncio.create_task(batcher.infer(rows(0.0), DEADLINE_S))
    await model.arrival(1)
    narrow = [asyncio.create_task(batcher.infer(rows(1.0), DEADLINE_S)) for _ in range(3)]
    wide = [asyncio.create_task(batcher.infer(rows(1.0, width=5), DEADLINE_S)) for _ in range(2)]
    await wait_for(lambda: batcher.depth == 5)
    model.open()
    await asyncio.gather(first, *narrow, *wide)
    assert sorted(recorder.batches) == [1, 2, 3]
    assert {a.shape[1] for a in model.seen[1:]} == {4, 5}
    assert all(len({a.shape[1:]}) == 1 for a in model.seen)
    await batcher.close()


async def test_wrong_output_size_fails_the_whole_batch() -> None:
    batcher, _ = await started(BatchingConfig(), lambda x: [x[0][:1]])
    with pytest.raises(ModelFailed, match="refusing to split"):
        await batcher.infer(rows(1.0, 2.0), DEADLINE_S)
    await batcher.close()


async def test_cancelled_request_never_reaches_the_model() -> None:
    model = GatedModel()
    batcher, recorder = await started(BatchingConfig(), model)
    first = asyncio.create_task(batcher.infer(rows(0.0), DEADLINE_S))
    await model.arrival(1)
    keep = asyncio.create_task(batcher.infer(rows(1.0), DEADLINE_S))
    dropped = asyncio.create_task(batcher.infer(rows(99.0), DEADLINE_S))
    await wait_for(lambda: batcher.depth == 2)
    dropped.cancel()
    model.open()
    await asyncio.gather(first, keep)
    assert recorder.batches == [1, 1]
    assert all(99.0 not in a for a in model.seen)
    await batcher.close()


async def test_full_queue_refuses_at_once() -> None:
    model = GatedModel()
    batcher, _ = await started(BatchingConfig(max_queue=2), model)
    running = asyncio.create_task(batcher.infer(rows(0.0), DEADLINE_S))
    await model.arrival(1)
    queued = [asyncio.create_task(batcher.infer(rows(1.0), DEADLINE_S)) for _ in range(2)]
    await wait_for(lambda: batcher.depth == 2)
    with pytest.raises(QueueFull):
        await batcher.infer(rows(2.0), DEADLINE_S)
    model.open()
    await asyncio.gather(running, *queued)
    await batcher.close()


async def test_deadline_answers_while_the_model_is_still_busy() -> None:
    clock, model = FakeClock(), GatedModel()
    batcher, _ = await started(BatchingConfig(), model, clock)
    request = asyncio.create_task(batcher.infer(rows(1.0), timeout_s=0.05))
    await model.arrival(1)
    clock.advance(0.05)
    with pytest.raises(DeadlineExceeded):
        await answered(request)
    assert len(model.seen) == 1, "the model still holds the call it was never let out of"
    model.open()
    await batcher.close()


async def _under_load(clock: FakeClock, window_ms: float) -> tuple[Batcher, Recorder]:
    """A batcher whose last batch held three requests and ended just now: concurrency is
    evident, so the next request waits for company."""
    model = GatedModel()
    batcher, recorder = await started(BatchingConfig(window_ms=window_ms), model, clock)
    first = asyncio.create_task(batcher.infer(rows(0.0), DEADLINE_S))
    await model.arrival(1)
    crowd = [asyncio.create_task(batcher.infer(rows(1.0), DEADLINE_S)) for _ in range(3)]
    await wait_for(lambda: batcher.depth == 3)
    model.open()
    await asyncio.gather(first, *crowd)
    assert recorder.batches == [1, 3]
    return batcher, recorder


async def test_under_load_the_window_gathers_and_ends_once_the_batch_is_full() -> None:
    clock = FakeClock()
    batcher, recorder = await _under_load(clock, window_ms=300)
    early = asyncio.create_task(batcher.infer(rows(2.0), DEADLINE_S))
    await window_set(clock, 0.3)
    assert not early.done(), "a request under load should wait for company"
    late = [asyncio.create_task(batcher.infer(rows(3.0), DEADLINE_S)) for _ in range(2)]
    # Answered with the clock standing still: the window ended once 3 rows were in.
    await answered(asyncio.gather(early, *late))
    assert recorder.batches == [1, 3, 3]
    await batcher.close()


async def test_under_load_a_request_without_company_goes_when_the_window_ends() -> None:
    clock = FakeClock()
    batcher, recorder = await _under_load(clock, window_ms=300)
    lone = asyncio.create_task(batcher.infer(rows(2.0), DEADLINE_S))
    await window_set(clock, 0.3)
    clock.advance(0.2)
    await asyncio.sleep(0)
    assert not lone.done()
    clock.advance(0.1)
    await answered(lone)
    assert recorder.batches == [1, 3, 1]
    await batcher.close()


async def test_after_a_shared_batch_the_next_waits_for_the_clients_it_answered() -> None:
    clock, model = FakeClock(), GatedModel()
    batcher, recorder = await started(BatchingConfig(window_ms=100), model, clock)
    lone = asyncio.create_task(batcher.infer(rows(0.0), DEADLINE_S))
    await model.arrival(1)
    cohort = [asyncio.create_task(batcher.infer(rows(1.0), DEADLINE_S)) for _ in range(3)]
    await wait_for(lambda: batcher.depth == 3)
    model.let_through()
    await answered(lone)
    await model.arrival(2)  # the cohort's batch is running; one more client queues
    early = asyncio.create_task(batcher.infer(rows(2.0), DEADLINE_S))
    await wait_for(lambda: batcher.depth == 1)
    clock.advance(0.2)  # the cohort's batch takes twice the window
    model.let_through()
    await answered(asyncio.gather(*cohort))
    # Two of the cohort's clients come straight back: the queued request, though it has waited
    # longer than a window already, waits a window from the batch's end for them rather than
    # going alone.
    await window_set(clock, 0.3)
    assert not early.done()
    again = [asyncio.create_task(batcher.infer(rows(3.0), DEADLINE_S)) for _ in range(2)]
    model.open()
    await answered(asyncio.gather(early, *again))
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
    await batcher.infer(rows(1.0), DEADLINE_S)
    await batcher.infer(rows(2.0), DEADLINE_S)
    assert names == ["init:ff-model", "call:ff-model", "call:ff-model"]
    await batcher.close()
