"""Run the installed `forgeflow` command as a user would, and check its one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from click.testing import Result

from tests.helpers.modelcache import seed_cache

FORGEFLOW = str(Path(sys.executable).parent / "forgeflow")


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`forgeflow ARGS` in `tmp_path`, its workspace `tmp_path/ws` (SmolLM2's tokenizer already in it)."""
    seed_cache(tmp_path / "ws" / "cache")
    env = {
        **os.environ,
        "FORGEFLOW_HOME": str(tmp_path / "ws"),
        "FORGEFLOW_ALLOWED_ROOTS": json.dumps([str(tmp_path)]),
        "FORGEFLOW_VALIDATION__MIN_SAMPLES": "3",
    }
    return subprocess.run(
        [FORGEFLOW, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )


def assert_one_clean_line(proc: subprocess.CompletedProcess[str], typed: list[str]) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    # the user's own arguments may be echoed; no other absolute path may appear
    rest = proc.stderr
    for arg in typed:
        rest = rest.replace(arg, "")
    assert not re.search(r"(^|[\s'\"(])/[A-Za-z]", rest), rest
    assert proc.stderr.strip().count("\n") == 0, proc.stderr


def invoke(*args: str) -> int:
    """Run `forgeflow ARGS` in this process (Typer's test runner) and return its exit code."""
    return invoke_result(*args).exit_code


def invoke_result(*args: str) -> Result:
    """Run `forgeflow ARGS` in this process; the result has exit_code, stdout and stderr."""
    from typer.testing import CliRunner

    from cli.main import app

    return CliRunner().invoke(app, list(args))
