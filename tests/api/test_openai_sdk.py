"""The OpenAI Python SDK against forgeflow over real HTTP, with llama.cpp serving the tiny GGUF."""

from __future__ import annotations

import math

import httpx
import openai
import pytest

USER = [{"role": "user", "content": "What does the add function return?"}]


@pytest.mark.integration
def test_chat_completion_returns_the_served_version_and_real_usage(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="tiny", messages=USER, max_tokens=8, temperature=0)
    assert reply.model == "tiny:1.1.0"  # bare name → newest version
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 5
    assert 1 <= reply.usage.completion_tokens <= 8
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


@pytest.mark.integration
def test_a_version_and_an_alias_resolve_to_their_versions(client: openai.OpenAI) -> None:
    old = client.chat.completions.create(model="tiny:1.0.0", messages=USER, max_tokens=2)
    champion = client.chat.completions.create(model="tiny:champion", messages=USER, max_tokens=2)
    assert old.model == "tiny:1.0.0"
    assert champion.model == "tiny:1.1.0"


@pytest.mark.integration
def test_stream_with_usage_ends_with_a_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=USER,
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text_chunks = [c for c in chunks if c.choices]
    assert text_chunks and all(c.model == "tiny:1.1.0" for c in text_chunks)
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == 6  # a random tiny model never stops early by itself
    assert last.usage.prompt_tokens > 5


@pytest.mark.integration
def test_stream_without_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(model="tiny", messages=USER, max_tokens=4, temperature=0, stream=True)
    )
    assert chunks and all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


@pytest.mark.integration
def test_stream_and_non_stream_give_the_same_greedy_text(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="tiny", messages=USER, max_tokens=8, temperature=0, seed=1)
    parts = client.chat.completions.create(
        model="tiny", messages=USER, max_tokens=8, temperature=0, seed=1, stream=True
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in parts if c.choices)
        == whole.choices[0].message.content
    )


@pytest.mark.integration
def test_raw_stream_is_server_sent_events_ending_with_done(api_url: str) -> None:
    body = {"model": "tiny", "messages": USER, "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{api_url}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"


@pytest.mark.integration
def test_text_completion(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model="tiny:1.0.0", prompt="def add(a, b):", max_tokens=5, temperature=0
    )
    assert reply.object == "text_completion"
    assert reply.model == "tiny:1.0.0"
    assert reply.usage is not None and reply.usage.completion_tokens == 5


def test_embeddings_from_the_built_in_minilm(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="all-minilm-l6-v2", input=["def add(a, b)", "git rebase"])
    assert [d.index for d in result.data] == [0, 1]
    vectors = [d.embedding for d in result.data]
    assert all(len(v) == 384 for v in vectors)
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-4) for v in vectors)
    assert result.usage.prompt_tokens > 4


def test_similar_texts_have_closer_embeddings(client: openai.OpenAI) -> None:
    texts = ["How do I reverse a string in Python?", "Reverse a Python string", "The weather is sunny"]
    a, b, c = (d.embedding for d in client.embeddings.create(model="all-minilm-l6-v2", input=texts).data)
    dot = lambda x, y: sum(p * q for p, q in zip(x, y, strict=True))  # noqa: E731
    assert dot(a, b) > dot(a, c) + 0.2


def test_models_lists_versions_and_aliases(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"tiny:1.0.0", "tiny:1.1.0", "tiny:champion", "tiny:latest"} <= ids


def test_unknown_model_raises_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nope", messages=USER)
    assert "nope" in info.value.message
    assert info.value.body["code"] == "MODEL_NOT_FOUND"  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
        ({"messages": USER, "temperature": 3.0}, "temperature"),
        ({"messages": USER, "max_tokens": 0}, "max_tokens"),
        ({"messages": USER, "n": 2}, "n"),
    ],
)
def test_bad_parameters_raise_bad_request_naming_the_parameter(
    client: openai.OpenAI, kwargs: dict, param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny", **kwargs)
    assert info.value.body["param"] == param  # type: ignore[index]


@pytest.mark.integration
def test_a_prompt_longer_than_the_context_is_a_bad_request(client: openai.OpenAI) -> None:
    long = [{"role": "user", "content": "word " * 2000}]  # n_ctx is 512 in these tests
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=long, max_tokens=4)


def test_a_ten_megabyte_prompt_is_refused_before_it_is_read(client: openai.OpenAI) -> None:
    huge = [{"role": "user", "content": "x" * 10_000_000}]
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="tiny", messages=huge)
    assert info.value.status_code == 413


@pytest.mark.integration
def test_embeddings_refuse_a_text_generation_model(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="tiny", input="hello")
    assert "text-generation" in info.value.message
