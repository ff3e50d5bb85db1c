"""The benchmark stage: measure served models on a suite, store the run, write its report and chart.

`benchmark` drives one run: for each model, a cold request (the first after deploy when the model
was not loaded), the suite's warm-up (not measured), then every scenario at every concurrency level.
The serving processes (the process listening on the endpoint's port and its children, the
llama-servers) are sampled for CPU and RAM while each level runs. Results go to the registry
database (`BenchmarkStore`) and to `home/benchmarks/<run id>/`: results.json, results.csv,
summary.md, chart.png and every request's record (records.jsonl).

Models are benchmarked one after another, never together: on shared cores two would measure each
other. A run against forgeflow's own API checks the models in the registry first; with no API
listening, it starts `forgeflow serve` on a free loopback port for the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import psutil
from prefect import task
from prefect.cache_policies import NO_CACHE

from core.atomic import write_json, write_jsonl, write_text
from core.bench.params import BenchParams, check_base_url, is_loopback, prepare
from core.bench.records import BenchReport, ColdStart, RequestRecord, ScenarioResult, Targets
from core.bench.store import BenchmarkStore
from core.bench.suites import Suite, conversations
from core.errors import ForgeflowError
from core.gguf import inspect_gguf
from core.paths import display
from core.processes import forgeflow_command, spawn
from core.registry import Registry
from core.registry.errors import ModelNotFound
from core.serving.process import llama_server_binary
from core.settings import Settings
from tasks.benchmark.client import Load, Target, body_for, measure, run_load
from tasks.benchmark.report import markdown_summary, render_chart, to_csv
from tasks.benchmark.sampler import ProcessSampler, listening_pid
from tasks.benchmark.stats import summarize

Status = Literal["completed", "partial", "failed"]  # BenchReport.status
# progress callbacks of this process (the CLI's bar): called with what the Prefect artifact shows
LISTENERS: list[Callable[[str, int, int], None]] = []
FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    32: "BF16",
}


@dataclass
class Endpoint:
    base: str  # http://host:port (no /v1)
    own: bool  # forgeflow's API: models are registry refs
    server: subprocess.Popen[bytes] | None = None  # started for this run


class BenchmarkFailed(ForgeflowError, code="BENCHMARK_FAILED"):
    """The run could not measure anything (no server, no model)."""

    exit_code = 1


def benchmark(
    params: BenchParams,
    settings: Settings,
    run_id: str,
    progress: Callable[[str, int, int], None] | None = None,
) -> BenchReport:
    """Run the benchmark `params` describes as run `run_id`; the store and out dir record it.

    Raises:
        BenchmarkFailed: no server could be reached or started.
    """
    suite, models = prepare(params, settings)
    out = settings.home / "benchmarks" / run_id
    out.mkdir(parents=True, exist_ok=True)
    with BenchmarkStore.from_settings(settings) as store:
        store.create_run(
            run_id,
            suite=suite.name,
            models=models,
            config=params.model_dump(mode="json"),
            source=params.source,
        )
        store.set_status(run_id, "running")
    try:
        with _endpoint(params, settings) as endpoint:
            report = asyncio.run(
                _measure_all(endpoint, suite, models, params, settings, run_id, out, progress)
            )
    except BaseException as exc:
        with BenchmarkStore.from_settings(settings) as store:
            failed = isinstance(exc, Exception)
            store.set_status(
                run_id, "failed" if failed else "cancelled", error=str(exc)[:1000] or type(exc).__name__
            )
        raise
    _write_outputs(report, out)
    with BenchmarkStore.from_settings(settings) as store:
        store.add_results(run_id, report.results)
        store.set_status(run_id, report.status, info=report.info, summary=_summary(report))
    if endpoint.own:
        _record_on_models(report, settings)
    return report


@task(name="benchmark", retries=0, cache_policy=NO_CACHE)
def benchmark_task(params: BenchParams, settings: Settings, run_id: str) -> BenchReport:
    """Measure the models of `params` (see `benchmark`), with a progress artifact in the UI."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    artifact: Any = create_progress_artifact(0.0, key="benchmark-progress", description="benchmark")

    last = 0.0

    def update(what: str, done: int, total: int) -> None:
        nonlocal last
        for listener in LISTENERS:
            listener(what, done, total)
        now = time.monotonic()
        if now - last >= 1.0 or done >= total:  # the UI's bar, without a write per request
            last = now
            update_progress_artifact(artifact, 100.0 * done / max(total, 1), description=what)

    return benchmark(params, settings, run_id, update)


# --- measuring ---


