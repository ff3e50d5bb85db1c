"""A flow run that fails tells the user what failed and where to look, in a few lines, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.helpers.cli import FORGEFLOW

MODULE = (
    '"""Stock levels."""\n\n\ndef restock(level, target):\n    """Units to order."""\n'
    "    return max(0, target - level)\n"
)


def test_a_failed_prepare_prints_the_error_the_run_and_the_report(make_repo, tmp_path: Path) -> None:
    repo = make_repo({f"pkg/m{i}.py": MODULE.replace("restock", f"restock_{i}") for i in range(3)})
    out = tmp_path / "ds"
    env = {
        **os.environ,
        "FORGEFLOW_HOME": str(tmp_path / "ws"),
        "FORGEFLOW_ALLOWED_ROOTS": json.dumps([str(tmp_path)]),
        "FORGEFLOW_VALIDATION__MIN_SAMPLES": "100000",  # a few functions never make that many samples
        "PREFECT_HOME": str(tmp_path / "prefect"),
    }
    proc = subprocess.run(
        [FORGEFLOW, "prepare", "--repo", str(repo), "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr + proc.stdout and "database is locked" not in proc.stderr
    assert len(lines) == 2, proc.stderr  # where to look, then the error
    where, error = lines
    assert where.startswith("see: flow run ") and "report: ds/validation.md" in where
    assert error.startswith("error: validation failed: min_samples")
    assert (out / "validation.md").is_file()


def test_a_bad_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "FORGEFLOW_HOME": str(tmp_path / "ws"), "FORGEFLOW_VALIDATION__MIN_SAMPLES": "many"}
    proc = subprocess.run(
        [FORGEFLOW, "validate", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: invalid setting validation.min_samples: Input should be a valid integer, "
        "unable to parse string as an integer (configs/forgeflow.yaml or FORGEFLOW_* variables)"
    ]
