"""Proxy overhead: the same streamed chats sent straight to a llama.cpp server and through forgeflow.

Usage: .venv/bin/python benchmarks/proxy.py [--model smollm2-135m | PATH.gguf] [--max-tokens 32]
       [--prompts 8] [--rounds 3] [--concurrency 1 8]
Writes benchmarks/results/proxy.json.

`forgeflow serve` runs as its own process (as in production) with the model preloaded; the direct
side talks to the very llama.cpp server process forgeflow started, so the only difference between
the two sides is forgeflow's hop. Rounds alternate direct and proxied batches so that drift on a
shared machine hits both. TTFT = time from sending the request to the first content chunk;
tokens/s = completion tokens of the batch / wall time of the batch (greedy decoding, the same
prompts, so both sides generate the same tokens). On a small machine give llama.cpp fewer threads
than cores (--threads, default 1), or the proxy and the load generator steal its cores and the
figure measures CPU contention rather than the proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
TOPICS = [
    "what a git rebase does",
    "how to reverse a string in Python",
    "what a LoRA adapter is",
    "why unit tests matter",
    "what a context manager is in Python",
    "how HTTP caching works",
    "what a hash map is",
    "how to read a file line by line in Python",
    "what a race condition is",
    "what JSON is",
]


async def _one(
    client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int
) -> dict[str, float]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"Explain {prompt}."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    sent = time.perf_counter()
    first: float | None = None
    tokens = 0
    async with client.stream("POST", url, json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                first = first or time.perf_counter()
                tokens += 1
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return {"ttft_ms": ((first or time.perf_counter()) - sent) * 1000, "tokens": tokens}


async def _batch(
    url: str, model: str, prompts: list[str], concurrency: int, max_tokens: int
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        queue = list(prompts)
        results: list[dict[str, float]] = []

        async def worker() -> None:
            while queue:
                prompt = queue.pop(0)
                results.append(await _one(client, url, model, prompt, max_tokens))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {
        "ttfts": [r["ttft_ms"] for r in results],
        "tokens": sum(r["tokens"] for r in results),
        "wall": wall,
    }


def _llama_port(api_pid: int, key: str) -> int:
    for child in psutil.Process(api_pid).children(recursive=True):
        cmd = child.cmdline()
        if "llama_cpp.server" in cmd and key in cmd:
            return int(cmd[cmd.index("--port") + 1])
    raise RuntimeError("forgeflow did not start a llama.cpp server for the model")


def _wait_health(url: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("forgeflow serve exited")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("forgeflow serve did not come up")


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ttfts = [t for r in runs for t in r["ttfts"]]
    tokens = sum(r["tokens"] for r in runs)
    wall = sum(r["wall"] for r in runs)
    return {
        "requests": len(ttfts),
        "ttft_p50_ms": round(statistics.median(ttfts), 2),
        "ttft_p95_ms": round(sorted(ttfts)[max(0, int(len(ttfts) * 0.95) - 1)], 2),
        "tokens": tokens,
        "tokens_per_s": round(tokens / wall, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--threads", type=int, default=1, help="llama.cpp threads (0: all cores; 1 leaves a core for the API)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "proxy.json")
    args = parser.parse_args()
    prompts = (TOPICS * 10)[: args.prompts]

    work = Path(tempfile.mkdtemp(prefix="forgeflow-proxy-"))
    port = 18000 + os.getpid() % 1000
    env = os.environ | {
        "FORGEFLOW_HOME": str(work / "ws"),
        "FORGEFLOW_ALLOWED_ROOTS": json.dumps([str(work)]),
        "FORGEFLOW_SERVE__N_THREADS": str(args.threads),
    }
    ref = args.model
    if args.model.endswith(".gguf"):
        shutil.copy(args.model, work / "bench.gguf")
        reg = [
            str(ROOT / ".venv/bin/forgeflow"),
            "models",
            "register",
            str(work / "bench.gguf"),
            "--name",
            "bench",
        ]
        subprocess.run(reg, env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        ref = "bench"
    cmd = [str(ROOT / ".venv/bin/forgeflow"), "serve", "--port", str(port), "--model", ref]
    api = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_health(base, api)
        key = httpx.get(f"{base}/models").json()["active_model"]
        llama = f"http://127.0.0.1:{_llama_port(api.pid, key)}/v1/chat/completions"
        proxy = f"{base}/v1/chat/completions"
        asyncio.run(_batch(llama, key, prompts[:2], 1, 4))  # warm-up: both paths, caches and sockets
        asyncio.run(_batch(proxy, key, prompts[:2], 1, 4))
        results: dict[str, Any] = {}
        for concurrency in args.concurrency:
            direct: list[dict[str, Any]] = []
            proxied: list[dict[str, Any]] = []
            # alternate direct and proxied: whole batches, or single requests at concurrency 1, so
            # that the machine's drift (2 shared cores) lands on both sides alike
            # (shifted by one prompt, so that no request finds its own prompt in llama.cpp's cache)
            if concurrency == 1:
                pairs = [([prompts[i]], [prompts[i - 1]]) for i in range(len(prompts))]
            else:
                pairs = [(prompts, prompts)]
            for _ in range(args.rounds):
                for mine, theirs in pairs:
                    direct.append(asyncio.run(_batch(llama, key, mine, concurrency, args.max_tokens)))
                    proxied.append(asyncio.run(_batch(proxy, key, theirs, concurrency, args.max_tokens)))
            d, p = _summary(direct), _summary(proxied)
            results[f"concurrency_{concurrency}"] = {
                "direct": d,
                "forgeflow": p,
                "ttft_p50_overhead_ms": round(p["ttft_p50_ms"] - d["ttft_p50_ms"], 2),
                "tokens_per_s_ratio": round(p["tokens_per_s"] / d["tokens_per_s"], 3),
            }
            print(f"concurrency {concurrency}: {json.dumps(results[f'concurrency_{concurrency}'])}")
    finally:
        api.send_signal(signal.SIGINT)
        try:
            api.wait(timeout=30)
        except subprocess.TimeoutExpired:
            api.kill()
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "benchmark": "proxy",
        "model": args.model,
        "max_tokens": args.max_tokens,
        "prompts": args.prompts,
        "rounds": args.rounds,
        "llama_cpp_threads": args.threads,
        "goals": {"ttft_p50_overhead_ms": "<= 2", "tokens_per_s_ratio": ">= 0.97"},
        "results": results,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
