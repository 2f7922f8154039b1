"""Streaming inference: requests from a Redis Stream through the HTTP batcher, results to
another stream, acknowledged only once written, failures dead-lettered. Real Redis, real
runtimes (in-process uvicorn, and a real process that gets SIGKILLed)."""

import dataclasses
import re
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np
import orjson
import pytest
import torch
from redis import Redis

from forestflow_control_plane.platforms.local.redis_server import (
    redis_command,
    stop_redis,
    wait_for_redis,
)
from forestflow_runtime.config import ConfigError, RuntimeConfig, StreamConfig, load_config
from tests.runtime.runtime_harness import (
    GUARD_S,
    Gate,
    affine_reference,
    free_port,
    metric,
    running_server,
    runtime_process,
    save_affine,
    save_gated,
    state_dict_config,
    wait_until,
)

IN, OUT, DEAD, GROUP = "test:in", "test:out", "test:dead", "forestflow"
X = [[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 1.0]]
Fields = dict[bytes, bytes]


def v2_message(rows: list[list[float]], **extra: str) -> dict[str, str | bytes]:
    shape = [len(rows), len(rows[0])]
    document = {"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "data": rows}]}
    return {"inputs": orjson.dumps(document), **extra}


def streaming(config: RuntimeConfig, redis_url: str, **overrides: Any) -> RuntimeConfig:
    stream = StreamConfig(
        input=IN,
        output=OUT,
        dead_letter=DEAD,
        consumer="under-test",
        claim_idle_ms=100,
        redis_url=redis_url,
    )
    return dataclasses.replace(config, stream=dataclasses.replace(stream, **overrides))


def entries(redis: Redis, stream: str) -> list[Fields]:
    found = cast(list[tuple[bytes, Fields]], redis.xrange(stream))
    return [fields for _, fields in found]


def results_by_id(redis: Redis) -> dict[str, list[Fields]]:
    results: dict[str, list[Fields]] = {}
    for fields in entries(redis, OUT):
        results.setdefault(fields[b"id"].decode(), []).append(fields)
    return results


def pending(redis: Redis) -> int:
    """Entries read by the group and not acknowledged; 0 before the group exists."""
    if not redis.exists(IN) or not redis.xinfo_groups(IN):
        return 0
    summary = cast(dict[str, Any], redis.xpending(IN, GROUP))
    return int(summary["pending"])


def outputs(fields: Fields) -> np.ndarray:
    (tensor,) = orjson.loads(fields[b"outputs"])
    assert tensor["name"] == "y" and tensor["datatype"] == "FP32"
    return np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])


def labelled(text: str, name: str, label: str) -> float:
    """Sum of a metric's samples whose labels include `label` (e.g. 'le="4.0"')."""
    pattern = rf"^{re.escape(name)}{{[^}}]*{re.escape(label)}[^}}]*}} (\S+)$"
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


