"""The benchmarks API over HTTP on the real stack: a run is a Prefect flow run of `benchmark/benchmark`,
its results come back from the registry database, exports and chart from the run's files."""

from __future__ import annotations

import csv
import io
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.stack import Stack

TERMINAL = {"completed", "partial", "failed", "cancelled"}


@pytest.fixture(scope="module")
def bench_model(stack: Stack, jobs_root: Path, tiny_gguf: Path) -> str:
    target = jobs_root / "bench-tiny.gguf"
    shutil.copyfile(tiny_gguf, target)
    reply = httpx.post(f"{stack.api}/models", json={"path": str(target), "name": "benchtiny"}, timeout=60)
    assert reply.status_code == 201, reply.text
    return "benchtiny"


def _wait(stack: Stack, run_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        detail = httpx.get(f"{stack.api}/benchmarks/runs/{run_id}", timeout=30).json()
        if detail["run"]["status"] in TERMINAL:
            return dict(detail)
        assert time.monotonic() < deadline, detail["run"]
        time.sleep(1)


def test_a_run_started_over_http_measures_stores_and_exports(stack: Stack, bench_model: str) -> None:
    body = {
        "modelIds": [bench_model],
        "suiteName": "default",
        "config": {
            "iterations": 4,
            "concurrency": [1, 2],
            "max_tokens": 8,
            "warmup": 0,
            "scenarios": ["short-qa"],
        },
    }
    started = httpx.post(f"{stack.api}/benchmarks/run", json=body, timeout=60)
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    detail = _wait(stack, run_id)
    assert detail["run"]["status"] == "completed", detail["run"]
    assert detail["run"]["model_ids"] == [f"{bench_model}:1.0.0"] and detail["run"]["source"] == "api"
    assert detail["run"]["hardware_info"]["cpu_model"]
    results = detail["results"]
    assert [(r["scenario"], r["concurrency"]) for r in results] == [("short-qa", 1), ("short-qa", 2)]
    for r in results:
        assert r["tps"] > 0 and r["ttft"] > 0 and r["latency_p50"] >= r["ttft"]
        assert r["latency_p99"] is None  # four requests cannot give a p99
        assert r["error_rate"] == 0 and r["metrics"]["output_tokens"]["max"] == 8
    listed = httpx.get(f"{stack.api}/benchmarks/runs", timeout=30).json()
    assert run_id in [r["id"] for r in listed["runs"]]
    by_run = httpx.get(f"{stack.api}/benchmarks/results", params={"runId": run_id}, timeout=30).json()
    assert len(by_run["results"]) == 2
    by_model = httpx.get(
        f"{stack.api}/benchmarks/results", params={"modelId": f"{bench_model}:1.0.0"}, timeout=30
    )
    assert {r["run_id"] for r in by_model.json()["results"]} >= {run_id}
    as_csv = httpx.get(f"{stack.api}/benchmarks/runs/{run_id}/export/csv", timeout=30)
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text, newline="")))
    assert [r["concurrency"] for r in rows] == ["1", "2"]
    as_json = httpx.get(f"{stack.api}/benchmarks/runs/{run_id}/export/json", timeout=30).json()
    assert as_json["run_id"] == run_id and len(as_json["results"]) == 2
    chart = httpx.get(f"{stack.api}/benchmarks/runs/{run_id}/chart.png", timeout=30)
    assert chart.status_code == 200 and chart.content[:4] == b"\x89PNG"
    logs = httpx.get(f"{stack.api}/benchmarks/runs/{run_id}/logs", params={"limit": 50}, timeout=30).json()
    assert logs["logs"], "the flow run's logs"
    stats = httpx.get(f"{stack.api}/system/stats", timeout=30).json()
    assert stats["totalRuns"] >= 1 and stats["totalModels"] >= 1
    assert stats["bestTpsModel"]["modelId"] and stats["lastRun"]["id"]
    suites = httpx.get(f"{stack.api}/benchmarks/suites", timeout=30).json()["suites"]
    assert {"default", "repo"} <= {s["name"] for s in suites}


def test_bad_benchmark_requests_are_refused_before_a_run_exists(stack: Stack, bench_model: str) -> None:
    before = httpx.get(f"{stack.api}/benchmarks/runs", timeout=30).json()["total"]
    cases = [
        ({"modelIds": ["no-such-model"]}, 404),
        ({"modelIds": [bench_model], "suiteName": "no-such-suite"}, 404),
        ({"modelIds": [bench_model], "suiteName": "../etc"}, 400),
        ({"modelIds": [bench_model], "config": {"base_url": "http://192.0.2.1:8080"}}, 403),
        ({"modelIds": [bench_model], "config": {"streaming": False}}, 400),
        ({"modelIds": [bench_model], "config": {"iterations": 0}}, 400),
        ({"modelIds": [bench_model], "config": {"bogus": 1}}, 400),
        ({"modelIds": [bench_model], "suiteName": "repo"}, 400),  # the repo suite needs a dataset
        ({"modelIds": []}, 400),
    ]
    for body, status in cases:
        reply = httpx.post(f"{stack.api}/benchmarks/run", json=body, timeout=60)
        assert reply.status_code == status, (body, reply.text)
        assert "Traceback" not in reply.text and "/tmp/" not in reply.json()["error"]["message"]
    assert httpx.get(f"{stack.api}/benchmarks/runs", timeout=30).json()["total"] == before
    unknown = httpx.get(f"{stack.api}/benchmarks/runs/{uuid.uuid4()}", timeout=30)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "BENCHMARK_RUN_NOT_FOUND"
    assert httpx.get(f"{stack.api}/benchmarks/runs/{uuid.uuid4()}/export/csv", timeout=30).status_code == 404
    assert httpx.get(f"{stack.api}/benchmarks/runs/not-a-uuid", timeout=30).status_code == 400