async def _measure_all(
    endpoint: Endpoint,
    suite: Suite,
    models: list[str],
    params: BenchParams,
    settings: Settings,
    run_id: str,
    out: Path,
    progress: Callable[[str, int, int], None] | None,
) -> BenchReport:
    bench = settings.bench
    deadline = time.monotonic() + bench.time_bound_s
    timeout_s = params.request_timeout_s or bench.request_timeout_s
    targets = Targets(ttft_ms=bench.ttft_ms, tpot_ms=bench.tpot_ms)
    key = settings.api_key.get_secret_value() if endpoint.own and settings.api_key else None
    dataset = Path(params.dataset) if params.dataset else None
    chats = {s.name: conversations(s, dataset) for s in suite.scenarios}
    levels = [(s, c) for s in suite.scenarios for c in s.concurrency]
    total = len(models) * sum(s.requests for s, _ in levels)
    done = 0
    results: list[ScenarioResult] = []
    records: list[RequestRecord] = []
    cold: dict[str, ColdStart] = {}
    notes: list[str] = []
    host, port = _host_port(endpoint.base)
    pid = listening_pid(host, port) if is_loopback(host) else None
    if pid is None:
        notes.append("serving process not found on this machine: CPU and RAM not sampled")
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), limits=limits) as client:
        for model in models:
            target = Target(f"{endpoint.base}/v1/chat/completions", model, params.ignore_eos, key)
            first = suite.scenarios[0]
            loaded = await _loaded(client, endpoint, model, key)
            c0 = await measure(
                client,
                target,
                body_for(target, chats[first.name][0], first.max_tokens, first.temperature),
                scenario="cold",
                concurrency=1,
                index=0,
                origin=time.perf_counter(),
                timeout_s=max(timeout_s, settings.serve.start_timeout_s),
            )
            cold[model] = ColdStart(
                loaded_before=loaded,
                ok=c0.ok,
                error=c0.error,
                ttft_ms=None if c0.ttft_s is None else c0.ttft_s * 1000,
                e2e_ms=None if c0.e2e_s is None else c0.e2e_s * 1000,
            )
            for i in range(suite.warmup):
                chat = chats[first.name][(i + 1) % len(chats[first.name])]
                await measure(
                    client,
                    target,
                    body_for(target, chat, first.max_tokens, first.temperature),
                    scenario="warmup",
                    concurrency=1,
                    index=i,
                    origin=time.perf_counter(),
                    timeout_s=timeout_s,
                )
            for scenario, concurrency in levels:
                if time.monotonic() >= deadline:
                    notes.append(
                        f"time bound ({bench.time_bound_s:g} s) reached: {model} {scenario.name} "
                        f"c={concurrency} not run"
                    )
                    continue
                load = Load(
                    scenario.name,
                    chats[scenario.name],
                    scenario.max_tokens,
                    scenario.temperature,
                    scenario.requests,
                    concurrency,
                    scenario.rate,
                )

                def tick(
                    rec: RequestRecord,
                    m: str = model,
                    scenario_name: str = scenario.name,
                    c: int = concurrency,
                ) -> None:
                    nonlocal done
                    done += 1
                    if progress is not None:
                        progress(f"{m} · {scenario_name} · c={c}", done, total)

                with ProcessSampler(pid) as sampler:
                    level, wall, cut = await run_load(
                        client, target, load, timeout_s=timeout_s, deadline=deadline, on_done=tick
                    )
                records += level
                failed_transport = sum(
                    1 for r in level if r.error and not r.timed_out and "HTTP " not in r.error
                )
                level_notes = []
                if cut:
                    level_notes.append(
                        f"time bound reached: {len(level)} of {scenario.requests} requests sent"
                    )
                if failed_transport:
                    level_notes.append(f"{failed_transport} requests found no server (it died or refused)")
                results.append(
                    summarize(
                        level,
                        model=model,
                        scenario=scenario.name,
                        concurrency=concurrency,
                        max_tokens=scenario.max_tokens,
                        wall_s=wall,
                        rate=scenario.rate,
                        targets=targets,
                        partial=cut or failed_transport > 0,
                        samples=sampler.result(),
                        notes=level_notes,
                    )
                )
    partial = any(r.partial for r in results) or len(results) < len(models) * len(levels)
    status: Status = "partial" if partial else "completed"
    if not results or all(r.completed == 0 for r in results):
        status = "partial" if results else "failed"
    report = BenchReport(
        run_id=run_id,
        status=status,
        suite=suite.name,
        models=models,
        endpoint=_shown(endpoint.base),
        results=results,
        cold=cold,
        info=machine_info(endpoint, models, settings),
        notes=notes,
        out_dir=display(out),
    )
    write_jsonl(out / "records.jsonl", (r.model_dump(mode="json") for r in records))
    with contextlib.suppress(Exception):  # a chart is a convenience: its failure never loses the run
        render_chart(results, records, out / "chart.png")
    return report


