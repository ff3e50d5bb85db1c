"""Serving: forgeflow vs the llama-server it runs vs llama-cpp-python's server, on one GGUF.

Usage: .venv/bin/python benchmarks/serving.py [--model smollm2-135m | PATH.gguf] [--threads 2]
       [--concurrency 1 4 8] [--requests 16] [--rounds 5] [--max-tokens 64] [--n-ctx 2048]
       [--parallel 1 2 4 8] [--sweep-concurrency 8] [--out benchmarks/results/serving.json]

Three sides serve the same file with the same llama.cpp threads and context:
- forgeflow: `forgeflow serve --model REF` as its own process, as in production;
- direct: the very llama-server process forgeflow started for the model, addressed on its own port, so
  forgeflow vs direct is the cost of forgeflow's hop and nothing else;
- llama_cpp_server: `python -m llama_cpp.server`, started here, the server forgeflow used to run (it
  holds a global lock: one request at a time). It runs alone, first, and is stopped before forgeflow
  starts: on a 2-core machine two servers generating at once would measure contention.

Figures (greedy decoding, fixed prompts, completion tokens from each reply's `usage`; streams ask for
it with `stream_options.include_usage`, and `usage_source: chunks` marks a server that sends none):
- throughput: per concurrency and mode (non-stream, stream), --requests requests sent by that many
  workers over one keep-alive client per side; tokens/s = completion tokens / wall time of the batch.
  direct and forgeflow batches alternate, and so does which of the two goes first. `retries`: requests
  sent again after the server closed their pooled connection before answering (once at most).
- latency_c1: rounds of interleaved pairs at concurrency 1, a direct request and a forgeflow one with a
  different prompt (no llama.cpp prompt-cache hit for either), the first of each pair alternating, so
  drift on a shared machine lands on both sides alike. TTFT = send -> first content chunk; the p50
  overhead is forgeflow's p50 minus direct's (`paired`: the median of per-pair differences), and its
  spread across rounds says how far to trust it. tokens/s = tokens / time spent in requests.
  api_cpu_ms_per_stream: forgeflow's own CPU time (its llama-server excluded) per request of the phase.
- parallel_sweep (--parallel N...): forgeflow + direct at concurrency --sweep-concurrency with
  FORGEFLOW_SERVE__PARALLEL=N llama-server slots, to choose the default `serve.parallel`.
- server_timings_mean: llama-server's own `timings` (prompt and decode speed without HTTP), where
  replies carry them: end-to-end tokens/s well below predicted_per_second is time outside decoding.
- goals: forgeflow at concurrency 8 >= 3x llama_cpp_server and >= 0.95x direct (both modes); at
  concurrency 1 (the interleaved pairs) >= 0.95x direct and TTFT p50 overhead <= 2 ms; `met` each.
Run it on a quiet machine: on 2 shared cores, anything else running moves every figure. With as many
llama.cpp threads as cores, forgeflow's API and this load generator take cores from llama.cpp, whose
threads then wait on one another (on a busy 2-core machine llama-server decoded 9 tokens/s at
--threads 2 and 40 at --threads 1): compare `server_timings_mean` across --threads before trusting one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import platform
import shlex
import shutil
import signal
import socket
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
sys.path.insert(0, str(ROOT))

from core.base_models import embedded_gguf  # noqa: E402
from core.errors import InputError  # noqa: E402
from core.processes import spawn  # noqa: E402

FORGEFLOW = ROOT / ".venv/bin/forgeflow"
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
ASKS = ["Explain {}.", "In a few sentences, explain {}.", "Explain {} to a new programmer."]
MODES = {"non_stream": False, "stream": True}
SIDES = ("direct", "forgeflow")  # forgeflow's own llama.cpp server, and forgeflow in front of it
# llama_cpp.server reads these (and every other field of its Settings) from the environment
BASELINE_ENV = {"HOST", "PORT", "API_KEY", "CONFIG_FILE", "MODEL"}
Result = dict[str, Any]


@dataclasses.dataclass
class Side:
    """One server as a client sees it: a pooled keep-alive client, its chat URL, the model name."""

    name: str
    client: httpx.AsyncClient
    url: str
    model: str


async def _exchange(side: Side, body: Result) -> tuple[float | None, int, Result | None, Result | None]:
    """Send one chat; the time of its first content chunk (streams), the chunks, usage, timings."""
    if not body["stream"]:
        r = await side.client.post(side.url, json=body)
        if r.status_code != 200:
            raise RuntimeError(f"{side.name}: {r.status_code} {r.text[:300]}")
        reply = r.json()
        return None, 0, reply.get("usage"), reply.get("timings")
    first, chunks, usage, timings = None, 0, None, None
    async with side.client.stream("POST", side.url, json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{side.name}: {r.status_code} {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                first = first or time.perf_counter()
                chunks += 1
            usage, timings = chunk.get("usage") or usage, chunk.get("timings") or timings
    return first, chunks, usage, timings


class Load:
    """What every side is sent: greedy chats, fresh prompts from one cycle of 30 distinct ones (no
    request finds its prompt in a llama.cpp slot's cache), --max-tokens completion tokens at most."""

    def __init__(self, max_tokens: int, requests: int) -> None:
        self.prompts = itertools.cycle([ask.format(topic) for ask in ASKS for topic in TOPICS])
        self.max_tokens, self.requests = max_tokens, requests

    async def request(self, side: Side, stream: bool, max_tokens: int | None = None) -> Result:
        """One chat: TTFT (streams), latency, completion tokens, llama-server's `timings` if sent."""
        body: Result = {
            "model": side.model,
            "messages": [{"role": "user", "content": next(self.prompts)}],
            "max_tokens": max_tokens or self.max_tokens,
            "temperature": 0,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        sent, retries = time.perf_counter(), 0
        while True:
            try:
                first, chunks, usage, timings = await _exchange(side, body)
                break
            except httpx.RemoteProtocolError:
                # the server closed a pooled connection as the request went out (seen from
                # llama-server on a starved machine): reconnect once, as the OpenAI SDK would
                if retries:
                    raise
                retries += 1
        return {
            "ttft_ms": (first - sent) * 1000 if first else None,
            "latency_ms": (time.perf_counter() - sent) * 1000,
            "tokens": usage["completion_tokens"] if usage else chunks,
            "usage": usage is not None,
            "timings": timings,
            "retries": retries,
        }

    async def batch(
        self, side: Side, concurrency: int, stream: bool, n: int = 0, max_tokens: int = 0
    ) -> Result:
        """`n` (--requests) requests sent by `concurrency` workers, summarised."""
        left, results = n or self.requests, []

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                results.append(await self.request(side, stream, max_tokens))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return _summary(results, time.perf_counter() - started)

    async def warm_up(self, side: Side) -> None:
        for stream in MODES.values():  # pages the model in, opens the pool's connections
            await self.batch(side, 2, stream, n=2, max_tokens=8)

    async def throughput(self, sides: list[Side], runs: list[tuple[int, str]]) -> dict[tuple, Result]:
        """A batch per side for each (concurrency, mode); which side goes first alternates."""
        results = {}
        for i, (c, mode) in enumerate(runs):
            for side in sides if i % 2 == 0 else sides[::-1]:
                results[(c, mode, side.name)] = summary = await self.batch(side, c, MODES[mode])
                print(f"{side.name} c={c} {mode}: {summary['tokens_per_s']} tokens/s")
        return results


def _pct(values: list[float], q: float) -> float:
    return round(sorted(values)[max(0, int(len(values) * q + 0.5) - 1)], 2)


def _summary(results: list[Result], seconds: float) -> Result:
    """Tokens/s of `results` that took `seconds` in all, their latencies, mean server timings."""
    tokens = sum(r["tokens"] for r in results)
    ttfts = [r["ttft_ms"] for r in results if r["ttft_ms"] is not None]
    summary: Result = {
        "requests": len(results),
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 2),
        "latency_p50_ms": _pct([r["latency_ms"] for r in results], 0.5),
    }
    if ttfts:
        summary |= {"ttft_p50_ms": round(statistics.median(ttfts), 2), "ttft_p95_ms": _pct(ttfts, 0.95)}
    summary["usage_source"] = "usage" if all(r["usage"] for r in results) else "chunks"
    summary["retries"] = sum(r["retries"] for r in results)
    if timings := [r["timings"] for r in results if r["timings"]]:
        mean = {k: round(statistics.fmean(t[k] for t in timings), 2) for k in timings[0] if k in timings[-1]}
        summary["server_timings_mean"] = {"requests": len(timings)} | mean
    return summary


class Servers:
    """The processes this benchmark starts, in a temporary workspace: each is stopped when its part
    is done, any left on exit (Ctrl-C included)."""

    def __init__(self, gguf: Path) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="forgeflow-serving-"))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.forgeflow_env = os.environ | {
            "FORGEFLOW_HOME": str(self.work / "ws"),
            "FORGEFLOW_ALLOWED_ROOTS": json.dumps([str(self.work), str(gguf.parent)]),
        }

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        # its own session: a Ctrl-C is ours to handle, we stop the servers in order
        self.procs[name] = spawn(argv, self.work / f"{name}.log", env=env, cwd=ROOT)
        return self.procs[name]

    async def wait_ready(self, name: str, client: httpx.AsyncClient, url: str, timeout: float = 300) -> None:
        proc, deadline = self.procs[name], time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log = (self.work / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited ({proc.returncode}):\n{log}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url, timeout=2)).status_code == 200:
                    return
            await asyncio.sleep(0.5)
        raise RuntimeError(f"{name} did not answer {url} within {timeout:.0f} s")

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        descendants: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            descendants = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGINT)  # forgeflow stops its model servers on the way out
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for child in descendants:  # in case it could not
            with contextlib.suppress(psutil.Error):
                child.kill()

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        shutil.rmtree(self.work, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _client() -> httpx.AsyncClient:
    """A pooled keep-alive client, as a real one would use. llama-server and uvicorn close a connection
    idle for 5 s, httpx's default expiry: a request sent just then would meet a closing socket."""
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=4)
    return httpx.AsyncClient(timeout=600, limits=limits)


