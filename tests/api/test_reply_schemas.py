"""Every route declares its reply in the OpenAPI document, and declaring it changes no reply."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from api.app import create_app
from core.registry import Registry
from core.serving.base import Backend, Deployment, Json, ServedModel
from core.serving.hub import EMBEDDER
from tests.helpers.api_server import api_settings

ERROR = {"$ref": "#/components/schemas/ErrorReply"}
CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "tiny:1.0.0",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"completion_tokens": 1, "prompt_tokens": 4, "total_tokens": 5, "prompt_tokens_details": {}},
    "system_fingerprint": "b1234",
    "timings": {"prompt_ms": 1.5, "predicted_per_second": 1e-05},
}
VECTOR = [1e-05, -0.25, 3.0]  # Python's json writes 1e-05; pydantic's JSON writer would write 0.00001


class _Canned:
    """A backend answering fixed replies, in the shapes llama.cpp sends.

    Fixed bytes are the point here (extra fields, float spelling): the real llama.cpp path over
    the same routes is tests/api/test_openai_sdk.py.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    async def deploy(self, model: ServedModel) -> Deployment:
        return Deployment(model.key, self.name, "loaded")

    async def undeploy(self, key: str) -> None:
        return None

    async def list(self) -> builtins.list[Deployment]:
        return []

    async def health(self) -> bool:
        return True

    async def chat(self, key: str, body: Json) -> Json:
        return CHAT | {"model": key}

    async def chat_stream(self, key: str, body: Json) -> AsyncIterator[Json]:
        yield CHAT

    async def completion(self, key: str, body: Json) -> Json:
        choice = {"index": 0, "text": "hi", "finish_reason": "stop"}
        return CHAT | {"object": "text_completion", "model": key, "choices": [choice]}

    async def completion_stream(self, key: str, body: Json) -> AsyncIterator[Json]:
        yield CHAT

    async def embeddings(self, key: str, inputs: builtins.list[str]) -> Json:
        data = [{"object": "embedding", "index": i, "embedding": VECTOR} for i in range(len(inputs))]
        return {
            "object": "list",
            "model": key,
            "data": data,
            "usage": {"prompt_tokens": 2, "total_tokens": 2},
        }

    async def close(self) -> None:
        return None


@pytest.fixture(scope="module")
def canned(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path) -> Iterator[TestClient]:
    """The app in-process over canned backends, with the tiny GGUF registered as tiny 1.0.0."""
    root = tmp_path_factory.mktemp("canned")
    model = root / "tiny.gguf"
    model.write_bytes(tiny_gguf.read_bytes())
    settings = api_settings(root)
    registry = Registry.from_settings(settings)
    registry.register(model, name="tiny", config={"learning_rate": 2e-05})
    registry.close()
    backends: dict[str, Backend] = {name: _Canned(name) for name in ("llamacpp", "ollama", EMBEDDER)}
    with TestClient(create_app(settings, backends=backends)) as client:
        yield client


def test_every_route_declares_a_reply_schema_and_the_error_shape(tmp_path: Path) -> None:
    app = create_app(api_settings(tmp_path))
    hidden = [r.path for r in app.routes if isinstance(r, APIRoute) and not r.include_in_schema]
    assert not hidden, f"routes left out of the OpenAPI document: {hidden}"
    spec = app.openapi()
    problems = []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            where = f"{method.upper()} {path}"
            replies = {code: r for code, r in op["responses"].items() if code.startswith("2")}
            if not replies:
                problems.append(f"{where}: no success reply")
            for code, reply in replies.items():
                content: dict[str, Any] = reply.get("content", {})
                if code == "204":
                    problems += [f"{where}: a 204 declares a body"] if content else []
                    continue
                if not content:
                    problems.append(f"{where}: {code} declares no body")
                for media, body in content.items():
                    schema = body.get("schema") or {}
                    if media == "application/json" and "$ref" not in schema:
                        problems.append(f"{where}: {code} has no response model (schema {schema})")
                    elif not schema:
                        problems.append(f"{where}: {code} {media} has no schema")
            for code in ("4XX", "5XX"):
                if (
                    op["responses"].get(code, {}).get("content", {}).get("application/json", {}).get("schema")
                    != ERROR
                ):
                    problems.append(f"{where}: {code} is not declared as the OpenAI error shape")
            if "422" in op["responses"]:
                problems.append(f"{where}: declares FastAPI's 422 (validation errors are 400 ErrorReply)")
    assert not problems, "\n".join(problems)


def test_the_chat_reply_keeps_every_field_the_backend_sent(canned: TestClient) -> None:
    r = canned.post(
        "/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "x"}]}
    )
    assert r.status_code == 200
    assert r.json() == CHAT | {"model": "tiny:1.0.0"}  # usage details, timings, system_fingerprint


def test_embeddings_keep_their_shape_and_float_spelling(canned: TestClient) -> None:
    r = canned.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": ["a"]})
    assert r.status_code == 200
    assert r.json()["data"] == [{"object": "embedding", "index": 0, "embedding": VECTOR}]
    infer = canned.post("/infer/all-minilm-l6-v2", json={"text": "a"})
    assert infer.status_code == 200
    assert '"result":{"embeddings":[1e-05,-0.25,3.0]}' in infer.text


def test_registry_replies_keep_their_fields_and_order(canned: TestClient) -> None:
    body = canned.get("/models/tiny").json()
    assert list(body) == [
        "name", "version", "id", "task", "device", "state", "backend", "base_model", "aliases", "created_at",
        "source", "dataset_hash", "config", "metrics", "artifacts", "updated_at", "stats",
    ]  # fmt: skip
    assert body["config"] == {"learning_rate": 2e-05}
    assert '"config":{"learning_rate":2e-05}' in canned.get("/models/tiny").text
    page = canned.get("/models").json()
    assert list(page) == ["models", "total", "page", "pages", "active_model"]
    assert page["active_model"] is None  # a null is sent, not left out
    rollback = canned.post("/models/tiny/rollback", json={"alias": "fresh", "version": "1.0.0"}).json()
    assert (rollback["alias"], rollback["from"], rollback["to"]) == ("tiny:fresh", None, "1.0.0")


def test_seed_replies_keep_their_fields(canned: TestClient) -> None:
    query = canned.post("/v1/query", json={"prompt": "x", "model": "tiny"}).json()
    assert query == {"response": "hi", "model": "tiny:1.0.0", "tokens_used": 5}
    infer = canned.post("/infer/tiny", json={"text": "x"}).json()
    assert infer["result"] == {"text": "hi", "usage": CHAT["usage"]}
    assert set(infer) == {"result", "metadata", "timing"}
    ids = [m["id"] for m in canned.get("/v1/models").json()["data"]]
    assert "tiny:1.0.0" in ids and "tiny:latest" in ids
