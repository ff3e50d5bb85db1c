"""check_repo and the trained-commit marker, on real git repositories."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from core.config import MonitorConfig
from core.errors import ForgeflowError, InputError
from core.repos.spec import RepoHandle, resolve_repo
from core.settings import Settings
from tasks.monitor.run import check_repo, last_trained_commit, mark_trained, monitor_repo_task, state_path
from tests.helpers.gitrepo import commit, git

# Thresholds high enough that no rule fires unless a test lowers one.
QUIET = {"min_commits": 100, "min_files_changed": 100, "min_lines_changed": 10_000, "critical_paths": []}


def _settings(tmp_path: Path, **monitor: Any) -> Settings:
    return Settings(
        home=tmp_path / "ws", allowed_roots=[tmp_path], monitor=MonitorConfig(**{**QUIET, **monitor})
    )


@pytest.fixture
def trained(make_repo: Callable[..., Path], tmp_path: Path) -> tuple[Path, RepoHandle, str]:
    """A repo with one commit that a model was trained on."""
    repo = make_repo({"src/app.py": "print('hi')\n", "README.md": "# app\n"})
    handle = resolve_repo(str(repo), _settings(tmp_path))
    sha = mark_trained(handle, "HEAD", _settings(tmp_path))
    return repo, handle, sha


def test_before_any_training_everything_counts_since_the_beginning(
    make_repo: Callable[..., Path], tmp_path: Path
) -> None:
    repo = make_repo({"a.py": "1\n2\n", "b.py": "3\n"})
    commit(repo, {"c.py": "4\n"}, "Add c")
    settings = _settings(tmp_path)
    handle = resolve_repo(str(repo), settings)

    assert last_trained_commit(handle, settings) is None
    report = check_repo(handle, settings)

    m = report.metrics
    assert (m.commits_since_last_train, m.files_changed, m.lines_changed) == (2, 3, 4)
    assert m.last_trained_commit is None and m.head_commit == git(repo, "rev-parse", "HEAD")
    assert not report.should_retrain
    assert report.reason == (
        "no retraining needed: 2 commits (threshold: 100), 3 files (threshold: 100), "
        "4 lines (threshold: 10000)"
    )


def test_up_to_date_when_head_is_the_trained_commit(
    trained: tuple[Path, RepoHandle, str], tmp_path: Path
) -> None:
    _, handle, sha = trained
    report = check_repo(handle, _settings(tmp_path, min_commits=1))
    assert not report.should_retrain
    assert report.reason == f"up to date: HEAD {sha[:12]} is the last trained commit"
    assert report.metrics.commits_since_last_train == 0


def test_commit_threshold_fires_alone(trained: tuple[Path, RepoHandle, str], tmp_path: Path) -> None:
    repo, handle, sha = trained
    for i in range(3):
        commit(repo, {"src/app.py": f"print({i})\n"}, f"Change {i}")

    report = check_repo(handle, _settings(tmp_path, min_commits=3))

    assert report.should_retrain
    assert report.reason == "3 commits since the last training (threshold: 3)"
    assert report.metrics.last_trained_commit == sha


def test_files_threshold_fires_alone(trained: tuple[Path, RepoHandle, str], tmp_path: Path) -> None:
    repo, handle, _ = trained
    commit(repo, {f"docs/{i}.md": "x\n" for i in range(23)}, "Add docs")

    report = check_repo(handle, _settings(tmp_path, min_files_changed=20))

    assert report.reason == "23 files changed (threshold: 20)"
    assert report.should_retrain


def test_lines_threshold_fires_alone(trained: tuple[Path, RepoHandle, str], tmp_path: Path) -> None:
    repo, handle, _ = trained
    commit(repo, {"src/app.py": "".join(f"print({i})\n" for i in range(1500))}, "Grow")

    report = check_repo(handle, _settings(tmp_path, min_lines_changed=1000))

    # 1500 added + 1 deleted
    assert report.reason == "1501 lines changed (threshold: 1000)"


def test_several_rules_are_all_named(trained: tuple[Path, RepoHandle, str], tmp_path: Path) -> None:
    repo, handle, _ = trained
    commit(repo, {f"m{i}.py": "x\n" for i in range(23)}, "Many files")
    git(repo, "tag", "-a", "v1.2.0", "-m", "release 1.2.0")

    report = check_repo(handle, _settings(tmp_path, min_files_changed=20))

    assert report.reason == "23 files changed (threshold: 20); release tag v1.2.0 points at a new commit"


def test_binary_files_and_renames_count_as_files_without_lines(
    trained: tuple[Path, RepoHandle, str], tmp_path: Path
) -> None:
    repo, handle, _ = trained
    git(repo, "mv", "README.md", "README.rst")
    commit(repo, {"logo.png": bytes(range(256)) * 4}, "Rename readme, add logo")

    m = check_repo(handle, _settings(tmp_path)).metrics

    assert (m.files_changed, m.lines_changed) == (2, 0)


def test_critical_bare_name_matches_at_the_root_only(
    trained: tuple[Path, RepoHandle, str], tmp_path: Path
) -> None:
    repo, handle, _ = trained
    settings = _settings(tmp_path, critical_paths=["pyproject.toml"])
    commit(repo, {"vendor/lib/pyproject.toml": "[project]\n"}, "Vendor a lib")

    nested = check_repo(handle, settings)
    assert not nested.should_retrain and not nested.metrics.critical_paths_changed

    commit(repo, {"pyproject.toml": "[project]\nname = 'app'\n"}, "Add pyproject")
    root = check_repo(handle, settings)
    assert root.should_retrain
    assert root.metrics.critical_paths == ["pyproject.toml"]
    assert root.reason == "critical path changed: pyproject.toml"


def test_critical_double_star_glob_crosses_directories(
    trained: tuple[Path, RepoHandle, str], tmp_path: Path
) -> None:
    repo, handle, _ = trained
    commit(
        repo,
        {"src/a/b/deep.py": "x\n", "src/top.py": "x\n", "docs/conf.py": "x\n", "src/notes.txt": "x\n"},
        "Touch files",
    )

    m = check_repo(handle, _settings(tmp_path, critical_paths=["src/**/*.py"])).metrics

    assert m.critical_paths == ["src/a/b/deep.py", "src/top.py"]


def test_renaming_a_critical_file_away_counts(trained: tuple[Path, RepoHandle, str], tmp_path: Path) -> None:
    repo, handle, _ = trained
    settings = _settings(tmp_path, critical_paths=["README.md"])
    (repo / "docs").mkdir()
    git(repo, "mv", "README.md", "docs/README.md")
    git(repo, "commit", "-q", "-m", "Move readme")

    assert check_repo(handle, settings).metrics.critical_paths == ["README.md"]


def test_release_tag_on_a_new_commit_fires_but_on_an_old_one_does_not(
    trained: tuple[Path, RepoHandle, str], tmp_path: Path
) -> None:
    repo, handle, sha = trained
    settings = _settings(tmp_path)
    git(repo, "tag", "v1.0.0", sha)  # tagged after training, but on the trained commit
    commit(repo, {"src/app.py": "print('v1.1')\n"}, "Next")
    git(repo, "tag", "not-a-release")

    old = check_repo(handle, settings)
    assert not old.should_retrain and old.metrics.new_release_tags == []

    git(repo, "tag", "release/1.1")
    new = check_repo(handle, settings)
    assert new.should_retrain
    assert new.metrics.new_release_tags == ["release/1.1"]
    assert new.reason == "release tag release/1.1 points at a new commit"


def test_marker_is_persisted_with_tags(make_repo: Callable[..., Path], tmp_path: Path) -> None:
    repo = make_repo({"a.py": "x\n"})
    git(repo, "tag", "-a", "v0.1.0", "-m", "first")
    settings = _settings(tmp_path)
    handle = resolve_repo(str(repo), settings)
    head = git(repo, "rev-parse", "HEAD")

    assert mark_trained(handle, head[:8], settings) == head

    state = json.loads(state_path(handle, settings).read_text())
    assert state["last_trained_commit"] == head
    assert state["tags"] == {"v0.1.0": head}  # the annotated tag, peeled to its commit
    assert datetime.fromisoformat(state["trained_at"]).tzinfo is not None
    # A fresh handle of the same repository sees the same marker.
    assert last_trained_commit(resolve_repo(str(repo), settings), settings) == head


@pytest.mark.parametrize("rev", ["0" * 40, "no-such-branch", "--output=/tmp/x", "HEAD;ls", ""])
def test_mark_trained_with_an_unknown_commit_is_refused(
    trained: tuple[Path, RepoHandle, str], tmp_path: Path, rev: str
) -> None:
    _, handle, sha = trained
    with pytest.raises(InputError, match="was not found in repository"):
        mark_trained(handle, rev, _settings(tmp_path))
    assert last_trained_commit(handle, _settings(tmp_path)) == sha  # the marker is untouched


def test_rewritten_history_compares_since_the_beginning(
    trained: tuple[Path, RepoHandle, str], tmp_path: Path
) -> None:
    repo, handle, _ = trained
    settings = _settings(tmp_path)
    gone = mark_trained(handle, commit(repo, {"tmp.py": "x\n"}, "Soon rewritten"), settings)
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    commit(repo, {"b.py": "y\n"}, "Rewritten")
    git(repo, "reflog", "expire", "--expire=now", "--all")
    git(repo, "gc", "-q", "--prune=now")

    report = check_repo(handle, settings)

    assert report.metrics.commits_since_last_train == 2  # the whole history
    assert report.metrics.files_changed == 3
    assert report.metrics.last_trained_commit == gone
    assert f"last trained commit {gone[:12]} no longer exists" in report.reason
    assert "compared since the beginning" in report.reason


def test_diverged_history_compares_against_the_old_commit(
    trained: tuple[Path, RepoHandle, str], tmp_path: Path
) -> None:
    repo, handle, _ = trained
    settings = _settings(tmp_path)
    mark_trained(handle, commit(repo, {"tmp.py": "x\n"}, "Soon abandoned"), settings)
    git(repo, "reset", "-q", "--hard", "HEAD~1")  # the old commit still exists (reflog)
    commit(repo, {"b.py": "y\n"}, "Other line")

    report = check_repo(handle, settings)

    assert report.metrics.files_changed == 2  # tmp.py removed, b.py added
    assert "does not descend from last trained commit" in report.reason


def test_checked_at_is_timezone_aware_utc(trained: tuple[Path, RepoHandle, str], tmp_path: Path) -> None:
    _, handle, _ = trained
    local = datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert check_repo(handle, _settings(tmp_path), now=local).checked_at == datetime(
        2024, 5, 1, 10, 0, tzinfo=UTC
    )
    assert check_repo(handle, _settings(tmp_path)).checked_at.tzinfo == UTC


def test_monitor_task_resolves_and_checks(make_repo: Callable[..., Path], tmp_path: Path) -> None:
    repo = make_repo({"a.py": "x\n"})
    report = monitor_repo_task.fn(str(repo), _settings(tmp_path, min_commits=1))
    assert report.should_retrain
    assert report.reason == "1 commit since the last training (threshold: 1)"


def test_corrupt_marker_is_reported_without_paths(
    trained: tuple[Path, RepoHandle, str], tmp_path: Path
) -> None:
    _, handle, _ = trained
    settings = _settings(tmp_path)
    state_path(handle, settings).write_text("{not json")
    with pytest.raises(ForgeflowError, match="unreadable") as err:
        check_repo(handle, settings)
    assert str(tmp_path) not in str(err.value)