def _flag(cmd: list[str], *names: str) -> str | None:
    return next((cmd[cmd.index(n) + 1] for n in names if n in cmd[:-1]), None)


def _public(cmd: list[str]) -> str:
    """A command line for the JSON: absolute paths cut to file names."""
    return shlex.join(Path(a).name if os.path.isabs(a) else a for a in cmd)


async def _find_direct(api_pid: int, key: str, timeout: float = 60) -> Result:
    """The llama.cpp server forgeflow runs for `key`: kind, port, slots, command line.

    llama-server (`--alias KEY`) may be told `--port 0`, so its port is read from its listening
    socket; the older `python -m llama_cpp.server --model_alias KEY` children are found too.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(api_pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                cmd = child.cmdline()
                if "llama-server" in Path(cmd[0]).name and _flag(cmd, "--alias", "-a") == key:
                    kind, slots = "llama-server", int(_flag(cmd, "--parallel", "-np") or 1)
                elif "llama_cpp.server" in cmd and _flag(cmd, "--model_alias") == key:
                    kind, slots = "llama_cpp.server", 1
                else:
                    continue
                listening = [c.laddr.port for c in child.net_connections("tcp") if c.status == "LISTEN"]
                if port := int(_flag(cmd, "--port") or 0) or min(listening, default=0):
                    return {"kind": kind, "port": port, "slots": slots, "argv": cmd}
        await asyncio.sleep(0.5)
    raise RuntimeError(f"forgeflow did not start a llama.cpp server for {key}")


async def _baseline(args: argparse.Namespace, load: Load, servers: Servers, gguf: Path) -> Result:
    """llama_cpp.server, alone on the machine: throughput at each concurrency and mode; then stopped."""
    from llama_cpp.server.settings import Settings

    port, threads = _free_port(), str(args.threads)
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "bench"]
    argv += ["--n_ctx", str(args.n_ctx), "--n_threads", threads, "--n_threads_batch", threads]
    argv += ["--interrupt_requests", "false", "--host", "127.0.0.1", "--port", str(port)]
    blocked = BASELINE_ENV | {name.upper() for name in Settings.model_fields}
    servers.start("llama_cpp_server", argv, {k: v for k, v in os.environ.items() if k.upper() not in blocked})
    base = f"http://127.0.0.1:{port}"
    try:
        async with _client() as client:
            await servers.wait_ready("llama_cpp_server", client, f"{base}/v1/models")
            side = Side("llama_cpp_server", client, f"{base}/v1/chat/completions", "bench")
            await load.warm_up(side)
            results = await load.throughput([side], [(c, m) for c in args.concurrency for m in MODES])
    finally:
        servers.stop("llama_cpp_server")
    return {"command": _public(argv), "results": results}


async def _forgeflow(
    args: argparse.Namespace,
    load: Load,
    servers: Servers,
    ref: str,
    parallel: int | None,
    runs: list[tuple[int, str]],
    latency: bool,
) -> Result:
    """forgeflow and its own llama.cpp server, alternately: throughput, then c=1 latency pairs."""
    port = _free_port()
    env = servers.forgeflow_env | {
        "FORGEFLOW_SERVE__N_THREADS": str(args.threads),
        "FORGEFLOW_SERVE__N_CTX": str(args.n_ctx),
    }
    if parallel is not None:  # else the value configs/forgeflow.yaml (or the default) gives
        env["FORGEFLOW_SERVE__PARALLEL"] = str(parallel)
    argv = [str(FORGEFLOW), "serve", "--port", str(port), "--model", ref]
    api, base = servers.start("forgeflow", argv, env), f"http://127.0.0.1:{port}"
    try:
        async with _client() as ff_client, _client() as direct_client:
            await servers.wait_ready("forgeflow", ff_client, f"{base}/health")
            key = (await ff_client.get(f"{base}/models")).json()["active_model"]
            found = await _find_direct(api.pid, key)
            direct_url = f"http://127.0.0.1:{found['port']}/v1/chat/completions"
            sides = [
                Side("direct", direct_client, direct_url, key),
                Side("forgeflow", ff_client, f"{base}/v1/chat/completions", key),
            ]
            for side in sides:
                await load.warm_up(side)
            print(f"forgeflow: {found['kind']} with {found['slots']} slot(s)")
            out = {
                "command": _public(argv),
                "direct": {"kind": found["kind"], "slots": found["slots"], "command": _public(found["argv"])},
                "llama_server": found["argv"][0] if found["kind"] == "llama-server" else None,
                "results": await load.throughput(sides, runs),
            }
            if latency:
                api_proc = psutil.Process(api.pid)
                before = api_proc.cpu_times()
                out["latency_c1"] = await _latency(load, sides, args.rounds)
                after = api_proc.cpu_times()
                # forgeflow's own CPU (its llama-server child excluded) per request it relayed
                cpu_s = (after.user + after.system) - (before.user + before.system)
                out["latency_c1"]["api_cpu_ms_per_stream"] = round(
                    cpu_s * 1000 / (args.rounds * load.requests), 2
                )
    finally:
        servers.stop("forgeflow")
    return out


async def _latency(load: Load, sides: list[Side], rounds: int) -> Result:
    """Rounds of --requests interleaved direct/forgeflow stream pairs at concurrency 1."""
    runs: list[dict[str, list[Result]]] = []
    for _ in range(rounds):
        run: dict[str, list[Result]] = {side.name: [] for side in sides}
        for j in range(load.requests):
            for side in sides if j % 2 == 0 else sides[::-1]:
                run[side.name].append(await load.request(side, stream=True))
        runs.append(run)

    def p50(results: list[Result]) -> float:
        return statistics.median(r["ttft_ms"] for r in results)

    out: Result = {}
    for name in SIDES:
        results = [r for run in runs for r in run[name]]
        # one request at a time: tokens/s = tokens / the time spent in requests
        out[name] = _summary(results, sum(r["latency_ms"] for r in results) / 1000)
    per_round = [round(p50(run["forgeflow"]) - p50(run["direct"]), 2) for run in runs]
    paired = [
        f["ttft_ms"] - d["ttft_ms"]
        for run in runs
        for d, f in zip(run["direct"], run["forgeflow"], strict=True)
    ]
    return out | {
        "rounds": rounds,
        "pairs_per_round": load.requests,
        "ttft_p50_overhead_ms": round(out["forgeflow"]["ttft_p50_ms"] - out["direct"]["ttft_p50_ms"], 2),
        "ttft_paired_overhead_p50_ms": round(statistics.median(paired), 2),
        "per_round_ttft_p50_overhead_ms": {
            "values": per_round,
            "min": min(per_round),
            "max": max(per_round),
            "stdev": round(statistics.stdev(per_round), 2) if rounds > 1 else None,
        },
        "tokens_per_s_ratio": _ratio(out["forgeflow"], out["direct"]),
    }


async def _sweep(args: argparse.Namespace, load: Load, servers: Servers, ref: str) -> Result:
    """forgeflow + direct at --sweep-concurrency for each --parallel N (llama-server slots)."""
    c = args.sweep_concurrency
    out: Result = {"concurrency": c, "results": {}}
    for n in args.parallel:
        runs = [(c, mode) for mode in MODES]
        part = await _forgeflow(args, load, servers, ref, n, runs, latency=False)
        row: Result = {"slots": part["direct"]["slots"]}
        for mode, stream in MODES.items():
            keys = ("tokens_per_s", "ttft_p50_ms" if stream else "latency_p50_ms")
            row[mode] = {name: {k: part["results"][(c, mode, name)][k] for k in keys} for name in SIDES}
            row[mode]["forgeflow_vs_direct"] = _ratio(row[mode]["forgeflow"], row[mode]["direct"])
        out["results"][str(n)] = row
    speed = {n: sum(row[m]["forgeflow"]["tokens_per_s"] for m in MODES) for n, row in out["results"].items()}
    out["best_parallel_by_forgeflow_tokens_per_s"] = int(max(speed, key=speed.__getitem__))
    return out


def _ratio(a: Result, b: Result) -> float:
    return round(a["tokens_per_s"] / b["tokens_per_s"], 3)


def _goal(target: str, value: float | dict[str, float] | None) -> Result:
    """A goal, its measured value(s) and whether every one meets it (None: not measured)."""
    if value is None:
        return {"target": target, "value": None, "met": None}
    op, bound = target.split()
    values = list(value.values()) if isinstance(value, dict) else [value]
    met = all(v >= float(bound) if op == ">=" else v <= float(bound) for v in values)
    return {"target": target, "value": value, "met": met}


def _resolve(model: str) -> Path:
    """The GGUF file behind --model: a path, or an embedded model's file inside its package."""
    if model.endswith(".gguf"):
        path = Path(model).resolve()
    else:
        try:
            path = embedded_gguf(model)
        except InputError as exc:
            raise SystemExit(f"--model {model!r}: pass PATH.gguf or an embedded model ({exc})") from None
    if not path.is_file():
        raise SystemExit(f"--model {model}: {path} is not a file")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _machine(llama_server: str | None) -> Result:
    import llama_cpp

    info = {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "llama_cpp_python": llama_cpp.__version__,
        "llama_cpp_system_info": llama_cpp.llama_print_system_info().decode().strip(),
    }
    if llama_server:
        run = subprocess.run([llama_server, "--version"], capture_output=True, text=True, timeout=30)
        lines = (run.stdout + run.stderr).splitlines()
        info["llama_server_version"] = next((x for x in lines if x.startswith("version")), None)
    return info


