"""forgeflow installed from its wheel (not the source tree) finds its configs and training profiles."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_wheel_install_finds_the_main_config_and_the_profiles(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(
        ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", ".forgeflow", "data", "*cache*")
    )
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(src),
            "-w",
            str(wheels),
        ],
        check=True,
        timeout=300,
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    (wheel,) = wheels.glob("forgeflow-*.whl")
    # the new venv's own pip: pip installing elsewhere (--prefix, --target) from this environment
    # would uninstall this environment's forgeflow first
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=300,
    )
    # the wheel's code and data from the new prefix; its dependencies from this test's environment
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv)}))
    probe = (
        "import core.settings as s, tasks.finetune.run as r; "
        "print(s.__file__); print(s.config_file('forgeflow.yaml')); "
        "print(r.load_profile('cpu-quick').max_steps)"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {
        "PYTHONPATH": f"{site}:{sysconfig.get_path('purelib')}",
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
    }
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    module, config, steps = proc.stdout.splitlines()
    assert module.startswith(str(site)), module  # not the source tree
    assert config == str(venv / "share" / "forgeflow" / "configs" / "forgeflow.yaml")
    assert int(steps) > 0
