"""The `forgeflow` command as a user runs it: exit codes, one-line errors, JSON output."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers.cli import FORGEFLOW, assert_one_clean_line, run
from tests.helpers.gitrepo import commit

MODULE = '"""Inventory math used by the widget service for stock levels."""\n\n\ndef restock(level, target):\n    """Return how many units to order to bring level up to target."""\n    missing = target - level\n    return max(0, missing)\n'  # noqa: E501


def test_monitor_prints_the_seed_json_shape(make_repo, tmp_path: Path) -> None:
    repo = make_repo({f"m{i}.py": MODULE for i in range(3)})
    proc = run(tmp_path, "monitor", "--repo", str(repo), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert set(report) == {"should_retrain", "reason", "metrics", "checked_at"}
    assert report["metrics"]["commits_since_last_train"] == 1


def test_mark_trained_then_monitor_is_up_to_date(make_repo, tmp_path: Path) -> None:
    repo = make_repo({"m.py": MODULE})
    head = commit(repo, {"n.py": MODULE}, "Add a second inventory module")
    assert run(tmp_path, "monitor", "--repo", str(repo), "--mark-trained", head).returncode == 0
    report = json.loads(run(tmp_path, "monitor", "--repo", str(repo), "--json").stdout)
    assert report["should_retrain"] is False and report["reason"].startswith("up to date")


def test_extract_then_validate(make_repo, tmp_path: Path) -> None:
    repo = make_repo({f"pkg/m{i}.py": MODULE.replace("restock", f"restock_{i}") for i in range(6)})
    out = tmp_path / "ds"
    proc = run(tmp_path, "extract", "--repo", str(repo), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "samples" in proc.stdout and (out / "train.jsonl").is_file()
    proc = run(tmp_path, "validate", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed" in proc.stdout


def test_validate_failure_exits_1_naming_the_expectation(make_repo, tmp_path: Path) -> None:
    repo = make_repo({"pkg/m.py": MODULE})
    out = tmp_path / "ds"
    assert run(tmp_path, "extract", "--repo", str(repo), "--out", str(out)).returncode == 0
    proc = subprocess.run(
        [FORGEFLOW, "validate", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={
            **os.environ,
            "FORGEFLOW_HOME": str(tmp_path / "ws"),
            "FORGEFLOW_VALIDATION__MIN_SAMPLES": "1000",
        },
        timeout=300,
    )
    assert proc.returncode == 1
    assert "min_samples" in proc.stderr
    assert_one_clean_line(proc, [])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["extract", "--repo", "{tmp}/not-a-repo", "--out", "{tmp}/o"], "not a git repository"),
        (["extract", "--repo", "/etc", "--out", "{tmp}/o"], "allowed"),
        (["monitor", "--repo", "ext::sh -c touch% /tmp/pwned"], "ext::"),
        (["monitor", "--repo", "ftp://example.com/repo.git"], "ftp"),
        (["extract", "--repo", "{tmp}/empty", "--out", "{tmp}/o"], "no commits"),
        (["validate", "{tmp}/missing"], "missing"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(
    tmp_path: Path, make_repo, args: list[str], message: str
) -> None:
    (tmp_path / "not-a-repo").mkdir()
    make_repo(name="empty")
    typed = [a.format(tmp=tmp_path) for a in args]
    proc = run(tmp_path, *typed)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr.lower() or message in proc.stderr
    assert_one_clean_line(proc, typed)
    assert not (tmp_path / "o").exists()


def test_status_without_a_stack_is_one_line_and_exit_1(tmp_path: Path) -> None:
    proc = run(tmp_path, "status")
    assert proc.returncode == 1
    assert proc.stdout.strip() == "no stack is running: start it with `forgeflow up`"
    assert proc.stderr == ""  # no "internal error: Exit: 1"


def test_index_build_status_and_search(make_repo, tmp_path: Path) -> None:
    repo = make_repo({"pkg/tool.py": 'def sharpen(blade):\n    """Hone the blade."""\n    return blade\n'})
    built = run(tmp_path, "index", "build", "--repo", str(repo), "--json")
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["mode"] == "built"
    head = commit(repo, {"pkg/more.py": "def polish():\n    return 1\n"}, "Add polish")

    behind = run(tmp_path, "index", "status", "--repo", str(repo), "--json")
    refreshed = json.loads(run(tmp_path, "index", "build", "--repo", str(repo), "--json").stdout)
    found = run(tmp_path, "index", "search", "Where is sharpen defined?", "--repo", str(repo))

    assert json.loads(behind.stdout)["current"] is False
    assert (refreshed["mode"], refreshed["commit"], refreshed["changed_files"]) == ("refreshed", head, 1)
    assert "pkg/tool.py:1-3" in found.stdout and "function sharpen" in found.stdout


def test_index_status_without_an_index_is_one_clear_line(make_repo, tmp_path: Path) -> None:
    repo = make_repo({"a.py": "x = 1\n"})
    proc = run(tmp_path, "index", "status", "--repo", str(repo))
    assert proc.returncode == 2 and "no index yet" in proc.stderr
    assert_one_clean_line(proc, [str(repo)])
