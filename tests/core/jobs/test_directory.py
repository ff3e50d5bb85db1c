"""A job's directory: confined to the workspace, swept of staging leftovers, its process watched."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from uuid import uuid4

import pytest

from core.jobs.directory import JobDir, Plan
from core.jobs.pause import pause_variable
from core.reports import PromoteDecision
from core.settings import Settings


def test_a_job_dir_only_takes_a_uuid(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "ws", allowed_roots=[tmp_path])
    job = uuid4()
    assert JobDir.of(settings, job).root == settings.home / "jobs" / str(job)
    with pytest.raises(ValueError):
        JobDir.of(settings, "../../etc")
    assert pause_variable(job) == f"forgeflow-pause-{job.hex}"


def test_the_job_files_read_back_typed_and_a_missing_one_is_none(tmp_path: Path) -> None:
    job = JobDir(tmp_path / "job")
    assert job.plan() == Plan() and job.stats() is None and job.evaluation() is None
    assert job.exported() is None and job.promotion() is None
    job.write_plan(Plan(project="demo", repo="/r", commit="abc1234"))
    assert job.plan() == Plan(project="demo", repo="/r", commit="abc1234", dataset_ready=False)
    decision = PromoteDecision(
        promote=True, reason="beats the base", candidate="demo:1.0.0", champion=None,
        tuned_perplexity=8.0, base_perplexity=9.0, margin=0.01,
    )  # fmt: skip
    job.write_promotion(decision)
    assert job.promotion() == decision
    assert (job.root / "promote.json").is_file()  # the file name the README documents
    (job.root / "promote.json").write_text("{not json")
    assert job.promotion() is None  # a torn or foreign file is "not there", never a crash


def test_sweep_removes_only_dot_named_staging_leftovers(tmp_path: Path) -> None:
    (tmp_path / "run" / ".adapter.x1y2z3").mkdir(parents=True)
    (tmp_path / "run" / ".adapter.x1y2z3" / "weights").write_text("half")
    (tmp_path / "run" / ".train.json.abc.tmp").write_text("{")
    (tmp_path / "run" / "train.json").write_text("{}")
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "train.jsonl").write_text("x\n")
    removed = JobDir(tmp_path).sweep_staging()
    assert sorted(removed) == ["run/.adapter.x1y2z3", "run/.train.json.abc.tmp"]
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "dataset",
        "dataset/train.jsonl",
        "run",
        "run/train.json",
    ]


def test_a_dead_process_is_gone_a_live_one_is_not(tmp_path: Path) -> None:
    job = JobDir(tmp_path)
    job.record_process()
    assert not job.process_gone()  # this test's own process
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    (tmp_path / "pid").write_text(f"{socket.gethostname()} {child.pid}\n")
    assert job.process_gone()
    (tmp_path / "pid").write_text(f"another-host {os.getpid()}\n")
    assert not job.process_gone()  # another host's job is Prefect's heartbeats' to judge
    (tmp_path / "pid").unlink()
    assert not job.process_gone()  # nothing recorded yet: not started, not crashed
