"""The prepare-data flow through a real Prefect server: artifacts, results and failure states."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from prefect.settings import PREFECT_API_URL

from core.settings import get_settings
from flows.prepare_data import PROGRESS_KEY, PrepareDataParams, prepare_data
from tests.helpers.gitrepo import commit


def _module(i: int) -> str:
    return (
        f'"""Utilities number {i} for computing the totals of the widget inventory system."""\n\n\n'
        f'def total_{i}(items):\n    """Sum the quantities of all items in inventory bucket {i}."""\n'
        f"    count = 0\n    for item in items:\n        count += item.quantity * {i}\n    return count\n"
    )


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("FORGEFLOW_HOME", str(tmp_path / "ws"))
    monkeypatch.setenv("FORGEFLOW_ALLOWED_ROOTS", json.dumps([str(tmp_path)]))
    monkeypatch.setenv("FORGEFLOW_VALIDATION__MIN_SAMPLES", "10")
    monkeypatch.setenv("FORGEFLOW_MONITOR__MIN_FILES_CHANGED", "10")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _artifacts(flow_run_id, key: str) -> list[dict]:
    # plain HTTP: prefect 3.8's client sends nulls for unset filter fields, which its server rejects
    body = {
        "artifacts": {"key": {"any_": [key]}, "flow_run_id": {"any_": [str(flow_run_id)]}},
        "limit": 10,
        "offset": 0,
        "sort": "CREATED_DESC",
    }
    response = httpx.post(f"{PREFECT_API_URL.value()}/artifacts/filter", json=body)
    response.raise_for_status()
    return response.json()


def test_prepare_data_writes_a_validated_dataset_and_reports_progress(env: Path, make_repo) -> None:
    repo = make_repo({f"inventory/m{i}.py": _module(i) for i in range(12)})
    out = env / "dataset"
    state = prepare_data(PrepareDataParams(repo=str(repo), out_dir=str(out)), return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result.monitor.should_retrain is True  # never trained: all 12 files are new
    assert "12 files changed (threshold: 10)" in result.monitor.reason
    assert result.extract.samples.total > 10
    assert result.validation.passed is True
    assert {p.name for p in out.iterdir()} >= {
        "train.jsonl",
        "eval.jsonl",
        "stats.json",
        "validation.json",
        "validation.md",
    }
    progress = _artifacts(state.state_details.flow_run_id, PROGRESS_KEY)
    assert progress and progress[0]["type"] == "progress" and float(progress[0]["data"]) == 100.0
    report = _artifacts(state.state_details.flow_run_id, "validation-report")
    assert report and report[0]["type"] == "markdown" and "min_samples" in report[0]["data"]


def test_failed_validation_fails_the_run_naming_the_expectation(env: Path, make_repo, monkeypatch) -> None:
    monkeypatch.setenv("FORGEFLOW_VALIDATION__MIN_SAMPLES", "100000")
    get_settings.cache_clear()
    repo = make_repo({f"inventory/m{i}.py": _module(i) for i in range(3)})
    state = prepare_data(PrepareDataParams(repo=str(repo), out_dir=str(env / "ds")), return_state=True)
    assert state.is_failed()
    assert "min_samples" in state.message or "min_samples" in str(state.result(raise_on_failure=False))


def test_only_if_changed_stops_after_the_monitor_when_up_to_date(env: Path, make_repo) -> None:
    from core.repos.spec import resolve_repo
    from tasks.monitor.run import mark_trained

    repo = make_repo({f"inventory/m{i}.py": _module(i) for i in range(3)})
    head = commit(repo, {"inventory/extra.py": _module(99)}, "Add the extra inventory module")
    mark_trained(resolve_repo(str(repo), get_settings()), head, get_settings())
    out = env / "ds"
    result = prepare_data(PrepareDataParams(repo=str(repo), out_dir=str(out), only_if_changed=True))
    assert result.monitor.should_retrain is False
    assert result.extract is None and not out.exists()


def test_dry_run_monitors_and_writes_nothing(env: Path, make_repo) -> None:
    repo = make_repo({f"inventory/m{i}.py": _module(i) for i in range(12)})
    out = env / "ds"
    result = prepare_data(PrepareDataParams(repo=str(repo), out_dir=str(out), dry_run=True))
    assert result.monitor.should_retrain is True
    assert result.extract is None and result.validation is None and not out.exists()
