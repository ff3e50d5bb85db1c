"""A benchmark run against real llama.cpp serving the tiny GGUF: figures that hold together, real
overlap under concurrency, a dead backend ending the run as partial (not a hang), bad input refused."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.bench.params import BenchParams, RemoteNotAllowed, check_base_url, prepare
from core.bench.store import BenchmarkStore
from core.bench.suites import SuiteNotFound, load_suite, parse_suite
from core.errors import InputError
from core.registry.errors import ModelNotFound
from core.serving.process import llama_server_binary
from core.settings import Settings
from tasks.benchmark.run import benchmark
from tests.helpers.api_server import api_settings, free_port, running_api, tiny_workspace

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path) -> Iterator[Settings]:
    """forgeflow's API on a free port, serving the registry's tiny 1.0.0 / 1.1.0 through llama.cpp."""
    root = tiny_workspace(tmp_path_factory.mktemp("bench"), tiny_gguf)
    port = free_port()
    settings = api_settings(root)
    settings = settings.model_copy(update={"serve": settings.serve.model_copy(update={"port": port})})
    with running_api(settings, port=port) as url:
        assert url.endswith(f":{port}")
        yield settings


def _run(settings: Settings, **params: object) -> tuple[object, Path]:
    run_id = str(uuid.uuid4())
    report = benchmark(BenchParams(**params), settings, run_id)  # type: ignore[arg-type]
    return report, settings.home / "benchmarks" / run_id


@pytest.mark.integration
def test_a_run_measures_consistent_figures_from_the_servers_usage(served: Settings) -> None:
    report, out = _run(
        served,
        models=["tiny:1.0.0"],
        suite="default",
        scenarios=["short-qa"],
        concurrency=[1, 4],
        requests=8,
        max_tokens=12,
        warmup=1,
    )
    assert report.status == "completed", report.notes  # type: ignore[attr-defined]
    results = report.results  # type: ignore[attr-defined]
    assert [(r.scenario, r.concurrency) for r in results] == [("short-qa", 1), ("short-qa", 4)]
    for r in results:
        assert r.completed == r.requests == 8 and r.errors == r.timeouts == 0
        for dist in (r.ttft_ms, r.e2e_ms, r.itl_ms):
            present = [v for v in (dist.p50, dist.p90, dist.p95, dist.p99) if v is not None]
            assert present == sorted(present) and dist.min <= dist.p50 <= dist.max
        assert "p99" in r.e2e_ms.insufficient and r.e2e_ms.p99 is None  # 8 samples: no p99, not the max
        assert r.usage_missing == 0 and r.output_tokens.min == r.output_tokens.max == 12  # ignore_eos: exact
        assert r.cross_check is not None and r.cross_check.server_tokens_match == r.completed
        assert r.cpu_avg is not None and r.ram_avg_mb is not None and r.ram_avg_mb > 10
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 16
    for rec in records:
        assert rec["output_tokens"] == 12  # the server's usage, not the chunk count
        tpot = (rec["e2e_s"] - rec["ttft_s"]) / (rec["output_tokens"] - 1)
        assert len(rec["itl_s"]) == rec["chunks"] - 1
        assert tpot > 0
    c1 = results[0]
    expected = [(r["e2e_s"] - r["ttft_s"]) / 11 * 1000 for r in records if r["concurrency"] == 1]
    assert c1.tpot_ms.mean == pytest.approx(sum(expected) / len(expected))
    # concurrency overlaps requests: the level's wall time is well under the sum of its latencies
    c4 = [r for r in records if r["concurrency"] == 4]
    assert results[1].wall_s < 0.75 * sum(r["e2e_s"] for r in c4)
    # stored, exported and drawn
    with BenchmarkStore.from_settings(served) as store:
        run = store.get_run(report.run_id)  # type: ignore[attr-defined]
        assert run is not None and run.status == "completed" and run.info["cpu_model"]
        assert (
            run.info["models"]["tiny:1.0.0"]["sha256"]
            and run.info["models"]["tiny:1.0.0"]["quantization"] == "F16"
        )
        assert len(store.results(run_id=run.id)) == 2
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text(), newline="")))
    assert [int(r["concurrency"]) for r in rows] == [1, 4]
    assert float(rows[1]["output_throughput"]) == pytest.approx(results[1].output_throughput)
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "tiny:1.0.0" in (out / "summary.md").read_text()
    assert report.cold["tiny:1.0.0"].ok  # type: ignore[attr-defined]


@pytest.mark.integration
def test_two_models_are_compared_and_the_results_recorded_on_each_version(served: Settings) -> None:
    report, out = _run(
        served,
        models=["tiny:1.0.0", "tiny:champion"],
        suite="default",
        scenarios=["short-qa"],
        concurrency=[1],
        requests=3,
        max_tokens=6,
        warmup=0,
    )
    assert report.models == ["tiny:1.0.0", "tiny:1.1.0"]  # type: ignore[attr-defined]
    assert {r.model for r in report.results} == {"tiny:1.0.0", "tiny:1.1.0"}  # type: ignore[attr-defined]
    from core.registry import Registry

    with Registry.from_settings(served) as registry:
        for key in ("tiny:1.0.0", "tiny:1.1.0"):
            assert registry.resolve(key).metrics["benchmark"]["run_id"] == report.run_id  # type: ignore[attr-defined]
    summary = (out / "summary.md").read_text()
    assert "tiny:1.0.0" in summary and "tiny:1.1.0" in summary


@pytest.fixture
def doomed_server(tiny_gguf: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    binary = llama_server_binary()
    assert binary is not None
    port = free_port()
    proc = subprocess.Popen(
        [
            str(binary),
            "-m",
            str(tiny_gguf),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-c",
            "1024",
            "-np",
            "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import httpx

    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None, "llama-server did not start"
        time.sleep(0.2)
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.integration  # starts (and kills) a llama-server process
def test_a_backend_that_dies_mid_run_gives_errors_and_a_partial_run(
    served: Settings, doomed_server: tuple[str, subprocess.Popen[bytes]]
) -> None:
    url, proc = doomed_server
    killer = threading.Timer(2.0, proc.kill)
    killer.start()
    started = time.monotonic()
    try:
        report, _ = _run(
            served,
            models=["tiny"],
            base_url=url,
            suite="default",
            scenarios=["short-qa"],
            concurrency=[2],
            requests=400,
            max_tokens=48,
            warmup=0,
        )
    finally:
        killer.cancel()
    assert time.monotonic() - started < 120  # ended, not hung
    (level,) = report.results  # type: ignore[attr-defined]
    assert report.status == "partial" and level.partial  # type: ignore[attr-defined]
    assert level.completed > 0 and level.errors > 0 and level.errors + level.completed + level.timeouts == 400
    assert any("no server" in n for n in level.notes)
    with BenchmarkStore.from_settings(served) as store:
        assert store.get_run(report.run_id).status == "partial"  # type: ignore[attr-defined,union-attr]


def test_bad_input_is_refused_before_a_run(served: Settings, tmp_path: Path) -> None:
    with pytest.raises(SuiteNotFound):
        load_suite("no-such-suite")
    with pytest.raises(InputError, match="not a suite name"):
        load_suite("../forgeflow")
    with pytest.raises(ModelNotFound):
        prepare(BenchParams(models=["nope:1.0.0"]), served)
    with pytest.raises(RemoteNotAllowed):
        check_base_url("http://10.1.2.3:8080/v1", allow_remote=False)
    assert check_base_url("http://10.1.2.3:8080/v1/", allow_remote=True) == "http://10.1.2.3:8080"
    with pytest.raises(InputError, match="pass a dataset"):
        prepare(BenchParams(models=["tiny"], suite="repo"), served)
    with pytest.raises(InputError, match="has no scenario"):
        prepare(BenchParams(models=["tiny"], scenarios=["nope"]), served)
    bad = tmp_path / "typo.yaml"
    bad.write_text("scenarios:\n  - name: a\n    prompts: [hi]\n    max_tokns: 3\n")
    with pytest.raises(InputError, match="max_tokns"):
        parse_suite("typo", bad)
    with BenchmarkStore.from_settings(served) as store:
        before = store.list_runs()[1]
    with pytest.raises(ModelNotFound):
        benchmark(BenchParams(models=["nope"]), served, str(uuid.uuid4()))
    with BenchmarkStore.from_settings(served) as store:
        assert store.list_runs()[1] == before  # nothing half-made


def test_the_shipped_suites_load() -> None:
    for name in ("default", "repo"):
        suite = load_suite(name)
        assert suite.scenarios
    assert {s.name for s in load_suite("default").scenarios} == {"short-qa", "code-explain", "long-context"}
