"""Serving while training: the champion's chat latency while a fine-tune runs on the same cores.

Usage: .venv/bin/python benchmarks/serving_during_training.py [--gguf PATH.gguf] [--data DIR]
       [--work /tmp/sdt] [--streams 4] [--max-tokens 64] [--idle-s 60] [--max-steps 30]
       [--phases idle idle_shared train train_shared] [--out benchmarks/results/serving_during_training.json]

The GGUF is registered once (as `champion`) in a workspace of its own (--work/ws); each phase starts a
fresh `forgeflow serve --model champion`, and a training phase a `forgeflow finetune` beside it:
- idle: serving alone, default settings (cpu.shared off: llama.cpp on every core);
- idle_shared: serving alone with FORGEFLOW_CPU__SHARED=true (llama.cpp on cpu.serve_threads): what the
  split costs serving when nothing else runs;
- train: serving while training runs, neither budgeted (cpu.shared off for both processes);
- train_shared: both processes with FORGEFLOW_CPU__SHARED=true: llama.cpp on cpu.serve_threads, torch on
  the other cores at niceness cpu.train_nice (core.cpu).

Load: --streams clients, each streaming /v1/chat/completions back to back (greedy, distinct prompts,
--max-tokens). Idle phases measure for --idle-s; a training phase starts measuring once the run is
training (its run.json is written once the data is tokenized, then --settle-s for the model to load)
and keeps the load on until training ends, so the run's tokens/s (train.json: trainer time only) is
the speed under this load. Gaps after training ended are left out.

Figures per phase: TTFT (send -> first content chunk) and inter-token latency (the gap between
consecutive content chunks; llama-server sends one token per chunk) p50/p95; streamed tokens/s of all
clients together; CPU seconds the API, its llama-server and the training process used in the window;
the llama-server's `--threads`, the training process's niceness (every thread) and thread count.
On a machine with 2 cores, anything else running moves every figure: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
FORGEFLOW = ROOT / ".venv" / "bin" / "forgeflow"
PHASES = ("idle", "idle_shared", "train", "train_shared")
MODEL_NAME = "champion"
SUBJECTS = [
    "a git rebase",
    "reversing a string in Python",
    "a LoRA adapter",
    "unit tests",
    "a Python context manager",
    "HTTP caching",
    "a hash map",
    "reading a file line by line",
    "a race condition",
    "JSON",
    "a binary search",
    "a Python decorator",
]
ASKS = ["Explain {}.", "Write a short note about {}.", "What should a new programmer know about {}?"]
Result = dict[str, Any]


# --- statistics ---


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 2)


@dataclass
class Stream:
    """One streamed chat as the client saw it."""

    sent: float
    stamps: list[float] = field(default_factory=list)  # arrival of each content chunk
    tokens: int = 0  # completion tokens (usage), else content chunks
    error: str | None = None


def summarize(streams: list[Stream], start: float, end: float) -> Result:
    """TTFT and inter-token figures of the streams sent in [start, end), gaps ending after `end` cut."""
    ok = [s for s in streams if s.error is None and start <= s.sent < end]
    ttft = [(s.stamps[0] - s.sent) * 1000 for s in ok if s.stamps and s.stamps[0] <= end]
    gaps = [(b - a) * 1000 for s in ok for a, b in zip(s.stamps, s.stamps[1:], strict=False) if b <= end]
    chunks = sum(1 for s in ok for t in s.stamps if t <= end)
    seconds = end - start
    return {
        "requests": len(ok),
        "errors": sum(1 for s in streams if s.error is not None),
        "first_error": next((s.error for s in streams if s.error), None),
        "ttft_ms": {"p50": pct(ttft, 0.5), "p95": pct(ttft, 0.95), "n": len(ttft)},
        "inter_token_ms": {
            "p50": pct(gaps, 0.5),
            "p95": pct(gaps, 0.95),
            "mean": round(statistics.fmean(gaps), 2) if gaps else None,
            "n": len(gaps),
        },
        "window_s": round(seconds, 1),
        "streamed_tokens_per_s": round(chunks / seconds, 2) if seconds > 0 else None,
        "completion_tokens_per_request": round(statistics.fmean(s.tokens for s in ok), 1) if ok else None,
    }


# --- load ---


class Load:
    """`streams` clients streaming chats back to back until told to stop."""

    def __init__(self, base: str, model: str, streams: int, max_tokens: int) -> None:
        self.url, self.model = f"{base}/v1/chat/completions", model
        self.streams, self.max_tokens = streams, max_tokens
        self._n = 0
        self.results: list[Stream] = []

    def _prompt(self) -> str:
        self._n += 1  # a new prompt each time: no request finds its prompt in a slot's cache
        i = self._n
        return f"{ASKS[i % len(ASKS)].format(SUBJECTS[(i // len(ASKS)) % len(SUBJECTS)])} (#{i})"

    async def one(self, client: httpx.AsyncClient, max_tokens: int | None = None) -> Stream:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": self._prompt()}],
            "max_tokens": max_tokens or self.max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        stream = Stream(sent=time.perf_counter())
        try:
            async with client.stream("POST", self.url, json=body) as r:
                if r.status_code != 200:
                    stream.error = f"{r.status_code} {(await r.aread())[:200]!r}"
                    return stream
                async for line in r.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    choices = chunk.get("choices") or []
                    if choices and (choices[0].get("delta") or {}).get("content"):
                        stream.stamps.append(time.perf_counter())
                    if chunk.get("usage"):
                        stream.tokens = int(chunk["usage"]["completion_tokens"])
        except httpx.HTTPError as exc:
            stream.error = f"{type(exc).__name__}: {exc}"
        stream.tokens = stream.tokens or len(stream.stamps)
        return stream

    async def run(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        async def worker() -> None:
            while not stop.is_set():
                self.results.append(await self.one(client))

        await asyncio.gather(*(worker() for _ in range(self.streams)))


def _client() -> httpx.AsyncClient:
    # keep-alive, as a real client; expire before uvicorn closes an idle connection (5 s)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=4)
    return httpx.AsyncClient(timeout=900, limits=limits, trust_env=False)


# --- processes ---


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    sys.path.insert(0, str(ROOT))
    from core.processes import spawn

    log.unlink(missing_ok=True)  # one phase, one log
    return spawn(argv, log, env=env, cwd=ROOT)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT, timeout: float = 30) -> None:
    """End a process we started (SIGINT: forgeflow stops its llama-servers), then its leftovers."""
    if proc.poll() is not None:
        return
    descendants: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        descendants = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for child in descendants:
        with contextlib.suppress(psutil.Error):
            child.kill()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, n: int = 1500) -> str:
    return path.read_text(errors="replace")[-n:] if path.is_file() else ""


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def _llama_server(api: subprocess.Popen[bytes]) -> psutil.Process | None:
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(api.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "llama-server" in Path(child.cmdline()[0]).name:
                    return child
    return None


def _cpu_s(proc: psutil.Process | None) -> float | None:
    """CPU seconds of a process and its children so far (None once it is gone)."""
    if proc is None:
        return None
    try:
        total = proc.cpu_times().user + proc.cpu_times().system
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.cpu_times().user + child.cpu_times().system
        return total
    except psutil.Error:
        return None


def _busy_s() -> float:
    """CPU seconds the whole machine has spent busy (not idle, not waiting on I/O)."""
    t = psutil.cpu_times()
    return float(t.user + t.system + sum(getattr(t, f, 0.0) for f in ("nice", "irq", "softirq")))


def _own_cpu_s() -> float:
    """CPU seconds of this process alone (the load generator), its children left out."""
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


def _thread_nices(pid: int) -> list[int]:
    """The niceness of each thread of `pid` (Linux keeps one per thread), from /proc."""
    nices = []
    for task in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            nices.append(int(task.read_text().rsplit(")", 1)[1].split()[16]))
    return nices


# --- phases ---


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work: Path = args.work
        self.work.mkdir(parents=True, exist_ok=True)
        self.train_command = ""
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("FORGEFLOW_", "OMP_", "MKL_"))}
        self.env = clean | {
            "FORGEFLOW_HOME": str(self.work / "ws"),
            "FORGEFLOW_ALLOWED_ROOTS": json.dumps(
                sorted({str(ROOT), str(self.work), str(args.gguf.parent), str(args.data.resolve())})
            ),
            "FORGEFLOW_SERVE__REQUEST_TIMEOUT_S": "900",  # a starved stream is slow, not failed
        }
        if args.config is not None:  # else the project's configs/forgeflow.yaml
            self.env["FORGEFLOW_CONFIG"] = str(args.config)

    def env_for(self, shared: bool) -> dict[str, str]:
        return self.env | {"FORGEFLOW_CPU__SHARED": "true" if shared else "false"}

    def register(self) -> None:
        argv = [str(FORGEFLOW), "models", "register", str(self.args.gguf), "--name", MODEL_NAME]
        subprocess.run(argv, env=self.env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, timeout=600)

    async def phase(self, name: str) -> Result:
        shared, training = name.endswith("_shared"), name.startswith("train")
        env, port = self.env_for(shared), _free_port()
        base = f"http://127.0.0.1:{port}"
        api_argv = [str(FORGEFLOW), "serve", "--port", str(port), "--model", MODEL_NAME]
        api = start(api_argv, env, self.work / f"api-{name}.log")
        train: subprocess.Popen[bytes] | None = None
        try:
            async with _client() as client:
                await self._wait_api(api, client, base, self.work / f"api-{name}.log")
                key = (await client.get(f"{base}/models")).json()["active_model"]
                load = Load(base, key, self.args.streams, self.args.max_tokens)
                for _ in range(2):  # page the model in, open the pool's connections
                    await asyncio.gather(*(load.one(client, 8) for _ in range(self.args.streams)))
                server = _llama_server(api)
                serve_argv = server.cmdline() if server else []
                out: Result = {
                    "cpu_shared": shared,
                    "llama_server_threads": _flag(serve_argv, "--threads"),
                    "llama_server_threads_batch": _flag(serve_argv, "--threads-batch"),
                }
                run_dir = self.work / f"run-{name}"
                if training:
                    train = self._start_training(run_dir, env, self.work / f"train-{name}.log")
                    out["training_wait_s"] = await self._wait_training(train, run_dir)
                    await asyncio.sleep(self.args.settle_s)
                    if train.poll() is not None:
                        raise RuntimeError(
                            f"training exited early:\n{_tail(self.work / f'train-{name}.log')}"
                        )
                out |= await self._measure(load, client, api, server, train)
            if train is not None:
                out["training"] = self._training_result(train, run_dir, self.work / f"train-{name}.log")
        finally:
            if train is not None:
                stop(train, signal.SIGTERM)
            stop(api)
        return out

    async def _wait_api(
        self, api: subprocess.Popen[bytes], client: httpx.AsyncClient, base: str, log: Path
    ) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if api.poll() is not None:
                raise RuntimeError(f"forgeflow serve exited ({api.returncode}):\n{_tail(log)}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                r = await client.get(f"{base}/models", timeout=2)
                if r.status_code == 200 and r.json().get("active_model"):
                    return
            await asyncio.sleep(0.5)
        raise RuntimeError(f"forgeflow serve did not come up:\n{_tail(log)}")

    def _start_training(self, run_dir: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        argv = [str(FORGEFLOW), "finetune", "--data", str(self.args.data), "--out", str(run_dir)]
        argv += ["--profile", self.args.profile, "--max-steps", str(self.args.max_steps), "--overwrite"]
        self.train_command = shlex.join([".venv/bin/forgeflow", *argv[1:]])
        with contextlib.suppress(FileNotFoundError):
            (run_dir / "run.json").unlink()  # a previous run's: only the one this run writes counts
        return start(argv, env, log)

    async def _wait_training(self, train: subprocess.Popen[bytes], run_dir: Path) -> float:
        """Seconds until the run has tokenized its data and goes on to load the model (run.json)."""
        started, deadline = time.monotonic(), time.monotonic() + self.args.start_timeout_s
        while time.monotonic() < deadline:
            if (run_dir / "run.json").is_file():
                return round(time.monotonic() - started, 1)
            if train.poll() is not None:
                raise RuntimeError(f"training exited ({train.returncode}) before it started")
            await asyncio.sleep(0.5)
        raise RuntimeError(f"training did not start within {self.args.start_timeout_s} s")

    async def _measure(
        self,
        load: Load,
        client: httpx.AsyncClient,
        api: subprocess.Popen[bytes],
        server: psutil.Process | None,
        train: subprocess.Popen[bytes] | None,
    ) -> Result:
        stop_load = asyncio.Event()
        api_proc = psutil.Process(api.pid)
        train_proc = psutil.Process(train.pid) if train else None
        before = {"api": api_proc.cpu_times(), "server": _cpu_s(server), "training": _cpu_s(train_proc)}
        busy_before, ours_before = _busy_s(), _own_cpu_s()
        train_cpu = before["training"]
        sampled: Result = {}
        start_t = time.perf_counter()
        runner = asyncio.create_task(load.run(client, stop_load))
        deadline = start_t + (self.args.train_timeout_s if train else self.args.idle_s)
        end_t = deadline
        while time.perf_counter() < deadline:
            await asyncio.sleep(0.5)
            if train is not None and train_proc is not None:
                if train.poll() is not None:
                    end_t = time.perf_counter()
                    break
                train_cpu = _cpu_s(train_proc) or train_cpu
                if not sampled and time.perf_counter() - start_t > 10:
                    with contextlib.suppress(psutil.Error):
                        nices = _thread_nices(train.pid)
                        sampled = {
                            "nice_min": min(nices),
                            "nice_max": max(nices),
                            "threads": train_proc.num_threads(),
                        }
        stop_load.set()
        server_cpu = _cpu_s(server)
        busy_after, ours_after = _busy_s(), _own_cpu_s()
        api_after = api_proc.cpu_times()
        await runner  # in-flight streams finish; their gaps after end_t are cut
        seconds = end_t - start_t
        cpu = {
            "api": round(api_after.user + api_after.system - before["api"].user - before["api"].system, 1),
            "llama_server": round(server_cpu - before["server"], 1)
            if server_cpu is not None and before["server"] is not None
            else None,
        }
        if train is not None and train_cpu is not None and before["training"] is not None:
            cpu["training"] = round(train_cpu - before["training"], 1)
        # the machine's busy CPU time less this benchmark's processes (API, llama-server, training,
        # this load generator): other work sharing the cores, which moves every figure
        ours = sum(v for v in cpu.values() if v is not None) + ours_after - ours_before
        cpu["other_processes"] = round(max(0.0, busy_after - busy_before - ours), 1)
        out = summarize(load.results, start_t, end_t)
        out["cpu_seconds_in_window"] = cpu
        out["cpu_share_in_window"] = {k: round(v / seconds, 2) for k, v in cpu.items() if v is not None}
        if train is not None:
            out["training_process"] = sampled
            out["training_ended_in_window"] = end_t < deadline
        return out

    def _training_result(self, train: subprocess.Popen[bytes], run_dir: Path, log: Path) -> Result:
        try:
            rc = train.wait(timeout=600)
        except subprocess.TimeoutExpired:  # stopped by the caller; what it had done is in its checkpoints
            return {"error": "still running after the measurement", "progress": _progress(run_dir)}
        manifest = run_dir / "train.json"
        if rc != 0 or not manifest.is_file():
            return {"error": f"exit code {rc}", "log_tail": _tail(log)}
        report = json.loads(manifest.read_text())
        keys = ("steps", "tokens", "tokens_per_second", "runtime_seconds", "final_loss", "peak_memory_mb")
        return {k: report.get(k) for k in keys} | {"command": self.train_command}


def _progress(run_dir: Path) -> Result | None:
    """Steps and tokens of a run's newest checkpoint (Trainer's own state), for a run cut short."""
    states = sorted(
        (run_dir / "checkpoints").glob("checkpoint-*/trainer_state.json"),
        key=lambda f: int(f.parent.name.rsplit("-", 1)[1]),
    )
    if not states:
        return None
    state = json.loads(states[-1].read_text())
    last = state["log_history"][-1] if state.get("log_history") else {}
    return {
        "steps": state.get("global_step"),
        "tokens": state.get("num_input_tokens_seen"),
        "tokens_per_second": last.get("train_tokens_per_second"),
    }


# --- report ---


def _machine() -> Result:
    import torch

    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
    }


def _settings(args: argparse.Namespace) -> Result:
    sys.path.insert(0, str(ROOT))
    from core.settings import load_settings

    if args.config is not None:
        os.environ["FORGEFLOW_CONFIG"] = str(args.config)
    s = load_settings()  # the main config file and code defaults, as the phases' processes read them
    return {
        "config": str(args.config) if args.config else "configs/forgeflow.yaml",
        "cpu": s.cpu.model_dump(),
        "serve_parallel": s.serve.parallel,
        "serve_n_threads": s.serve.n_threads,
        "streams": args.streams,
        "max_tokens": args.max_tokens,
        "temperature": 0,
        "idle_s": args.idle_s,
        "settle_s": args.settle_s,
        "profile": args.profile,
        "max_steps": args.max_steps,
    }


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.0f}" if isinstance(v, float) and v >= 100 else str(v)


def _train_speed(training: Result | None) -> str:
    """The run's tokens/s; of its newest checkpoint, marked `(cut)`, for a run stopped early."""
    if not training:
        return "-"
    if "tokens_per_second" in training:
        return _fmt(training["tokens_per_second"])
    speed = (training.get("progress") or {}).get("tokens_per_second")
    return "-" if speed is None else f"{_fmt(speed)} (cut)"


