"""The llama.cpp backend on real `llama-server` processes serving the tiny random GGUF.

One backend (and one server) is shared by the module where a test does not need its own settings:
each server start costs a second or two.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from core.config import ServeConfig
from core.hashing import file_sha256
from core.serving import base
from core.serving.llamacpp.backend import LlamaCppBackend

pytestmark = pytest.mark.integration  # a llama-server process (see tests/helpers/tiers.py)

T = TypeVar("T")
KEY = "tiny:1"
HELLO = [{"role": "user", "content": "Write a function that adds two numbers."}]


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    """One event loop for the module: the shared backend's client and servers outlive a test."""
    with asyncio.Runner() as r:
        yield r


def served(path: Path, key: str = KEY, task: Any = "text-generation") -> base.ServedModel:
    return base.ServedModel(key, task, path, file_sha256(path) if path.is_file() else "0" * 64)


def make_backend(log_dir: Path, **config: Any) -> LlamaCppBackend:
    return LlamaCppBackend(ServeConfig(**({"n_threads": 2, "n_ctx": 2048} | config)), log_dir)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="module")
def backend(runner: asyncio.Runner, tiny_gguf: Path, log_dir: Path) -> Iterator[LlamaCppBackend]:
    """The module's backend, with KEY deployed."""
    b = make_backend(log_dir, max_loaded_models=2)
    runner.run(b.deploy(served(tiny_gguf)))
    yield b
    runner.run(b.close())


@pytest.fixture
def run(runner: asyncio.Runner) -> Any:
    def run_(coro: Coroutine[Any, Any, T]) -> T:
        return runner.run(coro)

    return run_


def counts(usage: base.Json) -> tuple[int, int, int]:
    """The token counts of a usage block (`prompt_tokens_details.cached_tokens` depends on the cache)."""
    return usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]


def pid_of(deployment: base.Deployment) -> int:
    assert deployment.state == "loaded", deployment
    return int(deployment.detail.split(",")[0].removeprefix("pid "))


async def deployment(backend: LlamaCppBackend, key: str) -> base.Deployment:
    return next(d for d in await backend.list() if d.key == key)


def gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


async def collect(stream: Any) -> list[base.Json]:
    return [chunk async for chunk in stream]


def test_the_backend_keeps_the_contract(backend: LlamaCppBackend, run: Any) -> None:
    assert isinstance(backend, base.Backend)
    assert run(backend.health()) is True


def test_deployed_model_answers_a_chat_with_its_key_and_real_usage(
    backend: LlamaCppBackend, run: Any
) -> None:
    reply = run(backend.chat(KEY, {"model": KEY, "messages": HELLO, "max_tokens": 5}))
    assert reply["model"] == KEY and reply["object"] == "chat.completion"
    assert isinstance(reply["choices"][0]["message"]["content"], str)
    usage = reply["usage"]
    assert usage["prompt_tokens"] > 10 and usage["completion_tokens"] == 5  # SmolLM2 template + system turn
    assert usage["total_tokens"] == usage["prompt_tokens"] + 5


def test_chat_is_rendered_with_the_ggufs_own_template(
    backend: LlamaCppBackend, run: Any, tiny_base: Path
) -> None:
    from transformers import AutoTokenizer

    from core.chat_template import render

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_base))  # the template the GGUF was given
    rendered = tokenizer(render(tokenizer, HELLO, generation_prompt=True), add_special_tokens=False).input_ids
    reply = run(backend.chat(KEY, {"messages": HELLO, "max_tokens": 1}))
    assert reply["usage"]["prompt_tokens"] == len(rendered)


def test_stream_ends_with_a_usage_chunk_matching_the_non_stream_usage(
    backend: LlamaCppBackend, run: Any
) -> None:
    body = {"model": KEY, "messages": HELLO, "max_tokens": 7, "temperature": 0}
    chunks = run(collect(backend.chat_stream(KEY, {**body, "stream_options": {"include_usage": True}})))
    *content, last = chunks
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == KEY for c in chunks)
    assert content[-1]["choices"][0]["finish_reason"] == "length"
    assert last["choices"] == [] and last["object"] == "chat.completion.chunk" and last["model"] == KEY
    assert counts(last["usage"]) == counts(run(backend.chat(KEY, body))["usage"])


