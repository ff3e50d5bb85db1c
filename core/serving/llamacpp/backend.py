"""The embedded backend: one `python -m llama_cpp.server` process per deployed GGUF.

At most `max_loaded_models` servers run; deploying one more stops the least recently used. A server
that died is started again by the next request to it. Each server renders chats with the GGUF's own
`tokenizer.chat_template` (passed as `--chat_format chat_template.default`, so llama-cpp-python
never swaps it for a built-in format it guesses from the template's text).

A non-stream request that runs past request_timeout_s gets its server killed (and started again in
the background): llama_cpp.server never notices that a non-stream client left, and it serves one
request at a time, so the abandoned generation would hold up every request behind it. A stream
stops upstream as soon as it is closed. Stream usage (llama_cpp.server sends none): prompt tokens
are counted in this process, while the stream starts, by `core.serving.llamacpp.tokens` (the
server's own formatter and tokenizer on a vocab-only load of the GGUF); completion tokens are
tallied from the stream (`core.serving.llamacpp.replies`).
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import functools
import importlib.util
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

from core.config import ServeConfig
from core.errors import InputError
from core.gguf import inspect_gguf
from core.hashing import file_sha256
from core.serving.base import (
    BackendError,
    BackendUnavailable,
    Deployment,
    Json,
    NotDeployed,
    ServedModel,
    UpstreamRejected,
)
from core.serving.llamacpp.replies import StreamTally, raise_for_status, sse_chunks, usage_chunk
from core.serving.llamacpp.tokens import TokenCounter
from core.serving.process import PortTaken, ServerProcess, meaningful_line

log = logging.getLogger(__name__)
_HEADERS = {"content-type": "application/json"}
_FRESH = _HEADERS | {"connection": "close"}
_N_CTX_LINE = re.compile(r"llama_context: n_ctx\s*=\s*(\d+)")
_PORT_TRIES = 3
_SERVER_MODULES = ("llama_cpp", "uvicorn", "sse_starlette", "starlette_context")  # the [server] extra


@dataclass(slots=True)
class _Served:
    model: ServedModel
    process: ServerProcess
    has_template: bool  # the GGUF carries tokenizer.chat_template
    n_ctx: int  # what llama.cpp allocated (it rounds the requested size up)
    counter: TokenCounter  # stream usage, counted the way the server counts


class LlamaCppBackend:
    """Serves text-generation GGUFs through llama-cpp-python's OpenAI-compatible server."""

    name = "llamacpp"

    def __init__(self, config: ServeConfig, log_dir: Path) -> None:
        self._config = config
        self._log_dir = log_dir
        # one client for every server; no pool limit, so concurrent requests never queue here
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=5.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            trust_env=False,  # a proxy from the environment must never sit between us and 127.0.0.1
        )
        self._running: collections.OrderedDict[str, _Served] = collections.OrderedDict()  # LRU first
        self._starting: set[str] = set()
        self._failed: dict[str, str] = {}
        self._locks: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._capacity = asyncio.Lock()
        self._verified: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256
        self._revivals: set[asyncio.Task[None]] = set()
        self._closed = False

    async def deploy(self, model: ServedModel) -> Deployment:
        """Start the model's server (once per key), unloading the least recently used beyond the limit."""
        self._check_open()
        if model.task != "text-generation":
            raise UpstreamRejected(
                f"{model.key} is a {model.task} model: llama.cpp serves text-generation GGUFs only"
            )
        async with self._locks[model.key]:
            served = self._running.get(model.key)
            if served is not None and served.model == model:
                self._running.move_to_end(model.key)
                if not served.process.alive:
                    await self._restart(served)
                return self._deployment(served)
            if served is not None:  # the same key now names another file: replace the server
                await self._stop(model.key)
            try:
                has_template = await asyncio.to_thread(self._check_file, model)
                served = await self._start(model, has_template)
            except BackendError as exc:
                self._failed[model.key] = str(exc)
                raise
            self._failed.pop(model.key, None)
            return self._deployment(served)

    async def undeploy(self, key: str) -> None:
        """Stop the model's server; a key that is not deployed is left as is."""
        async with self._locks[key]:
            self._failed.pop(key, None)
            await self._stop(key)

    async def list(self) -> builtins.list[Deployment]:
        deployments = [self._deployment(served) for served in self._running.values()]
        deployments += [Deployment(key, self.name, "loading") for key in self._starting - set(self._running)]
        deployments += [Deployment(key, self.name, "failed", why) for key, why in self._failed.items()]
        return deployments

    async def health(self) -> bool:
        """True while this backend can start servers (llama-cpp-python's server is installed)."""
        return not self._closed and _server_installed()

    async def chat(self, key: str, body: Json) -> Json:
        return await self._complete(key, "/v1/chat/completions", body)

    async def completion(self, key: str, body: Json) -> Json:
        return await self._complete(key, "/v1/completions", body)

    def chat_stream(self, key: str, body: Json) -> AsyncIterator[Json]:
        return self._stream(key, "/v1/chat/completions", body, "chat.completion.chunk", None)

    def completion_stream(self, key: str, body: Json) -> AsyncIterator[Json]:
        return self._stream(key, "/v1/completions", body, "text_completion", 16)

    async def embeddings(self, key: str, inputs: builtins.list[str]) -> Json:
        self._served(key)
        raise UpstreamRejected(f"{key} is a text-generation model: use a text-embedding model for embeddings")

    async def close(self) -> None:
        """Stop every server and the HTTP client; the backend refuses work afterwards."""
        self._closed = True
        for task in self._revivals:
            task.cancel()
        await asyncio.gather(*self._revivals, return_exceptions=True)
        await asyncio.gather(*(self._stop(key) for key in builtins.list(self._running)))
        await self._client.aclose()

    # --- deployment ---

    def _check_file(self, model: ServedModel) -> bool:
        """The GGUF exists, is the registered file, its header is sound; True if it has a chat template."""
        path = model.path
        if not path.is_file():
            raise BackendError(f"{model.key}: {path.name} not found: export the model again")
        stat = path.stat()
        identity = (str(path), stat.st_size, stat.st_mtime_ns)
        if self._verified.get(identity) != model.sha256:
            digest = file_sha256(path)
            if digest != model.sha256:
                raise BackendError(
                    f"{model.key}: {path.name} is not the registered file (sha256 {digest[:12]}, "
                    f"registered {model.sha256[:12]}): register it again"
                )
            self._verified[identity] = digest
        try:
            metadata = inspect_gguf(path).metadata
        except InputError as exc:
            raise BackendError(f"{model.key}: {exc}") from None
        if "tokenizer.chat_template" not in metadata:
            log.warning("%s has no chat template: llama.cpp falls back to its llama-2 format", model.key)
            return False
        return True

    async def _start(self, model: ServedModel, has_template: bool) -> _Served:
        async with self._capacity:
            while len(self._running) + len(self._starting) >= self._config.max_loaded_models:
                if not self._running:
                    raise BackendUnavailable(f"{model.key}: every model slot is loading: retry shortly")
                victim = next(iter(self._running))
                log.info("unloading %s (least recently used) to make room for %s", victim, model.key)
                await self._stop(victim)
            self._starting.add(model.key)
        try:
            served = await self._spawn(model, has_template, None)
        finally:
            self._starting.discard(model.key)
        self._running[model.key] = served
        return served

    async def _spawn(self, model: ServedModel, has_template: bool, counter: TokenCounter | None) -> _Served:
        n_ctx = min(self._config.n_ctx, model.n_ctx)
        threads = str(self._config.n_threads or -1)  # -1: llama_cpp.server uses every core
        args = ["--model", str(model.path), "--model_alias", model.key, "--n_ctx", str(n_ctx)]
        args += ["--n_threads", threads, "--n_threads_batch", threads]
        # the default (true) ends a running stream as soon as another request arrives
        args += ["--interrupt_requests", "false"]
        if has_template:
            args += ["--chat_format", "chat_template.default"]
        log_path = self._log_dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', model.key)}.log"
        for _ in range(_PORT_TRIES):
            process = ServerProcess.spawn(args, log_path)
            try:
                await process.wait_ready(self._client, model.key, self._config.start_timeout_s)
            except PortTaken:
                process.kill()
                continue
            except BaseException:
                process.kill()
                raise
            if counter is None:  # after the server loaded the file: its failures carry llama.cpp's reason
                try:
                    counter = await asyncio.to_thread(TokenCounter, model.path)
                except BaseException:
                    process.kill()
                    raise
            found = _N_CTX_LINE.findall(process.log_tail())
            log.info("%s: llama.cpp server pid %d on port %d", model.key, process.pid, process.port)
            return _Served(model, process, has_template, int(found[-1]) if found else n_ctx, counter)
        raise BackendUnavailable(f"{model.key}: no free port found in {_PORT_TRIES} tries", retry_after=1)

    async def _restart(self, served: _Served) -> None:
        key = served.model.key
        log.warning(
            "%s: llama.cpp server exited (code %s): restarting; last log line: %s",
            key,
            served.process.popen.returncode,
            meaningful_line(served.process.log_tail()),
        )
        try:
            fresh = await self._spawn(served.model, served.has_template, served.counter)
        except BackendError as exc:
            self._running.pop(key, None)
            self._failed[key] = str(exc)
            raise
        served.process, served.n_ctx = fresh.process, fresh.n_ctx

    async def _stop(self, key: str) -> None:
        served = self._running.pop(key, None)
        if served is not None:
            await served.process.stop()
            served.counter.close()

    def _deployment(self, served: _Served) -> Deployment:
        process = served.process
        if process.alive:
            return Deployment(
                served.model.key, self.name, "loaded", f"pid {process.pid}, port {process.port}"
            )
        why = f"server exited with code {process.popen.returncode}: it restarts on the next request"
        return Deployment(served.model.key, self.name, "failed", why)

    # --- requests ---

    def _check_open(self) -> None:
        if self._closed:
            raise BackendUnavailable("the llama.cpp backend is shut down")

    def _served(self, key: str) -> _Served:
        self._check_open()
        served = self._running.get(key)
        if served is None:
            why = self._failed.get(key)
            raise NotDeployed(f"{key} failed to deploy: {why}" if why else f"{key} is not deployed")
        self._running.move_to_end(key)
        return served

    async def _live(self, key: str) -> _Served:
        """The model's server, started again (once) if it has exited."""
        served = self._served(key)
        if not served.process.alive:
            async with self._locks[key]:
                served = self._served(key)
                if not served.process.alive:
                    await self._restart(served)
        return served

    async def _post(self, served: _Served, route: str, payload: Json) -> Json:
        url, content = served.process.base_url + route, orjson.dumps(payload)
        try:
            resp = await self._client.post(url, content=content, headers=_HEADERS)
        except (httpx.ReadError, httpx.RemoteProtocolError):
            # a pooled connection the server dropped (after a stream it cut short): once more, fresh
            try:
                resp = await self._client.post(url, content=content, headers=_FRESH)
            except httpx.TransportError as exc:
                raise _unreachable(served, exc) from exc
        except httpx.TransportError as exc:
            raise _unreachable(served, exc) from exc
        raise_for_status(served.model.key, resp)
        result: Json = orjson.loads(resp.content)
        return result

    async def _complete(self, key: str, route: str, body: Json) -> Json:
        served = await self._live(key)
        payload = {**body, "model": key, "stream": False}
        payload.pop("stream_options", None)
        timeout = self._config.request_timeout_s
        try:
            async with asyncio.timeout(timeout):
                return await self._post(served, route, payload)
        except TimeoutError:
            log.warning(
                "%s: a request ran past %gs: restarting its server to end the generation", key, timeout
            )
            served.process.kill()
            self._revive(key)
            raise

    def _revive(self, key: str) -> None:
        """Start the key's server again in the background, so the next request finds it ready."""

        async def revive() -> None:
            with contextlib.suppress(BackendError):
                await self._live(key)

        task = asyncio.get_running_loop().create_task(revive())
        self._revivals.add(task)
        task.add_done_callback(self._revivals.discard)

    async def _stream(
        self, key: str, route: str, body: Json, kind: str, default_max_tokens: int | None
    ) -> AsyncIterator[Json]:
        served = await self._live(key)
        timeout = self._config.request_timeout_s
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        payload = {**body, "model": key}
        payload.pop("stream_options", None)  # llama_cpp.server ignores it; usage is ours to compute
        # counted in a worker thread once the first chunk is out, while llama.cpp generates the rest:
        # nothing is added to the time to first token
        counting: asyncio.Future[int] | None = None

        def count() -> asyncio.Future[int]:
            nonlocal counting
            if counting is None:
                counting = asyncio.ensure_future(asyncio.to_thread(_prompt_tokens, served.counter, body))
            return counting

        tally = StreamTally()
        url = served.process.base_url + route
        request = self._client.build_request(
            "POST", url, content=orjson.dumps({**payload, "stream": True}), headers=_HEADERS
        )
        try:  # closing this generator early closes the response: llama.cpp stops at its next token
            try:
                resp = await self._client.send(request, stream=True)
            except httpx.TransportError as exc:
                raise _unreachable(served, exc) from exc
            try:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise_for_status(key, resp)
                async for chunk in sse_chunks(key, resp, timeout):
                    tally.add(chunk)
                    yield chunk
                    count()
            except httpx.TransportError as exc:
                raise _unreachable(served, exc) from exc
            except BackendError:
                if not tally.last:  # nothing came: a prompt too long for the context ends it that way
                    await _refuse_if_too_long(key, count(), served.n_ctx)
                raise
            finally:
                await resp.aclose()
            prompt_tokens = await count()
        finally:
            if counting is not None:
                counting.cancel()
        if include_usage:
            max_tokens = body.get("max_tokens", default_max_tokens)
            completion_tokens = tally.length_limited(prompt_tokens, max_tokens, served.n_ctx)
            if completion_tokens is None:
                completion_tokens = tally.ascii_tokens + sum(map(served.counter.text, tally.other_texts))
            yield usage_chunk(tally.last, kind, key, prompt_tokens, completion_tokens)


async def _refuse_if_too_long(key: str, counting: asyncio.Future[int], n_ctx: int) -> None:
    prompt_tokens = await counting
    if prompt_tokens >= n_ctx:
        raise UpstreamRejected(
            f"{key}: this model's maximum context length is {n_ctx} tokens; the prompt has {prompt_tokens}: "
            "shorten it"
        )


def _prompt_tokens(counter: TokenCounter, body: Json) -> int:
    if "messages" in body:
        counted = counter.chat_prompt(body["messages"])
        if counted is not None:
            return counted
        # no chat template: llama.cpp's llama-2 fallback format; count its rendering's text
        return counter.completion_prompt("".join(str(m.get("content", "")) for m in body["messages"]))
    return counter.completion_prompt(str(body.get("prompt", "")))


@functools.cache
def _server_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in _SERVER_MODULES)


def _unreachable(served: _Served, exc: httpx.TransportError) -> BackendUnavailable:
    key = served.model.key
    if not served.process.alive:
        why = meaningful_line(served.process.log_tail())
        return BackendUnavailable(
            f"{key}: its llama.cpp server exited ({why}): it restarts on the next request", 1
        )
    return BackendUnavailable(f"{key}: the llama.cpp server did not answer ({type(exc).__name__}): retry", 2)
