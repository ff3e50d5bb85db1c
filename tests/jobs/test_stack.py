"""`forgeflow up | status | down` and what the stack promises: one stack, state in Prefect, restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.helpers.gitrepo import commit, git
from tests.helpers.stack import SHADOWING, Stack
from tests.jobs.conftest import fine_tune


def test_a_second_up_reports_the_running_stack(stack: Stack) -> None:
    before = stack.state()["parts"]
    again = stack.cli("up", timeout=120)
    assert again.returncode == 0, again.stderr
    assert "running already" in again.stdout
    assert {n: p["pid"] for n, p in stack.state()["parts"].items()} == {
        n: p["pid"] for n, p in before.items()
    }
    status = stack.cli("status", timeout=60)
    assert status.returncode == 0 and "prefect" in status.stdout and "runner" in status.stdout


def test_the_stack_answers_though_started_in_a_project_that_shadows_forgeflow(
    stack: Stack, tmp_path: Path
) -> None:
    for name in SHADOWING:  # the project really shadows forgeflow for a plain `python -m` started there
        shadowed = subprocess.run(
            [sys.executable, "-c", f"import {name}"], cwd=stack.started_in, capture_output=True, text=True
        )
        assert shadowed.returncode != 0 and "was imported instead of forgeflow" in shadowed.stderr
    parts = stack.state()["parts"]
    assert set(parts) == {"prefect", "runner", "api"} and all(p["ready"] for p in parts.values())
    assert httpx.get(f"{stack.api}/health", timeout=30).status_code == 200
    for name, part in parts.items():  # each part works in the workspace, not where `up` ran
        assert Path(f"/proc/{part['pid']}/cwd").resolve() == stack.home.resolve(), name
    # the stack is the user's, not the directory's: `status` from anywhere else finds it
    elsewhere = stack.cli("status", timeout=60, cwd=tmp_path)
    assert elsewhere.returncode == 0 and "runner" in elsewhere.stdout, elsewhere.stderr


def test_the_api_restarted_while_a_job_runs_still_knows_the_job(stack: Stack, job_dataset: Path) -> None:
    job = fine_tune(stack, job_dataset, max_steps=3000, promote=False).json()["job_id"]
    try:
        stack.wait_for(job, lambda s: s["status"] == "training")
        api = stack.state()["parts"]["api"]["pid"]
        os.kill(api, signal.SIGKILL)  # the supervisor starts a new one: nothing about jobs lived in it
        deadline = time.monotonic() + 120
        while True:
            parts = stack.state()["parts"]["api"]
            if parts["pid"] not in (None, api) and parts["ready"]:
                break
            assert time.monotonic() < deadline, parts
            time.sleep(1)
        assert stack.status(job)["status"] == "training"
    finally:
        httpx.post(f"{stack.api}/v1/retrain/{job}/cancel", timeout=30)
        stack.wait_state(job, "Cancelled")


def test_a_git_commit_fires_the_hook_and_starts_a_retrain(stack: Stack, jobs_root: Path) -> None:
    repo = jobs_root / "hooked"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(repo, {"README.md": "# hooked\n"}, "Start the project")
    installed = stack.cli("hooks", "install", "--repo", str(repo), "--server", stack.api, timeout=60)
    assert installed.returncode == 0, installed.stderr
    before = httpx.get(f"{stack.api}/jobs?limit=1", timeout=30).json()["total"]
    # post-commit fires here; pyproject.toml is a critical path, so the monitor says retrain (a plain
    # two-commit change stays under the thresholds and the hook rightly starts nothing)
    commit(
        repo,
        {"app.py": "def main():\n    return 1\n", "pyproject.toml": "[project]\nname = 'hooked'\n"},
        "Add the app",
    )
    deadline = time.monotonic() + 60
    while httpx.get(f"{stack.api}/jobs?limit=1", timeout=30).json()["total"] == before:
        assert time.monotonic() < deadline, "the hook started no job"
        time.sleep(0.5)
    job = httpx.get(f"{stack.api}/jobs?limit=1", timeout=30).json()["jobs"][0]
    assert job["parameters"]["repo"] == str(repo.resolve())
    assert job["parameters"]["trigger"] == "post-commit"
    httpx.post(f"{stack.api}/v1/retrain/{job['job_id']}/cancel", timeout=30)
    stack.wait_state(job["job_id"], "Cancelled")


def test_a_commit_below_the_thresholds_leaves_an_index_run_and_a_current_index(
    stack: Stack, jobs_root: Path
) -> None:
    repo = jobs_root / "indexed"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(repo, {"README.md": "# indexed\n"}, "Start the project")
    installed = stack.cli("hooks", "install", "--repo", str(repo), "--server", stack.api, timeout=60)
    assert installed.returncode == 0, installed.stderr
    head = commit(repo, {"lib.py": 'def answer():\n    """The answer."""\n    return 42\n'}, "Add the answer")

    deadline = time.monotonic() + 120
    while True:  # the hook's call starts no job (two commits) but an index-repo run, shown in Prefect
        runs = httpx.post(
            f"{stack.prefect}/api/flow_runs/filter",
            json={"flows": {"name": {"any_": ["index-repo"]}}, "limit": 20},
            timeout=10,
        ).json()
        mine = [r for r in runs if r["parameters"]["params"]["repo"] == str(repo.resolve())]
        if mine and mine[0]["state_type"] in ("COMPLETED", "FAILED", "CRASHED"):
            break
        assert time.monotonic() < deadline, f"no finished index-repo run: {[r['state_type'] for r in mine]}"
        time.sleep(1)
    assert mine[0]["state_type"] == "COMPLETED"
    assert mine[0]["parameters"]["params"]["trigger"] == "post-commit"
    status = stack.cli("index", "status", "--repo", str(repo), "--json", timeout=120)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["commit"] == head