def table(phases: Result) -> str:
    head = (
        "phase", "llama thr", "train nice", "reqs", "TTFT p50", "TTFT p95",
        "ITL p50", "ITL p95", "stream tok/s", "train tok/s", "other CPU",
    )  # fmt: skip
    rows = [head]
    for name, p in phases.items():
        tp = p.get("training_process") or {}
        rows.append((
            name,
            _fmt(p.get("llama_server_threads")),
            _fmt(tp.get("nice_min")) if tp else "-",
            _fmt(p["requests"]),
            _fmt(p["ttft_ms"]["p50"]),
            _fmt(p["ttft_ms"]["p95"]),
            _fmt(p["inter_token_ms"]["p50"]),
            _fmt(p["inter_token_ms"]["p95"]),
            _fmt(p["streamed_tokens_per_s"]),
            _train_speed(p.get("training")),
            _fmt(p["cpu_share_in_window"].get("other_processes")),
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = "times in ms; ITL = inter-token latency; other CPU = cores' worth busy with other work"
    return "\n".join(lines) + f"\n({notes})"


async def _run(args: argparse.Namespace, write: Any) -> Result:
    bench = Bench(args)
    bench.register()
    phases: Result = {}
    for name in args.phases:
        print(f"phase {name} ...", flush=True)
        phases[name] = await bench.phase(name)
        write(phases, complete=False)  # a cut-short run keeps the phases it finished
        p, trained = phases[name], phases[name].get("training") or {}
        print(
            f"  TTFT p50 {p['ttft_ms']['p50']} ms, ITL p50 {p['inter_token_ms']['p50']} ms "
            f"p95 {p['inter_token_ms']['p95']} ms, train {trained.get('tokens_per_second')} tok/s",
            flush=True,
        )
    return phases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, default=ROOT / ".forgeflow/runs/latest/export/model-q4_k_m.gguf")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "dataset", help="training dataset")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sdt"), help="workspace, run dirs, logs")
    parser.add_argument("--streams", type=int, default=4, help="concurrent streaming clients")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--idle-s", type=float, default=60, help="measurement window of an idle phase")
    parser.add_argument("--settle-s", type=float, default=20, help="after run.json: the model loads")
    parser.add_argument("--start-timeout-s", type=float, default=900, help="training must start by then")
    parser.add_argument("--train-timeout-s", type=float, default=3600, help="longest training window")
    parser.add_argument("--profile", default="cpu-quick")
    parser.add_argument("--config", type=Path, help="main config file (FORGEFLOW_CONFIG) of every process")
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/serving_during_training.json")
    args = parser.parse_args()
    args.gguf, args.data, args.work = args.gguf.resolve(), args.data.resolve(), args.work.resolve()
    if not args.gguf.is_file():
        raise SystemExit(f"--gguf {args.gguf} is not a file (export a model first)")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` cleans up as Ctrl-C does
    load_before = round(os.getloadavg()[0], 2)
    started = time.time()

    def write(phases: Result, complete: bool) -> None:
        report = {
            "benchmark": "serving_during_training",
            "command": shlex.join(
                [".venv/bin/python", "benchmarks/serving_during_training.py", *sys.argv[1:]]
            ),
            "complete": complete,
            "model": {"file": args.gguf.name, "bytes": args.gguf.stat().st_size},
            "settings": _settings(args),
            "phases": phases,
            "machine": _machine() | {"load_avg_1m_before": load_before},
            "duration_s": round(time.time() - started, 1),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    try:
        phases = asyncio.run(_run(args, write))
    except KeyboardInterrupt:
        print(f"interrupted: processes stopped; finished phases are in {args.out}", file=sys.stderr)
        return 130
    write(phases, complete=True)
    print(table(phases))
    print(f"written: {args.out}; logs and run dirs in {args.work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