def stream_count(url: str, outcome: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return labelled(text, "forestflow_stream_messages_total", f'outcome="{outcome}"')


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    return save_affine(tmp_path / "w.safetensors", seed=1)


@pytest.fixture
def gated_weights(tmp_path: Path, gate: Gate) -> Path:
    """ffnets.Gated's weights (seed 1, as `weights`), its warm-up let through: each later
    call waits at `gate` until the test lets it on."""
    gate.let_through()
    return save_gated(tmp_path / "gated.safetensors", seed=1, gate=gate)


def test_messages_in_results_out(
    code_dir: Path, weights: Path, redis: Redis, redis_url: str
) -> None:
    redis.xadd(IN, v2_message(X, id="given-id", reply_to="replies:a"))
    redis.xadd(IN, {"inputs": orjson.dumps({"id": "document-id", "input": X[1]})})
    plain_id = cast(bytes, redis.xadd(IN, {"inputs": orjson.dumps({"input": X})})).decode()
    config = streaming(state_dict_config(code_dir, weights), redis_url)
    with running_server(config) as server:
        wait_until(lambda: redis.xlen(OUT) == 3, what="three results")
        wait_until(lambda: pending(redis) == 0, what="all acknowledged")
        assert stream_count(server.url, "consumed") == stream_count(server.url, "succeeded") == 3
    results = results_by_id(redis)
    assert sorted(results) == sorted(["given-id", "document-id", plain_id])
    want = affine_reference(1, torch.tensor(X)).numpy()
    first = results["given-id"][0]
    np.testing.assert_allclose(outputs(first), want, rtol=1e-5)
    np.testing.assert_allclose(outputs(results["document-id"][0]), want[1:], rtol=1e-5)
    np.testing.assert_allclose(outputs(results[plain_id][0]), want, rtol=1e-5)
    assert (first[b"model_name"], first[b"model_version"]) == (b"affine", b"v1")
    assert first[b"reply_to"] == b"replies:a" and float(first[b"latency_ms"]) > 0
    assert results[plain_id][0][b"message_id"] == plain_id.encode()


def test_stream_messages_and_http_requests_share_batches(
    code_dir: Path, gated_weights: Path, gate: Gate, redis: Redis, redis_url: str
) -> None:
    """While one HTTP request holds the model, 3 messages and 3 HTTP requests (one row
    each) queue up; the next batch holds all 6 rows, so it mixed both."""
    config = streaming(
        state_dict_config(code_dir, gated_weights, gated=True, max_batch_size=8), redis_url
    )
    body = v2_message([X[0]])["inputs"]
    with (
        running_server(config) as server,
        ThreadPoolExecutor(4) as pool,
        httpx.Client(base_url=server.url, timeout=GUARD_S) as client,
    ):

        def post() -> httpx.Response:
            return client.post("/v2/models/affine/infer", content=body)

        blocker = pool.submit(post)
        gate.wait_arrived(2)  # the warm-up, then the blocker: the model holds it
        for i in range(3):
            redis.xadd(IN, v2_message([X[0]], id=f"m{i}"))
        replies = [pool.submit(post) for _ in range(3)]
        batcher = server.app.plane.batcher
        wait_until(lambda: batcher.depth == 6, what="3 messages and 3 requests queued")
        gate.open()
        assert all(r.result().status_code == 200 for r in [blocker, *replies])
        wait_until(lambda: redis.xlen(OUT) == 3, what="three results")
        text = client.get("/metrics").text
    assert sorted(results_by_id(redis)) == ["m0", "m1", "m2"]
    up_to = {le: labelled(text, "forestflow_batch_size_bucket", f'le="{le}.0"') for le in (4, 8)}
    assert up_to[8] - up_to[4] == 1, text


BAD_MESSAGES = [
    ("wrong shape", v2_message([[1.0, 2.0, 3.0]]), "inputs[0].shape"),
    ("not json", {"inputs": "{"}, "inputs: malformed JSON"),
    ("no inputs field", {"input": "[1, 2, 3, 4]"}, "inputs: missing"),
    ("unknown tensor", {"inputs": '{"inputs": [{"name": "z"}]}'}, "inputs[0].name"),
    ("neither form", {"inputs": '{"instances": [[1, 2, 3, 4]]}'}, '{"inputs": [tensors]}'),
    ("plain, wrong type", {"inputs": '{"input": "abcd"}'}, "input"),
]


def test_bad_messages_are_dead_lettered_after_max_failures(
    code_dir: Path, weights: Path, redis: Redis, redis_url: str
) -> None:
    ids = {cast(bytes, redis.xadd(IN, fields, id="*")): name for name, fields, _ in BAD_MESSAGES}
    good = cast(bytes, redis.xadd(IN, v2_message(X, id="good")))
    config = streaming(state_dict_config(code_dir, weights), redis_url, max_failures=2)
    with running_server(config) as server:
        wait_until(lambda: redis.xlen(DEAD) == len(BAD_MESSAGES), what="all dead-lettered")
        wait_until(lambda: pending(redis) == 0, what="all acknowledged")
        assert stream_count(server.url, "failed") == 2 * len(BAD_MESSAGES)
        assert stream_count(server.url, "dead_lettered") == len(BAD_MESSAGES)
    dead = {ids[fields[b"message_id"]]: fields for fields in entries(redis, DEAD)}
    for name, fields, error in BAD_MESSAGES:
        letter = dead[name]
        assert error in letter[b"error"].decode(), (name, letter[b"error"])
        assert letter[b"deliveries"] == b"2" and letter[b"stream"] == IN.encode()
        assert {k.decode(): v.decode() for k, v in letter.items() if k.decode() in fields} == {
            k: v.decode() if isinstance(v, bytes) else v for k, v in fields.items()
        }
    assert [r[b"message_id"] for r in entries(redis, OUT)] == [good]


def test_stale_entry_of_a_dead_consumer_is_claimed(
    code_dir: Path, weights: Path, redis: Redis, redis_url: str
) -> None:
    redis.xgroup_create(IN, GROUP, id="0", mkstream=True)
    redis.xadd(IN, v2_message(X, id="orphan"))
    redis.xreadgroup(GROUP, "crashed-consumer", {IN: ">"})
    assert pending(redis) == 1
    config = streaming(state_dict_config(code_dir, weights), redis_url)
    with running_server(config):
        wait_until(lambda: "orphan" in results_by_id(redis), what="the orphan answered")
        wait_until(lambda: pending(redis) == 0, what="the orphan acknowledged")


def test_graceful_stop_answers_in_flight_messages_and_reads_no_more(
    code_dir: Path, gated_weights: Path, gate: Gate, redis: Redis, redis_url: str
) -> None:
    ids = [cast(bytes, redis.xadd(IN, v2_message([X[0]], id=f"m{i}"))) for i in range(12)]
    config = streaming(
        state_dict_config(code_dir, gated_weights, gated=True, max_batch_size=2), redis_url
    )
    # While the model holds its first batch, the consumer reads what it may hold in flight,
    # two batches of max_batch_size, and then waits for room.
    held = 2 * 2
    with running_server(config) as server:
        wait_until(lambda: pending(redis) == held, what="the consumer's messages in flight")
        gate.wait_arrived(2)  # the warm-up, then the first batch: the model holds it
        server.stop()
        stream = server.app.stream
        assert stream is not None
        wait_until(lambda: stream.stopping, what="the consumer told to stop")
        gate.open()  # the held messages are answered; room frees up, and nothing is read
    (group,) = cast(list[dict[str, Any]], redis.xinfo_groups(IN))
    assert group["last-delivered-id"] == ids[held - 1], "read after the stop began"
    assert pending(redis) == 0
    assert sorted(results_by_id(redis)) == [f"m{i}" for i in range(held)]
    assert redis.xinfo_consumers(IN, GROUP) == [], "a cleanly stopped consumer leaves the group"


@pytest.fixture
def crash_runtime(
    code_dir: Path, weights: Path, redis_url: str
) -> Iterator[subprocess.Popen[str]]:
    """A runtime process whose model answers its warm-up and then never answers again."""
    process = runtime_process(
        {
            "FF_MODEL_NAME": "affine",
            "FF_MODEL_URI": str(weights),
            "FF_MODEL_FORMAT": "state_dict",
            "FF_MODEL_CLASS": "ffnets:Stuck",
            "FF_MODEL_CODE_PATH": str(code_dir),
            "FF_PORT": str(free_port()),
            "FF_INPUTS": '[{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]',
            "FF_MAX_BATCH_SIZE": "2",
            "FF_REDIS_URL": redis_url,
            "FF_STREAM_INPUT": IN,
            "FF_STREAM_OUTPUT": OUT,
            "FF_STREAM_DEAD_LETTER": DEAD,
        }
    )
    yield process
    if process.poll() is None:
        process.kill()
    process.wait(GUARD_S)


def test_a_crash_between_read_and_ack_loses_nothing(
    crash_runtime: subprocess.Popen[str],
    code_dir: Path,
    weights: Path,
    redis: Redis,
    redis_url: str,
) -> None:
    """SIGKILL while messages are read but unanswered; a restarted runtime reclaims them."""
    sent = [f"m{i}" for i in range(6)]
    for request_id in sent:
        redis.xadd(IN, v2_message([X[0]], id=request_id))
    wait_until(
        lambda: crash_runtime.poll() is not None or pending(redis) >= 1,
        what="the first runtime reading",
    )
    crash_runtime.send_signal(signal.SIGKILL)
    crash_runtime.wait(GUARD_S)
    assert crash_runtime.returncode == -signal.SIGKILL
    assert pending(redis) >= 1 and redis.xlen(OUT) == 0, "read, and none answered"
    config = streaming(state_dict_config(code_dir, weights), redis_url)
    with running_server(config):
        wait_until(lambda: sorted(results_by_id(redis)) == sent, what="every message answered")
        wait_until(lambda: pending(redis) == 0, what="every message acknowledged")
    want = affine_reference(1, torch.tensor([X[0]])).numpy()
    for fields in entries(redis, OUT):
        np.testing.assert_allclose(outputs(fields), want, rtol=1e-5)


def test_redis_away_leaves_http_serving_and_the_consumer_recovers(
    code_dir: Path, weights: Path, tmp_path: Path
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    config = streaming(state_dict_config(code_dir, weights), url)
    with running_server(config) as server:
        reply = httpx.post(
            f"{server.url}/v2/models/affine/infer", content=v2_message(X)["inputs"], timeout=5
        )
        assert reply.status_code == 200
        errors = "forestflow_stream_errors_total"
        wait_until(
            lambda: metric(httpx.get(f"{server.url}/metrics").text, errors) >= 1,
            what="redis errors counted",
        )
        (tmp_path / "redis").mkdir()
        late = subprocess.Popen(
            redis_command(port, tmp_path / "redis"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_redis(url, lambda: late.poll() is None)
            client = Redis.from_url(url)
            client.xadd(IN, v2_message(X, id="after-outage"))
            wait_until(lambda: client.xlen(OUT) == 1, what="the consumer back at work")
            client.close()
        finally:
            stop_redis(late)


BASE = {"FF_MODEL_NAME": "m", "FF_MODEL_URI": "/models/m.pt", "FF_REDIS_URL": "redis://r"}

BAD_ENV = [
    ("no redis", {**BASE, "FF_REDIS_URL": "", "FF_STREAM_INPUT": "in"}, "FF_REDIS_URL"),
    ("output is input", {**BASE, "FF_STREAM_INPUT": "a", "FF_STREAM_OUTPUT": "a"},
     "FF_STREAM_OUTPUT"),
    ("dead letter is input", {**BASE, "FF_STREAM_INPUT": "a", "FF_STREAM_DEAD_LETTER": "a"},
     "FF_STREAM_DEAD_LETTER"),
    ("space in group", {**BASE, "FF_STREAM_INPUT": "a", "FF_STREAM_GROUP": "my group"},
     "FF_STREAM_GROUP"),
    ("zero failures", {**BASE, "FF_STREAM_INPUT": "a", "FF_STREAM_MAX_FAILURES": "0"},
     "FF_STREAM_MAX_FAILURES"),
    ("claim idle", {**BASE, "FF_STREAM_INPUT": "a", "FF_STREAM_CLAIM_IDLE_MS": "soon"},
     "FF_STREAM_CLAIM_IDLE_MS"),
]  # fmt: skip


@pytest.mark.parametrize(("env", "variable"), [r[1:] for r in BAD_ENV], ids=[r[0] for r in BAD_ENV])
def test_bad_stream_config_names_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env)
    assert caught.value.variable == variable


def test_stream_config_is_off_by_default_and_derives_names_from_the_contract() -> None:
    assert load_config(BASE).stream == StreamConfig()
    stream = load_config({**BASE, "FF_CONTRACT": "fraud/scoring", "FF_STREAM_INPUT": "in"}).stream
    assert (stream.input, stream.output, stream.dead_letter) == (
        "in",
        "ff:stream:fraud/scoring:out",
        "ff:stream:fraud/scoring:dead",
    )
    assert (stream.group, stream.max_failures, stream.redis_url) == ("forestflow", 3, "redis://r")
