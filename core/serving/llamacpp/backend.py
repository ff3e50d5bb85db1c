"""The embedded backend: one llama.cpp `llama-server` process per deployed GGUF.

Each server decodes up to `serve.parallel` requests together (continuous batching over that many
slots, each with `serve.n_ctx` of context); requests beyond the busy slots wait in llama.cpp's queue,
and beyond `serve.max_queue` waiting ones a request is refused at once with 503 and Retry-After,
rather than left to time out. Chats are rendered with the GGUF's own `tokenizer.chat_template`
(`--jinja`). Usage (in replies, and in streams asked for it with `stream_options.include_usage`) and
`timings` are the server's own.

At most `max_loaded_models` servers run; deploying one more stops the least recently used. A server
that died is started again by the next request to it. A request that times out, or whose client
went away, closes its connection, and llama-server stops that generation and frees its slot.
Each server process has its own pooled keep-alive HTTP client, reused by every request to it.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

from core.config import CpuConfig, ServeConfig
from core.cpu import llama_threads
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
from core.serving.llamacpp.replies import parse_metrics, raise_for_status, sse_chunks
from core.serving.process import ServerProcess, llama_server_binary, meaningful_line
from core.settings import get_settings

log = logging.getLogger(__name__)
_HEADERS = {"content-type": "application/json"}
_COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; llama-server's is "until the end"
# llama-server's series forgeflow's /metrics carries, per model (see api.telemetry)
SERVER_SERIES = ("requests_processing", "requests_deferred", "tokens_predicted_total", "prompt_tokens_total")


@dataclass(slots=True)
class _Served:
    model: ServedModel
    process: ServerProcess
    client: httpx.AsyncClient  # keep-alive connections to this process, reused by every request
    active: int = 0  # requests in flight: decoding in a slot or waiting in llama.cpp's queue
    mean_s: float = 1.0  # running mean of a request's duration: the Retry-After of a refusal


class LlamaCppBackend:
    """Serves text-generation GGUFs through llama.cpp's own server, with continuous batching."""

    name = "llamacpp"

    def __init__(self, config: ServeConfig, log_dir: Path, cpu: CpuConfig | None = None) -> None:
        self._config = config
        # llama.cpp threads per model: serve.n_threads, else cpu.serve_threads when training shares
        # the cores (core.cpu), else every core; `cpu` defaults to this process's settings
        self._threads = llama_threads(config, cpu if cpu is not None else get_settings().cpu)
        self._log_dir = log_dir
        # health checks and metrics scrapes; requests use each process's own client
        self._control = httpx.AsyncClient(timeout=httpx.Timeout(2.0), trust_env=False)
        self._running: collections.OrderedDict[str, _Served] = collections.OrderedDict()  # LRU first
        self._starting: set[str] = set()
        self._failed: dict[str, str] = {}
        self._locks: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._capacity = asyncio.Lock()
        self._verified: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256
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
                await asyncio.to_thread(self._check_file, model)
                served = await self._start(model)
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
        """True while this backend can start servers (a llama-server binary is installed)."""
        return not self._closed and llama_server_binary(self._config.llama_server) is not None

    async def chat(self, key: str, body: Json) -> Json:
        return await self._complete(key, "/v1/chat/completions", body)

    async def completion(self, key: str, body: Json) -> Json:
        return await self._complete(key, "/v1/completions", _with_default_max_tokens(body))

    def chat_stream(self, key: str, body: Json) -> AsyncIterator[Json]:
        return self._stream(key, "/v1/chat/completions", body)

    def completion_stream(self, key: str, body: Json) -> AsyncIterator[Json]:
        return self._stream(key, "/v1/completions", _with_default_max_tokens(body))

    async def embeddings(self, key: str, inputs: builtins.list[str]) -> Json:
        self._served(key)
        raise UpstreamRejected(f"{key} is a text-generation model: use a text-embedding model for embeddings")

    async def server_metrics(self) -> dict[str, dict[str, float]]:
        """Each running model's llama-server series (busy slots, deferred requests, tokens), by key.

        A server that does not answer within the scrape's time is left out of this scrape.
        """

        async def scrape(served: _Served) -> dict[str, float] | None:
            if not served.process.alive:
                return None
            try:
                resp = await self._control.get(f"{served.process.base_url}/metrics")
            except httpx.TransportError:
                return None
            if resp.status_code != 200:
                return None
            series = parse_metrics(resp.text)
            ours = {name: series[name] for name in SERVER_SERIES if name in series}
            return ours | {"slots": float(self._config.parallel), "in_flight": float(served.active)}

        running = builtins.list(self._running.items())
        found = await asyncio.gather(*(scrape(served) for _, served in running))
        return {key: series for (key, _), series in zip(running, found, strict=True) if series is not None}

    async def close(self) -> None:
        """Stop every server and the HTTP clients; the backend refuses work afterwards."""
        self._closed = True
        await asyncio.gather(*(self._stop(key) for key in builtins.list(self._running)))
        await self._control.aclose()

    # --- deployment ---

    def _check_file(self, model: ServedModel) -> None:
        """The GGUF exists, is the registered file, and its header is sound."""
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
            log.warning("%s has no chat template: llama.cpp falls back to its default format", model.key)

    async def _start(self, model: ServedModel) -> _Served:
        async with self._capacity:
            while len(self._running) + len(self._starting) >= self._config.max_loaded_models:
                if not self._running:
                    raise BackendUnavailable(f"{model.key}: every model slot is loading: retry shortly")
                victim = next(iter(self._running))
                log.info("unloading %s (least recently used) to make room for %s", victim, model.key)
                await self._stop(victim)
            self._starting.add(model.key)
        try:
            served = await self._spawn(model)
        finally:
            self._starting.discard(model.key)
        self._running[model.key] = served
        return served

    def _args(self, model: ServedModel) -> builtins.list[str]:
        config = self._config
        n_ctx = min(config.n_ctx, model.n_ctx)
        threads = str(self._threads)
        return [
            *("--model", str(model.path), "--alias", model.key),
            # one context per slot (not a pool shared by all): every request gets n_ctx, whatever runs
            *("--parallel", str(config.parallel), "--ctx-size", str(n_ctx * config.parallel)),
            "--no-kv-unified",
            *("--threads", threads, "--threads-batch", threads),
            "--jinja",  # the GGUF's own chat template, rendered by llama.cpp's Jinja engine
            "--metrics",
            "--no-webui",
        ]

    async def _spawn(self, model: ServedModel) -> _Served:
        binary = llama_server_binary(self._config.llama_server)
        if binary is None:
            raise BackendUnavailable(
                f"{model.key}: llama-server is not installed: run `make install` "
                "(or set serve.llama_server to its path)",
                retry_after=60,
            )
        log_path = self._log_dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', model.key)}.log"
        process = ServerProcess.spawn(binary, self._args(model), log_path)
        try:
            await process.wait_ready(self._control, model.key, self._config.start_timeout_s)
        except BaseException:
            process.kill()
            raise
        log.info("%s: llama-server pid %d on port %d", model.key, process.pid, process.port)
        return _Served(model, process, self._client_for(process))

    def _client_for(self, process: ServerProcess) -> httpx.AsyncClient:
        waiting = self._config.parallel + self._config.max_queue
        return httpx.AsyncClient(
            base_url=process.base_url,
            timeout=httpx.Timeout(None, connect=5.0),
            # a connection per request in flight, kept open for the next one; llama-server closes an
            # idle connection after 5 s, so we let go of it first
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=waiting, keepalive_expiry=4),
            trust_env=False,  # a proxy from the environment must never sit between us and 127.0.0.1
        )

    async def _restart(self, served: _Served) -> None:
        key = served.model.key
        log.warning(
            "%s: llama-server exited (code %s): restarting; last log line: %s",
            key,
            served.process.popen.returncode,
            meaningful_line(served.process.log_tail()),
        )
        await served.client.aclose()
        try:
            fresh = await self._spawn(served.model)
        except BackendError as exc:
            self._running.pop(key, None)
            self._failed[key] = str(exc)
            raise
        served.process, served.client = fresh.process, fresh.client

    async def _stop(self, key: str) -> None:
        served = self._running.pop(key, None)
        if served is not None:
            await served.process.stop()
            await served.client.aclose()

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

    @contextlib.contextmanager
    def _admitted(self, served: _Served) -> Iterator[None]:
        """Hold one of the model's places (a slot or the queue behind them) for one request.

        Raises:
            BackendUnavailable: every slot is busy and the queue is full: 503, retry after about
                one request's duration.
        """
        config = self._config
        if served.active >= config.parallel + config.max_queue:
            raise BackendUnavailable(
                f"{served.model.key}: all {config.parallel} slots are busy and {config.max_queue} "
                "requests are waiting: retry shortly",
                retry_after=max(1, math.ceil(served.mean_s)),
            )
        served.active += 1
        started = time.monotonic()
        try:
            yield
        finally:
            served.active -= 1
            served.mean_s += (time.monotonic() - started - served.mean_s) * 0.2

    async def _send(self, served: _Served, route: str, content: bytes, *, stream: bool) -> httpx.Response:
        """POST to the model's server, once more if a kept-alive connection had been closed as we
        reused it (llama-server ends every connection that carried a stream): the request never
        reached the server."""
        request = served.client.build_request("POST", route, content=content, headers=_HEADERS)
        try:
            try:
                return await served.client.send(request, stream=stream)
            except httpx.RemoteProtocolError:
                return await served.client.send(request, stream=stream)
        except httpx.TransportError as exc:
            raise _unreachable(served, exc) from exc

    async def _post(self, served: _Served, route: str, payload: Json) -> Json:
        resp = await self._send(served, route, orjson.dumps(payload), stream=False)
        raise_for_status(served.model.key, resp)
        result: Json = orjson.loads(resp.content)
        return result

    async def _complete(self, key: str, route: str, body: Json) -> Json:
        served = await self._live(key)
        payload = {**body, "model": key, "stream": False}
        payload.pop("stream_options", None)
        with self._admitted(served):
            # past the timeout the request is cancelled: its connection closes, llama.cpp stops
            async with asyncio.timeout(self._config.request_timeout_s):
                return await self._post(served, route, payload)

    async def _stream(self, key: str, route: str, body: Json) -> AsyncIterator[Json]:
        served = await self._live(key)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        payload = orjson.dumps({**body, "model": key, "stream": True})
        with self._admitted(served):
            # closing this generator early closes the response: llama.cpp stops at its next token
            resp = await self._send(served, route, payload, stream=True)
            try:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise_for_status(key, resp)
                async for chunk in sse_chunks(key, resp, self._config.request_timeout_s):
                    usage = chunk.pop("usage", None) if chunk.get("choices") else None
                    yield chunk
                    if usage is not None and include_usage:
                        # /v1/completions puts usage on its last text chunk; the contract (and
                        # OpenAI) want it in a chunk of its own, with empty choices
                        yield {**chunk, "choices": [], "usage": usage}
            except httpx.TransportError as exc:
                raise _unreachable(served, exc) from exc
            finally:
                await resp.aclose()


def _with_default_max_tokens(body: Json) -> Json:
    return body if body.get("max_tokens") is not None else {**body, "max_tokens": _COMPLETION_MAX_TOKENS}


def _unreachable(served: _Served, exc: httpx.TransportError) -> BackendUnavailable:
    key = served.model.key
    if not served.process.alive:
        why = meaningful_line(served.process.log_tail())
        return BackendUnavailable(
            f"{key}: its llama.cpp server exited ({why}): it restarts on the next request", 1
        )
    return BackendUnavailable(f"{key}: the llama.cpp server did not answer ({type(exc).__name__}): retry", 2)
