"""The project's own DVC pipeline, reproduced and pushed in a fresh clone (real DVC, real git)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_dvc_repro_and_push_work_in_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "FORGEFLOW_HOME": str(tmp_path / "ws"),
    }

    def dvc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "dvc"), *args], cwd=clone, env=env, capture_output=True, text=True, timeout=600
        )

    # the data stages; the model stages (finetune → evaluate, export) train SmolLM2 for minutes and
    # are covered by tests/finetune, tests/evaluate, tests/export and the slow end-to-end test
    repro = dvc("repro", "validate")
    assert repro.returncode == 0, repro.stdout + repro.stderr
    dataset = clone / "data" / "dataset"
    assert (dataset / "train.jsonl").stat().st_size > 0 and (dataset / "eval.jsonl").stat().st_size > 0
    assert json.loads((dataset / "validation.json").read_text())["passed"] is True
    assert "up to date" in dvc("status", "validate").stdout
    dag = dvc("dag", "--dot").stdout
    for edge in ('"validate" -> "finetune"', '"finetune" -> "evaluate"', '"finetune" -> "export"'):
        assert edge in dag, dag
    push = dvc("push")
    assert push.returncode == 0, push.stdout + push.stderr
    remote = clone / ".forgeflow" / "dvc-remote"
    assert sum(1 for p in remote.rglob("*") if p.is_file()) >= 2  # train.jsonl and eval.jsonl
    metrics = dvc("metrics", "show", "--json")
    assert metrics.returncode == 0 and "samples" in metrics.stdout