def test_stream_without_include_usage_sends_no_usage_chunk(backend: LlamaCppBackend, run: Any) -> None:
    chunks = run(collect(backend.chat_stream(KEY, {"messages": HELLO, "max_tokens": 3})))
    assert all("usage" not in c and c["choices"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_completion_and_its_stream_count_the_same_tokens(backend: LlamaCppBackend, run: Any) -> None:
    body = {"prompt": "def add(a, b):", "max_tokens": 6, "temperature": 0}
    reply = run(backend.completion(KEY, body))
    assert reply["object"] == "text_completion" and reply["model"] == KEY
    assert reply["usage"]["completion_tokens"] == 6
    chunks = run(collect(backend.completion_stream(KEY, {**body, "stream_options": {"include_usage": True}})))
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == reply["choices"][0]["text"]
    assert counts(chunks[-1]["usage"]) == counts(reply["usage"]) and chunks[-1]["object"] == "text_completion"


def test_stream_stopped_by_a_stop_sequence_counts_the_tokens_it_sent(
    backend: LlamaCppBackend, run: Any
) -> None:
    body = {"prompt": "def add(a, b):", "max_tokens": 6, "temperature": 0}
    text = run(backend.completion(KEY, body))["choices"][0]["text"]
    # stop at the end of what greedy decoding produces: the same tokens, finished by "stop"
    stop = {**body, "max_tokens": 50, "stop": [text]}
    reply = run(backend.completion(KEY, stop))
    chunks = run(collect(backend.completion_stream(KEY, {**stop, "stream_options": {"include_usage": True}})))
    assert chunks[-2]["choices"][0]["finish_reason"] == reply["choices"][0]["finish_reason"] == "stop"
    assert counts(chunks[-1]["usage"]) == counts(
        reply["usage"]
    )  # the server's count, tokens of the stop sequence included


def test_eight_concurrent_streams_overlap_and_each_counts_as_its_non_stream_twin(
    run: Any, tiny_gguf: Path, tmp_path: Path
) -> None:
    b = make_backend(tmp_path, parallel=8)
    run(b.deploy(served(tiny_gguf)))
    prompts = [[{"role": "user", "content": f"Write function number {i}."}] for i in range(8)]
    bodies = [{"messages": p, "max_tokens": 48, "temperature": 0} for p in prompts]

    async def timed(body: base.Json) -> tuple[list[base.Json], float, float]:
        started = time.monotonic()
        chunks = await collect(b.chat_stream(KEY, {**body, "stream_options": {"include_usage": True}}))
        return chunks, started, time.monotonic()

    async def eight() -> list[tuple[list[base.Json], float, float]]:
        return await asyncio.gather(*(timed(body) for body in bodies))

    run(collect(b.chat_stream(KEY, {"messages": HELLO, "max_tokens": 2})))  # warm
    started = time.monotonic()
    results = run(eight())
    wall = time.monotonic() - started
    # served one after another, the wall time would be the sum of the streams' own durations
    assert wall < 0.6 * sum(end - begin for _, begin, end in results)
    assert max(begin for _, begin, _ in results) < min(end for _, _, end in results)  # all open at once
    for (chunks, _, _), body in zip(results, bodies, strict=True):
        assert chunks[-2]["choices"][0]["finish_reason"] == "length"
        twin = run(b.chat(KEY, body))
        assert (
            counts(chunks[-1]["usage"]) == counts(twin["usage"]) and twin["usage"]["completion_tokens"] == 48
        )
        streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert streamed == twin["choices"][0]["message"]["content"]
    run(b.close())


def test_concurrent_deploys_of_one_key_start_one_process(
    backend: LlamaCppBackend, run: Any, tiny_gguf: Path, log_dir: Path
) -> None:
    model = served(tiny_gguf, "tiny:concurrent")

    async def deploy_three() -> list[base.Deployment]:
        return await asyncio.gather(*(backend.deploy(model) for _ in range(3)))

    pids = {pid_of(d) for d in run(deploy_three())}
    assert len(pids) == 1
    log = (log_dir / "tiny_concurrent.log").read_text()
    assert log.count("=== ") == 1
    run(backend.undeploy("tiny:concurrent"))
    assert gone(pids.pop())
    assert "tiny:concurrent" not in {d.key for d in run(backend.list())}


def test_killed_server_is_restarted_by_the_next_request(backend: LlamaCppBackend, run: Any) -> None:
    pid = pid_of(run(deployment(backend, KEY)))
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while run(deployment(backend, KEY)).state == "loaded" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run(deployment(backend, KEY)).state == "failed"
    reply = run(backend.chat(KEY, {"messages": HELLO, "max_tokens": 2}))
    assert reply["usage"]["completion_tokens"] == 2
    assert pid_of(run(deployment(backend, KEY))) != pid


def busy_slots(backend: LlamaCppBackend, run: Any, key: str = KEY) -> float:
    return run(backend.server_metrics())[key]["requests_processing"]


def wait_for_idle(backend: LlamaCppBackend, run: Any, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while busy_slots(backend, run) > 0:
        assert time.monotonic() < deadline, "the slot is still busy"
        time.sleep(0.05)


def test_closing_a_stream_early_frees_its_slot(backend: LlamaCppBackend, run: Any) -> None:
    # 1800 tokens take the tiny model several seconds: a slot still busy after the client left would
    # show in llama-server's own metrics
    async def read_three_then_leave() -> float:
        stream = backend.chat_stream(KEY, {"messages": HELLO, "max_tokens": 1800, "temperature": 0})
        for _ in range(3):
            await anext(stream)
        busy = (await backend.server_metrics())[KEY]["requests_processing"]
        await stream.aclose()  # type: ignore[attr-defined]
        return busy

    assert run(read_three_then_leave()) == 1
    wait_for_idle(backend, run, within_s=2.0)
    predicted = run(backend.server_metrics())[KEY]["tokens_predicted_total"]
    time.sleep(0.3)
    assert run(backend.server_metrics())[KEY]["tokens_predicted_total"] == predicted  # nothing runs on


def test_a_full_queue_is_refused_at_once_with_a_retry_after(
    run: Any, tiny_gguf: Path, tmp_path: Path
) -> None:
    b = make_backend(tmp_path, parallel=1, max_queue=1)
    run(b.deploy(served(tiny_gguf)))

    async def saturate() -> tuple[base.BackendUnavailable, float]:
        long = {"messages": HELLO, "max_tokens": 1800, "temperature": 0}
        decoding, waiting = b.chat_stream(KEY, long), b.chat_stream(KEY, long)
        await anext(decoding)
        queued = asyncio.ensure_future(anext(waiting))  # admitted, deferred by llama.cpp
        await asyncio.sleep(0.3)
        deferred = (await b.server_metrics())[KEY]["requests_deferred"]
        try:
            with pytest.raises(base.BackendUnavailable) as refused:
                await b.chat(KEY, {"messages": HELLO, "max_tokens": 2})
        finally:
            queued.cancel()
            await asyncio.gather(queued, return_exceptions=True)
            await decoding.aclose()  # type: ignore[attr-defined]
            await waiting.aclose()  # type: ignore[attr-defined]
        return refused.value, deferred

    refused, deferred = run(saturate())
    assert deferred == 1
    assert refused.status == 503 and refused.retry_after >= 1
    assert "all 1 slots are busy and 1 requests are waiting" in str(refused)
    reply = run(b.chat(KEY, {"messages": HELLO, "max_tokens": 2}))  # the places are free again
    assert reply["usage"]["completion_tokens"] == 2
    run(b.close())


def test_prompt_longer_than_the_context_is_rejected_with_upstreams_reason(
    backend: LlamaCppBackend, run: Any
) -> None:
    long = [{"role": "user", "content": "word " * 3000}]
    with pytest.raises(base.UpstreamRejected, match="maximum context length is 2048 tokens"):
        run(backend.chat(KEY, {"messages": long, "max_tokens": 4}))
    with pytest.raises(base.UpstreamRejected, match="maximum context length"):
        run(collect(backend.chat_stream(KEY, {"messages": long, "stream_options": {"include_usage": True}})))


def test_unknown_keys_embeddings_and_invalid_parameters_are_refused(
    backend: LlamaCppBackend, run: Any
) -> None:
    with pytest.raises(base.NotDeployed):
        run(backend.chat("nope:1", {"messages": HELLO}))
    with pytest.raises(base.NotDeployed):
        run(collect(backend.completion_stream("nope:1", {"prompt": "x"})))
    with pytest.raises(base.UpstreamRejected, match="is a text-generation model: use a text-embedding model"):
        run(backend.embeddings(KEY, ["hello"]))
    with pytest.raises(base.UpstreamRejected, match=f"{KEY}: .*number"):
        run(backend.chat(KEY, {"messages": HELLO, "temperature": "hot"}))


def test_embedding_models_and_missing_files_are_not_deployed(
    backend: LlamaCppBackend, run: Any, tmp_path: Path
) -> None:
    with pytest.raises(base.UpstreamRejected, match="text-embedding model"):
        run(backend.deploy(served(tmp_path, "minilm:1", task="text-embedding")))
    with pytest.raises(base.BackendError, match="gone.gguf not found"):
        run(backend.deploy(served(tmp_path / "gone.gguf", "gone:1")))


def test_truncated_gguf_fails_to_deploy_with_a_clear_message_and_nothing_running(
    backend: LlamaCppBackend, run: Any, tiny_gguf: Path, tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny_gguf.read_bytes()[:10_000_000])
    before = children()
    with pytest.raises(base.BackendError, match="truncated.gguf is not a valid GGUF: tensor .* past the end"):
        run(backend.deploy(served(truncated, "broken:1")))
    assert children() == before
    failed = run(deployment(backend, "broken:1"))
    assert failed.state == "failed" and str(tmp_path) not in failed.detail
    with pytest.raises(base.NotDeployed, match="broken:1 failed to deploy"):
        run(backend.chat("broken:1", {"messages": HELLO}))


def test_gguf_llama_cpp_refuses_fails_with_its_reason_and_nothing_running(
    backend: LlamaCppBackend, run: Any, tiny_gguf: Path, tmp_path: Path
) -> None:
    data = bytearray(tiny_gguf.read_bytes())
    key = data.index(b"general.architecture")
    value = data.index(b"llama", key + len(b"general.architecture"))
    data[value : value + 5] = b"llamb"  # a header that parses, an architecture llama.cpp does not know
    patched = tmp_path / "unknown-arch.gguf"
    patched.write_bytes(bytes(data))
    before = children()
    with pytest.raises(
        base.BackendError, match="llama.cpp server exited: .*unknown model architecture"
    ) as info:
        run(backend.deploy(served(patched, "patched:1")))
    assert str(tmp_path) not in str(info.value)
    assert children() == before


def test_deploying_beyond_the_limit_unloads_the_least_recently_used(
    run: Any, tiny_gguf: Path, tmp_path: Path
) -> None:
    b = make_backend(tmp_path, max_loaded_models=1)
    first = pid_of(run(b.deploy(served(tiny_gguf, "a:1"))))
    second = pid_of(run(b.deploy(served(tiny_gguf, "b:1"))))
    assert gone(first) and not gone(second)
    assert [d.key for d in run(b.list())] == ["b:1"]
    with pytest.raises(base.NotDeployed):
        run(b.chat("a:1", {"messages": HELLO, "max_tokens": 1}))
    run(b.close())
    assert gone(second) and run(b.health()) is False


def test_request_running_past_the_timeout_raises_timeout_error_and_frees_its_slot(
    run: Any, tiny_gguf: Path, tmp_path: Path
) -> None:
    b = make_backend(tmp_path, request_timeout_s=1)
    pid = pid_of(run(b.deploy(served(tiny_gguf))))
    with pytest.raises(TimeoutError):  # 1800 tokens take the tiny model many seconds
        run(b.chat(KEY, {"messages": HELLO, "max_tokens": 1800, "temperature": 0}))
    # the slot comes back: llama.cpp stops a request whose client left when it notices (it polls
    # its connections), or at its end; the bound is loose, for a loaded machine (no timing assert)
    wait_for_idle(b, run, within_s=30.0)
    reply = run(b.chat(KEY, {"messages": HELLO, "max_tokens": 2}))  # served within the 1 s timeout
    assert reply["usage"]["completion_tokens"] == 2
    assert pid_of(run(deployment(b, KEY))) == pid  # the same server: nothing was killed
    run(b.close())
    assert gone(pid)
