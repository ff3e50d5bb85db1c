"""The Ollama backend: models are created on an Ollama server and served through its native API.

Requests and responses are translated between OpenAI's shapes (what the API speaks) and Ollama's
/api/chat, /api/generate and /api/embed. Deploying uploads the GGUF as a blob (once per digest) and
creates the model with a TEMPLATE generated from the GGUF's own chat template.
"""

from __future__ import annotations

import asyncio
import builtins
import re
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing, contextmanager
from typing import Any, cast

import httpx
import ollama

from core.errors import InputError
from core.paths import scrub_paths
from core.serving import base  # the backend contract: base.Deployment, base.BackendError, ...
from core.serving.ollama.modelfile import modelfile_for

# Ollama's model names, restricted to what forgeflow's keys look like: "name:tag", lowercase
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,79}:[a-z0-9_][a-z0-9_.-]{0,79}")
_DIGEST = re.compile(r"(?:sha256:)?([0-9a-fA-F]{64})")
# OpenAI sampling fields -> Ollama options
_OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "max_tokens": "num_predict",
    "max_completion_tokens": "num_predict",
}


class OllamaBackend:
    """Serves models on one Ollama server through the official `ollama` client."""

    name = "ollama"

    def __init__(self, host: str, request_timeout_s: float = 120) -> None:
        self.host = host
        self._client = ollama.AsyncClient(host=host, timeout=request_timeout_s)

    async def deploy(self, model: base.ServedModel) -> base.Deployment:
        """Upload the GGUF (unless Ollama has its digest) and create the model with its TEMPLATE.

        Raises:
            InputError: the key, the digest or the file is not servable (checked before any request).
        """
        check_model_name(model.key)
        digest = normalize_digest(model.sha256)
        if not model.path.is_file() or model.path.suffix != ".gguf":
            raise InputError(
                f"'{model.key}': Ollama serves GGUF files only, and {model.path.name} is not one"
            )
        modelfile = await asyncio.to_thread(modelfile_for, model)
        with self._translate(model.key):
            if not await self._has_blob(digest):
                uploaded = await self._client.create_blob(model.path)
                if uploaded != digest:
                    raise InputError(
                        f"'{model.key}': {model.path.name} changed since it was registered "
                        f"(sha256 {uploaded[7:19]}..., registered {digest[7:19]}...): register it again"
                    )
            await self._client.create(
                model=model.key,
                files={model.path.name: digest},
                template=modelfile.template,
                parameters=modelfile.parameters,
                stream=False,
            )
        return base.Deployment(model.key, self.name, "loaded", detail=f"ollama at {self.host}")

    async def undeploy(self, key: str) -> None:
        with self._translate(key):
            await self._client.delete(key)

    async def list(self) -> list[base.Deployment]:
        with self._translate(""):
            listed = await self._client.list()
        return [base.Deployment(m.model, self.name, "loaded") for m in listed.models if m.model]

    async def health(self) -> bool:
        """True when Ollama answers /api/version; never raises."""
        try:
            await self._client._request_raw("GET", "/api/version")
        except (ConnectionError, httpx.HTTPError, ollama.ResponseError):
            return False
        return True

    async def chat(self, key: str, body: base.Json) -> base.Json:
        with self._translate(key):
            response = await self._client.chat(
                model=key, messages=_messages(body), options=_options(body), stream=False
            )
        text = response.message.content or ""
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "finish_reason": _finish(response.done_reason)}
        return _envelope("chatcmpl", "chat.completion", key) | {
            "choices": [choice],
            "usage": _usage(response),
        }

    async def chat_stream(self, key: str, body: base.Json) -> AsyncIterator[base.Json]:
        envelope = _envelope("chatcmpl", "chat.completion.chunk", key)
        delta: base.Json = {"role": "assistant"}  # the first chunk names the role, as OpenAI's does
        async with aclosing(self._stream(key, body, chat=True)) as parts:
            async for part in parts:
                if part.message.content or delta:
                    delta["content"] = part.message.content or ""
                    yield _chunk(envelope, body, {"index": 0, "delta": delta, "finish_reason": None})
                    delta = {}
                if part.done:
                    choice = {"index": 0, "delta": {}, "finish_reason": _finish(part.done_reason)}
                    yield _chunk(envelope, body, choice)
                    if _include_usage(body):
                        yield envelope | {"choices": [], "usage": _usage(part), "timings": _timings(part)}

    async def completion(self, key: str, body: base.Json) -> base.Json:
        with self._translate(key):
            response = await self._client.generate(
                model=key, prompt=_prompt(body), raw=True, options=_options(body), stream=False
            )
        choice = {
            "index": 0,
            "text": response.response or "",
            "logprobs": None,
            "finish_reason": _finish(response.done_reason),
        }
        return _envelope("cmpl", "text_completion", key) | {"choices": [choice], "usage": _usage(response)}

    async def completion_stream(self, key: str, body: base.Json) -> AsyncIterator[base.Json]:
        envelope = _envelope("cmpl", "text_completion", key)
        async with aclosing(self._stream(key, body, chat=False)) as parts:
            async for part in parts:
                finish = _finish(part.done_reason) if part.done else None
                choice = {"index": 0, "text": part.response or "", "logprobs": None, "finish_reason": finish}
                yield _chunk(envelope, body, choice)
                if part.done and _include_usage(body):
                    yield envelope | {"choices": [], "usage": _usage(part), "timings": _timings(part)}

    async def embeddings(self, key: str, inputs: builtins.list[str]) -> base.Json:  # `list` is a method here
        with self._translate(key):
            response = await self._client.embed(model=key, input=inputs)
        data = [
            {"object": "embedding", "index": i, "embedding": list(vector)}
            for i, vector in enumerate(response.embeddings)
        ]
        tokens = response.prompt_eval_count or 0
        return {
            "object": "list",
            "data": data,
            "model": key,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def close(self) -> None:
        await self._client.close()

    async def _stream(self, key: str, body: base.Json, *, chat: bool) -> AsyncGenerator[Any, None]:
        """Ollama's NDJSON parts; closing this generator closes the HTTP response, which stops Ollama."""
        parts: AsyncIterator[Any]
        with self._translate(key):
            if chat:
                parts = await self._client.chat(
                    model=key, messages=_messages(body), options=_options(body), stream=True
                )
            else:
                parts = await self._client.generate(
                    model=key, prompt=_prompt(body), raw=True, options=_options(body), stream=True
                )
            # `async for` does not close what it iterates when the consumer leaves early: aclosing does
            async with aclosing(cast(AsyncGenerator[Any, None], parts)) as stream:
                async for part in stream:
                    yield part

    async def _has_blob(self, digest: str) -> bool:
        try:
            await self._client._request_raw("HEAD", f"/api/blobs/{digest}")
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                return False
            raise
        return True

    @contextmanager
    def _translate(self, key: str) -> Iterator[None]:
        """Ollama's and the transport's errors as the backend contract's errors, without local paths."""
        try:
            yield
        except ollama.ResponseError as exc:
            message = scrub_paths(str(exc.error))
            if exc.status_code == 404:
                raise base.NotDeployed(f"model '{key}' is not deployed on Ollama: deploy it first") from None
            if exc.status_code == 400:
                raise base.UpstreamRejected(f"Ollama rejected the request: {message}") from None
            status = f" ({exc.status_code})" if exc.status_code > 0 else ""  # -1: an error line mid-stream
            raise base.BackendError(f"Ollama failed{status}: {message}") from None
        except httpx.TimeoutException:
            raise base.BackendUnavailable(
                f"Ollama at {self.host} did not answer in time: try again later"
            ) from None
        except (ConnectionError, httpx.TransportError):
            raise base.BackendUnavailable(
                f"Ollama at {self.host} is unreachable: start it (`ollama serve`) or set ollama_host"
            ) from None


def check_model_name(key: str) -> None:
    """Refuse a key Ollama would refuse (or rewrite) as a model name, before any request."""
    if not _NAME.fullmatch(key) or ".." in key:
        raise InputError(
            f"'{key}' is not a valid Ollama model name: use lowercase 'name:tag' "
            "(letters, digits, '.', '_', '-'; up to 80 characters each)"
        )


def normalize_digest(sha256: str) -> str:
    """'sha256:<64 hex>' from a bare or prefixed SHA-256; anything else is refused."""
    match = _DIGEST.fullmatch(sha256)
    if match is None:
        raise InputError(f"'{sha256[:80]}' is not a SHA-256 digest: expected 64 hex digits")
    return f"sha256:{match.group(1).lower()}"


def _messages(body: base.Json) -> list[base.Json]:
    out = []
    for message in body.get("messages", []):
        content = message.get("content") or ""
        if isinstance(content, list):  # OpenAI content parts: the text ones, in order
            content = "".join(p.get("text", "") for p in content if p.get("type") == "text")
        out.append({"role": message["role"], "content": content})
    return out


def _prompt(body: base.Json) -> str:
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise base.UpstreamRejected("Ollama completes one text prompt per request")
        prompt = prompt[0]
    return str(prompt)


def _options(body: base.Json) -> base.Json:
    options = {target: body[source] for source, target in _OPTIONS.items() if body.get(source) is not None}
    stop = body.get("stop")
    if stop:
        options["stop"] = [stop] if isinstance(stop, str) else list(stop)
    return options


def _finish(done_reason: str | None) -> str:
    return "length" if done_reason == "length" else "stop"


def _usage(response: Any) -> base.Json:
    prompt, completion = response.prompt_eval_count or 0, response.eval_count or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _timings(response: Any) -> base.Json:
    """Ollama's own counts and durations (nanoseconds), as a benchmark cross-checks them."""
    names = ("eval_count", "eval_duration", "prompt_eval_count", "prompt_eval_duration", "load_duration")
    return {n: getattr(response, n, None) for n in names if getattr(response, n, None) is not None}


def _include_usage(body: base.Json) -> bool:
    return bool((body.get("stream_options") or {}).get("include_usage"))


def _envelope(prefix: str, kind: str, key: str) -> base.Json:
    return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()), "model": key}


def _chunk(envelope: base.Json, body: base.Json, choice: base.Json) -> base.Json:
    # with include_usage, OpenAI sends "usage": null on every chunk but the last
    return envelope | {"choices": [choice]} | ({"usage": None} if _include_usage(body) else {})
