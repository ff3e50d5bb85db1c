"""The installed llama.cpp (library and server) is the portable build, and reinstalling builds nothing.

A build for "the CPU at hand" dies with SIGILL on another machine (AMX tiles on a VM that does not
enable them): what `make install` builds must run on every x86-64 CPU with AVX2.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from core.serving.process import llama_server_binary

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "build-llama-cpp.sh"
x86_64 = pytest.mark.skipif(platform.machine() != "x86_64", reason="the CPU baseline is x86-64's")


def _features(system_info: str) -> dict[str, str]:
    """`AVX2 = 1 | AMX_INT8 = 1 | ...` as {"AVX2": "1", ...}."""
    pairs = (part.split("=", 1) for part in system_info.replace("CPU :", "|").split("|") if "=" in part)
    return {name.strip(): value.strip() for name, value in pairs}


@x86_64
def test_the_library_is_built_for_avx2_and_never_amx() -> None:
    import llama_cpp

    features = _features(llama_cpp.llama_print_system_info().decode())
    assert features.get("AVX2") == "1", features
    assert not [name for name in features if name.startswith("AMX")], features
    assert not [name for name in features if name.startswith("AVX512")], features  # the fixed baseline


@x86_64
def test_llama_server_is_installed_and_built_for_avx2_and_never_amx() -> None:
    binary = llama_server_binary()
    assert binary is not None, "llama-server is not installed: run `make install`"
    # at log verbosity 4 the server prints its system info first; no model to load, so it exits then
    out = subprocess.run(
        [str(binary), "--model", "/nonexistent.gguf", "--port", "0", "--no-webui", "-lv", "4"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = next(line for line in (out.stdout + out.stderr).splitlines() if "system_info" in line)
    features = _features(line)
    assert features.get("AVX2") == "1", line
    assert not [name for name in features if name.startswith(("AMX", "AVX512"))], line


@pytest.mark.slow
def test_reinstalling_with_nothing_changed_builds_nothing(tmp_path: Path) -> None:
    again = subprocess.run([str(SCRIPT), sys.prefix], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout and "building" not in again.stdout

    # a new virtualenv gets the cached build: installed, not compiled
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    fresh = subprocess.run([str(SCRIPT), str(venv)], capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr
    assert "from the cache" in fresh.stdout and "building" not in fresh.stdout
    marker = ".llama-cpp-build"  # the build's key: version, flags, compiler
    key = (venv / marker).read_text().strip()
    assert key == (Path(sys.prefix) / marker).read_text().strip()
    (cached,) = _cache_root().glob(f"*-{key}/bin/llama-server")
    assert (venv / "bin" / "llama-server").read_bytes() == cached.read_bytes()


def _cache_root() -> Path:
    """Where scripts/build-llama-cpp.sh keeps its builds (the same rule as the script's)."""
    if os.environ.get("FORGEFLOW_BUILD_CACHE"):
        return Path(os.environ["FORGEFLOW_BUILD_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "forgeflow" / "llama.cpp"