async def _run(args: argparse.Namespace, servers: Servers, gguf: Path) -> Result:
    """Every measurement, one server process generating at a time; the report's figures."""
    load, ref = Load(args.max_tokens, args.requests), args.model
    if args.model.endswith(".gguf"):  # registered once in the workspace every forgeflow start shares
        reg = [str(FORGEFLOW), "models", "register", str(gguf), "--name", "bench"]
        subprocess.run(reg, env=servers.forgeflow_env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        ref = "bench"
    runs = [(c, mode) for c in args.concurrency for mode in MODES]
    baseline = await _baseline(args, load, servers, gguf)
    main = await _forgeflow(args, load, servers, ref, None, runs, latency=True)
    sweep = await _sweep(args, load, servers, ref) if args.parallel else None
    throughput: Result = {}
    for c, mode in runs:
        row = {"llama_cpp_server": baseline["results"][(c, mode, "llama_cpp_server")]}
        row |= {name: main["results"][(c, mode, name)] for name in SIDES}
        row["forgeflow_vs_llama_cpp_server"] = _ratio(row["forgeflow"], row["llama_cpp_server"])
        row["forgeflow_vs_direct"] = _ratio(row["forgeflow"], row["direct"])
        throughput.setdefault(f"concurrency_{c}", {})[mode] = row
    c8, latency = throughput.get("concurrency_8"), main["latency_c1"]
    return {
        "goals": {
            "c8_tokens_per_s_vs_llama_cpp_server": _goal(
                ">= 3", c8 and {m: c8[m]["forgeflow_vs_llama_cpp_server"] for m in MODES}
            ),
            "c8_tokens_per_s_vs_direct": _goal(
                ">= 0.95", c8 and {m: c8[m]["forgeflow_vs_direct"] for m in MODES}
            ),
            "c1_tokens_per_s_vs_direct": _goal(">= 0.95", latency["tokens_per_s_ratio"]),
            "ttft_p50_overhead_ms": _goal("<= 2", latency["ttft_p50_overhead_ms"]),
        },
        "servers": {
            "forgeflow": main["command"],
            "direct": main["direct"],
            "llama_cpp_server": baseline["command"],
        },
        "throughput": throughput,
        "latency_c1": latency,
        "parallel_sweep": sweep,
        "machine": _machine(main["llama_server"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="embedded model name or PATH.gguf")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads, the same on every side")
    parser.add_argument("--n-ctx", type=int, default=2048, help="context per request (llama.cpp slot)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--requests", type=int, default=16, help="requests per batch, pairs per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of concurrency-1 latency pairs")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--parallel", type=int, nargs="*", default=[], help="serve.parallel values to sweep")
    parser.add_argument("--sweep-concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serving.json")
    args = parser.parse_args()
    gguf = _resolve(args.model)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` cleans up as Ctrl-C does
    load_before = round(os.getloadavg()[0], 2)
    servers = Servers(gguf)
    try:
        figures = asyncio.run(_run(args, servers, gguf))
    except KeyboardInterrupt:
        print("interrupted: servers stopped, nothing written", file=sys.stderr)
        return 130
    finally:
        servers.close()
    figures["machine"]["load_avg_1m_before"] = load_before
    report = {
        "benchmark": "serving",
        "command": _public([".venv/bin/python", "benchmarks/serving.py", *sys.argv[1:]]),
        "model": {"ref": args.model, "file": gguf.name, "sha256": _sha256(gguf)},
        "settings": {
            "threads": args.threads,
            "n_ctx": args.n_ctx,
            "max_tokens": args.max_tokens,
            "requests": args.requests,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "temperature": 0,
        },
    } | figures
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report["goals"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
