"""The Ollama backend over real HTTP against the strict test server, with real GGUFs and tokenizer."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.base_models import embedded_gguf, load_tokenizer
from core.chat_template import ollama_template, render, render_template
from core.errors import InputError
from core.gguf import chat_template
from core.hashing import file_sha256
from core.serving.base import Backend, BackendUnavailable, NotDeployed, ServedModel, UpstreamRejected
from core.serving.ollama.backend import OllamaBackend
from tests.helpers.ollama_server import OllamaServer, running_ollama

pytestmark = pytest.mark.anyio

KEY = "tiny:1.0.0"
CONVERSATIONS = {
    "single user turn": [{"role": "user", "content": "Write a haiku about git."}],
    "with a system prompt": [
        {"role": "system", "content": "You review Python code."},
        {"role": "user", "content": "Is `x == None` fine?"},
    ],
    "multi-turn": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is a rebase?"},
        {"role": "assistant", "content": "Replaying commits\non a new base."},
        {"role": "user", "content": "And a merge?  "},
    ],
    "multi-turn without system": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello! {{ not a template }}"},
        {"role": "user", "content": "def f():\n    return 1\n"},
    ],
}
LONG = " ".join(f"word{i}" for i in range(400))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def tokenizer(cache_dir: Path) -> Any:
    return load_tokenizer("smollm2-135m", cache_dir)


@pytest.fixture(scope="module")
def tiny_model(tiny_gguf: Path) -> ServedModel:
    return ServedModel(KEY, "text-generation", tiny_gguf, file_sha256(tiny_gguf), n_ctx=1024)


@pytest.fixture
def server() -> Iterator[OllamaServer]:
    with running_ollama() as running:
        yield running


@pytest.fixture
async def backend(server: OllamaServer) -> AsyncIterator[OllamaBackend]:
    backend = OllamaBackend(server.url, request_timeout_s=10)
    yield backend
    await backend.close()


@pytest.fixture
async def deployed(backend: OllamaBackend, tiny_model: ServedModel) -> OllamaBackend:
    await backend.deploy(tiny_model)
    return backend


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- one chat template: Jinja in the GGUF, Go in Ollama, the same text -----------------------------


def test_backend_keeps_the_backend_contract(server: OllamaServer) -> None:
    assert isinstance(OllamaBackend(server.url), Backend)


@pytest.mark.parametrize("which", ["smollm2-135m", "tiny"])
async def test_prompt_ollama_renders_is_the_tokenizers_render(
    which: str, server: OllamaServer, backend: OllamaBackend, tokenizer: Any, tiny_gguf: Path
) -> None:
    path = tiny_gguf if which == "tiny" else embedded_gguf(which)
    await backend.deploy(ServedModel("parity:1", "text-generation", path, file_sha256(path)))
    for messages in CONVERSATIONS.values():
        await backend.chat("parity:1", {"messages": messages})
        assert server.state.prompts[-1] == render(tokenizer, messages, generation_prompt=True)


@pytest.mark.parametrize("generation_prompt", [True, False])
def test_render_template_from_the_gguf_string_is_the_tokenizers_render(
    generation_prompt: bool, tokenizer: Any, tiny_gguf: Path
) -> None:
    for path in (embedded_gguf("smollm2-135m"), tiny_gguf):
        chat = chat_template(path)
        assert (chat.bos_token, chat.eos_token) == (tokenizer.bos_token, tokenizer.eos_token)
        for messages in CONVERSATIONS.values():
            rendered = render_template(
                chat.template, messages, bos_token="", eos_token="", generation_prompt=generation_prompt
            )
            assert rendered == render(tokenizer, messages, generation_prompt=generation_prompt)


def test_ollama_template_of_smollm2_stops_at_the_end_of_turn_and_at_a_user_turn() -> None:
    chat = chat_template(embedded_gguf("smollm2-135m"))
    translated = ollama_template(chat.template, bos_token=chat.bos_token, eos_token=chat.eos_token)
    assert translated.stop == ["<|im_end|>", "<|im_start|>user"]
    assert "{{ range $i, $_ := .Messages }}" in translated.template
    assert "You are a helpful AI assistant named SmolLM" in translated.template  # the default system


def test_ollama_template_with_bos_and_braces_renders_like_jinja() -> None:
    template = (
        "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} {{ '{{' }}end}}\n"
        "{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    translated = ollama_template(template, bos_token="<s>", eos_token="</s>")
    from tests.helpers.ollama_server import _collate, parse_go_template, render_go_template

    nodes = parse_go_template(translated.template)
    for messages in CONVERSATIONS.values():
        system, collated = _collate(messages, "")
        go = render_go_template(nodes, {"System": system, "Messages": collated})
        assert go == render_template(
            template, messages, bos_token="<s>", eos_token="</s>", generation_prompt=True
        )


@pytest.mark.parametrize(
    "template",
    [
        "{% for m in messages %}{{ m['content'] | trim }}\n{% endfor %}",  # rewrites content
        "{% for m in messages %}{{ m['content'] }}{% if loop.last %}!{% endif %}{% endfor %}",  # last differs
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system') }}{% endif %}"
        "{{ m['content'] }}{% endfor %}",
        "{% for m in messages %}{{ m['content'] }}",  # not even Jinja
    ],
    ids=["trims content", "position dependent", "refuses system", "invalid jinja"],
)
def test_ollama_template_refuses_a_template_it_cannot_express(template: str) -> None:
    with pytest.raises(InputError, match="chat template"):
        ollama_template(template, bos_token="<s>", eos_token="</s>")


# --- deploy, list, undeploy ----------------------------------------------------------------------


async def test_deploy_uploads_the_blob_once_and_creates_the_model_with_its_stops(
    server: OllamaServer, backend: OllamaBackend, tiny_model: ServedModel
) -> None:
    deployment = await backend.deploy(tiny_model)
    await backend.deploy(tiny_model)

    assert (deployment.key, deployment.backend, deployment.state) == (KEY, "ollama", "loaded")
    assert deployment.detail == f"ollama at {server.url}"  # no local path
    uploads = [r for r in server.state.requests if r[0] == "POST" and r[1].startswith("/api/blobs/")]
    assert uploads == [("POST", f"/api/blobs/sha256:{tiny_model.sha256}")]
    model = server.state.models[KEY]
    assert model.parameters == {"num_ctx": 1024, "stop": ["<|im_end|>", "<|im_start|>user"]}
    assert [d.key for d in await backend.list()] == [KEY]


@pytest.mark.parametrize(
    "key", ["Tiny:1.0", "tiny", "tiny model:1", "tiny:", ":1", "a..b:1", "ns/tiny:1", "t:1/x"]
)
async def test_deploy_refuses_an_invalid_model_name_before_any_request(
    key: str, server: OllamaServer, backend: OllamaBackend, tiny_model: ServedModel
) -> None:
    with pytest.raises(InputError, match="not a valid Ollama model name"):
        await backend.deploy(ServedModel(key, "text-generation", tiny_model.path, tiny_model.sha256))
    assert server.state.requests == []


@pytest.mark.parametrize("digest", ["", "sha256:abc", "md5:" + "a" * 64, "g" * 64, "sha256:" + "a" * 65])
async def test_deploy_refuses_an_invalid_digest_before_any_request(
    digest: str, server: OllamaServer, backend: OllamaBackend, tiny_model: ServedModel
) -> None:
    with pytest.raises(InputError, match="not a SHA-256 digest"):
        await backend.deploy(ServedModel(KEY, "text-generation", tiny_model.path, digest))
    assert server.state.requests == []


async def test_deploy_refuses_a_gguf_changed_since_it_was_registered(
    server: OllamaServer, backend: OllamaBackend, tiny_model: ServedModel
) -> None:
    stale = ServedModel(KEY, "text-generation", tiny_model.path, "sha256:" + "0" * 64)
    with pytest.raises(InputError, match="changed since it was registered") as raised:
        await backend.deploy(stale)
    assert str(tiny_model.path.parent) not in str(raised.value)
    assert server.state.models == {}


async def test_undeploy_removes_the_model_and_a_second_undeploy_is_not_deployed(
    deployed: OllamaBackend,
) -> None:
    await deployed.undeploy(KEY)
    assert await deployed.list() == []
    with pytest.raises(NotDeployed):
        await deployed.undeploy(KEY)


# --- inference ------------------------------------------------------------------------------------


async def test_chat_answers_a_chat_completion_with_usage(
    server: OllamaServer, deployed: OllamaBackend
) -> None:
    reply = await deployed.chat(KEY, {"messages": CONVERSATIONS["multi-turn"], "temperature": 0, "seed": 1})

    assert reply["object"] == "chat.completion" and reply["model"] == KEY
    assert reply["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "And a merge?  "}, "finish_reason": "stop"}
    ]
    prompt_tokens = len(server.state.prompts[-1].split())
    assert reply["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 3,
        "total_tokens": prompt_tokens + 3,
    }


async def test_chat_cut_by_max_tokens_finishes_with_length(deployed: OllamaBackend) -> None:
    reply = await deployed.chat(KEY, {"messages": [{"role": "user", "content": LONG}], "max_tokens": 5})
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["choices"][0]["message"]["content"] == "word0 word1 word2 word3 word4 "
    assert reply["usage"]["completion_tokens"] == 5


async def test_chat_stops_before_a_stop_sequence(deployed: OllamaBackend) -> None:
    body = {"messages": [{"role": "user", "content": "one two three four"}], "stop": "three"}
    reply = await deployed.chat(KEY, body)
    assert reply["choices"][0]["message"]["content"] == "one two "
    assert reply["choices"][0]["finish_reason"] == "stop"


async def test_chat_stream_without_usage_yields_chunks_then_the_finish(deployed: OllamaBackend) -> None:
    chunks = [
        c async for c in deployed.chat_stream(KEY, {"messages": [{"role": "user", "content": "a b c"}]})
    ]

    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "a "}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "a b c"
    assert chunks[-1]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert all("usage" not in c for c in chunks)


async def test_chat_stream_with_include_usage_ends_with_a_usage_chunk(deployed: OllamaBackend) -> None:
    body = {"messages": [{"role": "user", "content": LONG}], "max_tokens": 3}
    body["stream_options"] = {"include_usage": True}
    chunks = [c async for c in deployed.chat_stream(KEY, body)]

    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert all(c["usage"] is None for c in chunks[:-1])


async def test_completion_sends_the_prompt_raw(server: OllamaServer, deployed: OllamaBackend) -> None:
    reply = await deployed.completion(KEY, {"prompt": "def add(a, b):", "max_tokens": 16})

    assert server.state.prompts[-1] == "def add(a, b):"  # no TEMPLATE applied
    assert reply["object"] == "text_completion"
    assert reply["choices"] == [
        {"index": 0, "text": "def add(a, b):", "logprobs": None, "finish_reason": "stop"}
    ]
    assert reply["usage"]["completion_tokens"] == 3


async def test_completion_stream_yields_text_chunks_and_usage(deployed: OllamaBackend) -> None:
    body = {"prompt": ["x = 1\ny = 2"], "stream_options": {"include_usage": True}}
    chunks = [c async for c in deployed.completion_stream(KEY, body)]

    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == "x = 1\ny = 2"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6


async def test_embeddings_answer_an_openai_list(deployed: OllamaBackend) -> None:
    reply = await deployed.embeddings(KEY, ["first text", "second"])

    assert reply["object"] == "list" and reply["model"] == KEY
    assert [(d["object"], d["index"], len(d["embedding"])) for d in reply["data"]] == [
        ("embedding", 0, 8),
        ("embedding", 1, 8),
    ]
    assert reply["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


async def test_closing_a_stream_early_stops_the_generation_upstream(
    server: OllamaServer, deployed: OllamaBackend
) -> None:
    server.state.token_delay_s = 0.02
    stream = deployed.chat_stream(KEY, {"messages": [{"role": "user", "content": LONG}]})
    assert [await anext(stream) for _ in range(2)]
    await stream.aclose()  # type: ignore[attr-defined]

    deadline = time.monotonic() + 5
    while not server.state.aborted and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.state.aborted == [KEY]


# --- errors ---------------------------------------------------------------------------------------


async def test_an_unknown_model_is_not_deployed(backend: OllamaBackend) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "prompt": "hi"}
    with pytest.raises(NotDeployed, match="'ghost:1' is not deployed"):
        await backend.chat("ghost:1", body)
    with pytest.raises(NotDeployed):
        await backend.completion("ghost:1", body)
    with pytest.raises(NotDeployed):
        await backend.embeddings("ghost:1", ["hi"])
    with pytest.raises(NotDeployed):
        [c async for c in backend.chat_stream("ghost:1", body)]


async def test_a_request_ollama_rejects_is_upstream_rejected_with_its_reason(deployed: OllamaBackend) -> None:
    with pytest.raises(UpstreamRejected, match="temperature"):
        await deployed.chat(KEY, {"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"})
    with pytest.raises(UpstreamRejected, match="role"):
        [c async for c in deployed.chat_stream(KEY, {"messages": [{"role": "robot", "content": "hi"}]})]


async def test_an_ollama_error_reaches_the_caller_without_server_paths(
    tmp_path: Path, backend: OllamaBackend
) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all")
    model = ServedModel("junk:1", "text-embedding", junk, file_sha256(junk))  # no template: no GGUF read here
    with pytest.raises(UpstreamRejected, match="invalid file magic") as raised:
        await backend.deploy(model)
    assert "/" not in str(raised.value)
    assert str(raised.value).startswith("Ollama rejected the request: open sha256-")


async def test_a_server_that_is_down_is_unavailable_and_unhealthy(tiny_model: ServedModel) -> None:
    backend = OllamaBackend(f"http://127.0.0.1:{free_port()}", request_timeout_s=2)
    try:
        assert await backend.health() is False
        with pytest.raises(BackendUnavailable, match="unreachable") as raised:
            await backend.chat(KEY, {"messages": [{"role": "user", "content": "hi"}]})
        assert raised.value.retry_after > 0
        with pytest.raises(BackendUnavailable):
            [c async for c in backend.chat_stream(KEY, {"messages": [{"role": "user", "content": "hi"}]})]
        with pytest.raises(BackendUnavailable):
            await backend.deploy(tiny_model)
        with pytest.raises(BackendUnavailable):
            await backend.list()
    finally:
        await backend.close()


async def test_a_running_server_is_healthy(backend: OllamaBackend) -> None:
    assert await backend.health() is True


# --- the strict server refuses what Ollama refuses -------------------------------------------------

GGUF_BYTES = b"GGUF" + bytes(60)
GGUF_DIGEST = "sha256:" + hashlib.sha256(GGUF_BYTES).hexdigest()
TEMPLATE = "{{ range .Messages }}<{{ .Role }}>{{ .Content }}\n{{ end }}<assistant>"


@pytest.fixture
def http(server: OllamaServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def create(http: httpx.Client, **fields: Any) -> httpx.Response:
    http.post(f"/api/blobs/{GGUF_DIGEST}", content=GGUF_BYTES)
    body = {"model": "m:1", "files": {"m.gguf": GGUF_DIGEST}, "template": TEMPLATE, "stream": False}
    return http.post("/api/create", json=body | fields)


def assert_error(response: httpx.Response, status: int, text: str) -> None:
    assert response.status_code == status, response.text
    assert text in response.json()["error"]


def test_server_stores_a_blob_once_and_reports_it(http: httpx.Client) -> None:
    assert http.head(f"/api/blobs/{GGUF_DIGEST}").status_code == 404
    assert http.post(f"/api/blobs/{GGUF_DIGEST}", content=GGUF_BYTES).status_code == 201
    assert http.post(f"/api/blobs/{GGUF_DIGEST}", content=GGUF_BYTES).status_code == 200
    assert http.head(f"/api/blobs/{GGUF_DIGEST}").status_code == 200


def test_server_refuses_a_blob_whose_content_differs_from_its_digest(http: httpx.Client) -> None:
    assert_error(http.post(f"/api/blobs/{GGUF_DIGEST}", content=b"GGUF tampered"), 400, "digest mismatch")
    assert http.head(f"/api/blobs/{GGUF_DIGEST}").status_code == 404


@pytest.mark.parametrize("digest", ["sha256:abc", "md5:" + "a" * 64, "sha256:" + "A" * 64, "x"])
def test_server_refuses_a_malformed_digest(digest: str, http: httpx.Client) -> None:
    assert_error(http.post(f"/api/blobs/{digest}", content=GGUF_BYTES), 400, "invalid digest format")
    assert http.head(f"/api/blobs/{digest}").status_code == 400


def test_server_creates_a_model_and_lists_it(http: httpx.Client) -> None:
    assert create(http).json() == {"status": "success"}
    listed = http.get("/api/tags").json()["models"]
    assert [(m["name"], m["digest"]) for m in listed] == [("m:1", GGUF_DIGEST[7:])]


def test_server_streams_create_progress_as_ndjson(http: httpx.Client) -> None:
    lines = create(http, stream=True).text.splitlines()
    assert lines[-1] == '{"status": "success"}'


def test_server_refuses_create_with_a_blob_it_does_not_have(http: httpx.Client) -> None:
    assert_error(create(http, files={"m.gguf": "sha256:" + "1" * 64}), 400, "not found")


def test_server_refuses_create_with_a_bad_digest_in_files(http: httpx.Client) -> None:
    assert_error(create(http, files={"m.gguf": "sha256:xyz"}), 400, "invalid digest format")


def test_server_refuses_create_without_files(http: httpx.Client) -> None:
    assert_error(create(http, files=None), 400, "neither 'from' or 'files' was specified")


def test_server_refuses_create_of_a_blob_that_is_not_a_gguf(http: httpx.Client) -> None:
    content = b"not a gguf"
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    http.post(f"/api/blobs/{digest}", content=content)
    assert_error(create(http, files={"x.gguf": digest}), 400, "invalid file magic")


@pytest.mark.parametrize("name", ["bad name:1", "a..b", "x:" + "t" * 81, "", "a/b/c/d:1"])
def test_server_refuses_create_with_an_invalid_model_name(name: str, http: httpx.Client) -> None:
    assert_error(create(http, model=name), 400, "model is required" if not name else "invalid model name")


def test_server_refuses_create_with_a_template_it_cannot_parse(http: httpx.Client) -> None:
    assert_error(create(http, template="{{ range .Messages }}"), 400, "template")


def test_server_refuses_create_with_a_mistyped_parameter(http: httpx.Client) -> None:
    assert_error(create(http, parameters={"num_ctx": "big"}), 400, "num_ctx")
    assert_error(create(http, parameters={"stop": "<|im_end|>"}), 400, "stop")


def test_server_refuses_a_body_that_is_not_json(http: httpx.Client) -> None:
    assert_error(http.post("/api/chat", content=b"{not json"), 400, "invalid JSON")


def test_server_refuses_a_chat_without_a_model(http: httpx.Client) -> None:
    assert_error(http.post("/api/chat", json={"messages": []}), 400, "model is required")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/chat", {"messages": []}),
        ("POST", "/api/generate", {"prompt": "hi"}),
        ("POST", "/api/embed", {"input": "hi"}),
        ("DELETE", "/api/delete", {}),
        ("POST", "/v1/chat/completions", {"messages": []}),
    ],
)
def test_server_answers_404_for_an_unknown_model(
    method: str, path: str, body: dict[str, Any], http: httpx.Client
) -> None:
    response = http.request(method, path, json=body | {"model": "ghost:1"})
    assert response.status_code == 404
    assert response.json() == {"error": "model 'ghost:1' not found"}


@pytest.mark.parametrize(
    ("message", "error"),
    [({"role": "robot", "content": "x"}, "invalid role"), ({"role": "user", "content": ["x"]}, "content"),
     ({"content": "x"}, "role")],
)  # fmt: skip
def test_server_refuses_a_malformed_message(message: dict[str, Any], error: str, http: httpx.Client) -> None:
    create(http)
    assert_error(http.post("/api/chat", json={"model": "m:1", "messages": [message]}), 400, error)


def test_server_refuses_mistyped_options(http: httpx.Client) -> None:
    create(http)
    body = {"model": "m:1", "messages": [], "options": {"num_predict": 1.5}}
    assert_error(http.post("/api/chat", json=body), 400, "num_predict")


def test_server_refuses_an_empty_embedding_input(http: httpx.Client) -> None:
    create(http)
    assert_error(http.post("/api/embed", json={"model": "m:1", "input": ["ok", ""]}), 400, "empty")


def test_server_streams_api_chat_as_ndjson_through_the_template(
    server: OllamaServer, http: httpx.Client
) -> None:
    create(http)
    body = {"model": "m:1", "messages": [{"role": "user", "content": "hi there"}]}
    response = http.post("/api/chat", json=body)

    assert response.headers["content-type"].startswith("application/x-ndjson")
    parts = [httpx.Response(200, content=line).json() for line in response.text.splitlines()]
    assert [p["message"]["content"] for p in parts] == ["hi ", "there", ""]
    assert parts[-1]["done"] is True and parts[-1]["done_reason"] == "stop"
    assert server.state.prompts == ["<user>hi there\n<assistant>"]


def test_server_answers_v1_chat_completions_as_sse(http: httpx.Client) -> None:
    create(http)
    body = {"model": "m:1", "messages": [{"role": "user", "content": "hi there"}], "stream": True}
    events = http.post("/v1/chat/completions", json=body).text.split("\n\n")

    assert events[-2] == "data: [DONE]"
    first = httpx.Response(200, content=events[0].removeprefix("data: ")).json()
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"content": "hi ", "role": "assistant"}