async def _loaded(client: httpx.AsyncClient, endpoint: Endpoint, model: str, key: str | None) -> bool | None:
    if not endpoint.own:
        return None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        reply = await client.get(f"{endpoint.base}/models/{model}", headers=headers)
        return bool(reply.json().get("state") == "loaded") if reply.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def _host_port(base: str) -> tuple[str, int]:
    parts = urlsplit(base)
    return parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)


def _shown(base: str) -> str:
    parts = urlsplit(base)
    return (
        f"{parts.scheme}://{parts.hostname}:{parts.port}"
        if parts.port
        else f"{parts.scheme}://{parts.hostname}"
    )


# --- the server ---


@contextlib.contextmanager
def _endpoint(params: BenchParams, settings: Settings) -> Iterator[Endpoint]:
    """The endpoint a run measures: the given base URL, forgeflow's API, or one started for the run."""
    if params.base_url is not None:
        yield Endpoint(check_base_url(params.base_url, params.allow_remote), own=False)
        return
    base = settings.api_url  # the API's loopback address when it listens on every interface
    if _answers(base):
        yield Endpoint(base, own=True)
        return
    with _ephemeral_server(settings) as (started, proc):
        yield Endpoint(started, own=True, server=proc)


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def _ephemeral_server(settings: Settings) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`forgeflow serve` on a free loopback port, stopped (with its llama-servers) when the run ends."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = settings.home / "benchmarks" / "serve.log"
    env = {
        **os.environ,
        "FORGEFLOW_SERVE__HOST": "127.0.0.1",
        "FORGEFLOW_SERVE__PORT": str(port),
        "FORGEFLOW_HOME": str(settings.home.resolve()),
    }
    proc = spawn(forgeflow_command("serve"), log, env=env, cwd=settings.home)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + settings.serve.start_timeout_s
        while not _answers(base):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchmarkFailed(
                    f"`forgeflow serve` for the benchmark did not start: see {display(log)}"
                )
            time.sleep(0.3)
        yield base, proc
    finally:
        _stop_tree(proc)


def _stop_tree(proc: subprocess.Popen[bytes]) -> None:
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        children = []
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()


# --- what a run knows about the machine and the models ---


def machine_info(endpoint: Endpoint, models: list[str], settings: Settings) -> dict[str, Any]:
    """Hardware and software facts for the run's record: CPU, cores, RAM, llama.cpp, the models' files."""
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "endpoint": _shown(endpoint.base),
        "llama_cpp": _llama_cpp_version(settings),
        "models": {},
    }
    if endpoint.own:
        with Registry.from_settings(settings) as registry:
            for key in models:
                found = registry.find(key)
                gguf = found.artifacts.get("gguf") if found is not None else None
                entry: dict[str, Any] = {"sha256": gguf.sha256 if gguf else None, "quantization": None}
                if gguf is not None:
                    with contextlib.suppress(Exception):
                        ftype = inspect_gguf(Path(gguf.path)).metadata.get("general.file_type")
                        entry["quantization"] = (
                            FILE_TYPES.get(int(ftype), str(ftype)) if ftype is not None else None
                        )
                info["models"][key] = entry
    return info


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _llama_cpp_version(settings: Settings) -> str | None:
    binary = llama_server_binary(settings.serve.llama_server)
    if binary is None:
        return None
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.startswith("version")]
    return lines[0].split(":", 1)[1].strip() if lines else None


# --- outputs ---


def _summary(report: BenchReport) -> dict[str, Any]:
    return {"status": report.status, "models": report.per_model()}


def _write_outputs(report: BenchReport, out: Path) -> None:
    write_json(out / "results.json", report.model_dump(mode="json"))
    write_text(out / "results.csv", to_csv(report.results))
    meta = {
        "run": report.run_id,
        "status": report.status,
        "endpoint": report.endpoint,
        **{k: v for k, v in report.info.items() if k not in ("models", "endpoint")},
    }
    summary = markdown_summary(f"Benchmark `{report.suite}`", report.results, meta)
    loaded = {True: "was loaded", False: "loaded for it", None: "load state unknown"}
    cold = "\n".join(
        f"- cold start of `{m}`: TTFT {_ms(c.ttft_ms)}, e2e {_ms(c.e2e_ms)} ({loaded[c.loaded_before]})"
        for m, c in report.cold.items()
    )
    notes = "\n".join(f"- {n}" for n in report.notes)
    write_text(
        out / "summary.md",
        summary
        + ("\n\n## Cold start\n" + cold if cold else "")
        + ("\n\n## Notes\n" + notes if notes else "")
        + "\n",
    )


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.0f} ms"


def _record_on_models(report: BenchReport, settings: Settings) -> None:
    summary = _summary(report)["models"]
    with Registry.from_settings(settings) as registry:
        for model in report.models:
            if summary.get(model) is None:
                continue
            with contextlib.suppress(ModelNotFound):
                registry.merge_metrics(
                    model, {"benchmark": {"run_id": report.run_id, "suite": report.suite, **summary[model]}}
                )
