"""The children forgeflow starts import forgeflow, whatever the directory they are started from holds."""

from __future__ import annotations

import subprocess
from pathlib import Path

from core.processes import forgeflow_command, python_command
from tests.helpers.stack import SHADOWING, shadowing_project

ROOT = Path(__file__).resolve().parents[2]


def test_python_children_import_forgeflow_not_the_users_packages(tmp_path: Path) -> None:
    project = shadowing_project(tmp_path)
    probe = "; ".join(f"import {n}" for n in SHADOWING) + "; print(core.__file__)"
    plain = subprocess.run(["python3", "-c", probe], cwd=project, capture_output=True, text=True)
    assert "was imported instead of forgeflow" in plain.stderr  # the project does shadow a plain child
    ours = subprocess.run(python_command("-c", probe), cwd=project, capture_output=True, text=True)
    assert ours.returncode == 0, ours.stderr
    assert Path(ours.stdout.strip()).resolve() == ROOT / "core" / "__init__.py"


def test_the_forgeflow_command_runs_in_a_shadowing_project(tmp_path: Path) -> None:
    project = shadowing_project(tmp_path)
    proc = subprocess.run([*forgeflow_command("--help")], cwd=project, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "up" in proc.stdout and "retrain" in proc.stdout
