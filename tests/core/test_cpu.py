"""Training and serving on one machine's cores (core.cpu): the thread split, the training process's
budget (in child processes: niceness never goes back down), and llama-server's `--threads`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from core.config import CpuConfig, ServeConfig
from core.cpu import llama_threads, serving_threads, training_threads, usable_cores
from core.hashing import file_sha256
from core.serving.base import ServedModel
from core.serving.llamacpp.backend import LlamaCppBackend
from core.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parents[2]


def make_settings(tmp_path: Path, serve: dict[str, Any] | None = None, **cpu: Any) -> Settings:
    return Settings(home=tmp_path / "ws", allowed_roots=[tmp_path], serve=serve or {"n_threads": 0}, cpu=cpu)


@pytest.fixture
def cores(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Set how many CPUs this process may run on, as `os.sched_getaffinity` reports them."""

    def set_cores(n: int) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)))

    return set_cores


@pytest.mark.parametrize(
    ("n_cores", "cpu", "n_threads", "training", "serving"),
    [
        (4, {"shared": False}, 0, 4, 4),  # each takes every core, as before
        (4, {"shared": True}, 0, 3, 1),  # default serve_threads 1: torch gets the rest
        (8, {"shared": True, "serve_threads": 2}, 0, 6, 2),
        (4, {"shared": True}, 3, 1, 3),  # an explicit serve.n_threads wins, and training leaves it room
        (4, {"shared": False}, 3, 4, 3),
        (2, {"shared": True, "serve_threads": 4}, 0, 1, 4),  # training never drops below one thread
        (1, {"shared": True}, 0, 1, 1),  # one core: both keep a thread; niceness decides
        (1, {"shared": False}, 0, 1, 1),
    ],
)
def test_threads_split_the_cores_when_shared(
    tmp_path: Path, cores: Any, n_cores: int, cpu: dict[str, Any], n_threads: int, training: int, serving: int
) -> None:
    cores(n_cores)
    settings = make_settings(tmp_path, {"n_threads": n_threads}, **cpu)
    assert usable_cores() == n_cores
    assert training_threads(settings) == training
    assert serving_threads(settings) == serving
    assert llama_threads(settings.serve, settings.cpu) == serving


def test_cores_are_the_affinity_mask_not_the_machine(cores: Any) -> None:
    cores(1)
    assert usable_cores() == 1 and (os.cpu_count() or 1) >= 1


_CHILD = """
import json, os, sys, threading
import torch
from core.cpu import apply_training_budget
from core.settings import Settings

args = json.loads(sys.argv[1])
if args["affinity"]:
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args["affinity"]])
if args["nice_first"]:
    os.nice(args["nice_first"])
settings = Settings(home=args["home"], allowed_roots=[args["root"]], serve={"n_threads": 0}, cpu=args["cpu"])
go, thread_nice = threading.Event(), []
worker = threading.Thread(target=lambda: (go.wait(), thread_nice.append(os.nice(0))))
worker.start()  # a thread that exists before the budget (Linux: niceness is per thread)
default_threads = torch.get_num_threads()
nice_before = os.nice(0)
apply_training_budget(settings)
first = {"threads": torch.get_num_threads(), "interop": torch.get_num_interop_threads(), "nice": os.nice(0)}
go.set()
worker.join()
first["older_thread_nice"] = thread_nice[0]
apply_training_budget(settings)  # again: nothing moves
second = {"threads": torch.get_num_threads(), "interop": torch.get_num_interop_threads(), "nice": os.nice(0)}
print(json.dumps({
    "cores": len(os.sched_getaffinity(0)), "default_threads": default_threads,
    "nice_before": nice_before, "first": first, "second": second,
}))
"""


def budget_in_child(tmp_path: Path, cpu: dict[str, Any], affinity: int = 0, nice_first: int = 0) -> Any:
    """Apply the training budget (twice) in a fresh Python; what it saw and did."""
    args: dict[str, Any] = {"home": str(tmp_path / "ws"), "root": str(tmp_path), "cpu": cpu}
    args |= {"affinity": affinity, "nice_first": nice_first}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FORGEFLOW_", "OMP_", "MKL_"))}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(args)],
        cwd=ROOT,
        env=env | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.integration  # a fresh Python process importing torch
def test_shared_budget_sets_torch_threads_and_raises_niceness_once(tmp_path: Path) -> None:
    seen = budget_in_child(tmp_path, {"shared": True, "serve_threads": 1, "train_nice": 7})
    expected = max(1, seen["cores"] - 1)
    assert seen["first"]["threads"] == expected
    assert seen["first"]["interop"] == expected  # settable: torch had done no parallel work yet
    assert seen["first"]["nice"] == max(seen["nice_before"], 7)
    assert seen["first"]["older_thread_nice"] == seen["first"]["nice"]  # the whole process, not one thread
    assert seen["second"] == {k: seen["first"][k] for k in seen["second"]}  # idempotent


@pytest.mark.integration  # a fresh Python process importing torch
def test_shared_budget_on_one_core_keeps_one_training_thread(tmp_path: Path) -> None:
    seen = budget_in_child(tmp_path, {"shared": True, "serve_threads": 1, "train_nice": 3}, affinity=1)
    assert seen["cores"] == 1
    assert seen["first"]["threads"] == 1


@pytest.mark.integration  # a fresh Python process importing torch
def test_niceness_is_never_lowered(tmp_path: Path) -> None:
    seen = budget_in_child(tmp_path, {"shared": True, "train_nice": 5}, nice_first=12)
    assert seen["nice_before"] >= 12
    assert seen["first"]["nice"] == seen["second"]["nice"] == seen["nice_before"]


@pytest.mark.integration  # a fresh Python process importing torch
def test_not_shared_leaves_torch_and_niceness_alone(tmp_path: Path) -> None:
    seen = budget_in_child(tmp_path, {"shared": False, "train_nice": 10})
    assert seen["first"]["threads"] == seen["default_threads"]
    assert seen["first"]["nice"] == seen["first"]["older_thread_nice"] == seen["nice_before"]


# --- llama-server's threads ---


def served_threads(backend: LlamaCppBackend, gguf: Path) -> tuple[str, str]:
    """Deploy `gguf` on `backend`, read the started llama-server's `--threads`/`--threads-batch`."""

    async def go() -> list[str]:
        try:
            model = ServedModel("tiny:1", "text-generation", gguf, file_sha256(gguf))
            deployment = await backend.deploy(model)
            assert deployment.state == "loaded", deployment
            pid = int(deployment.detail.split(",")[0].removeprefix("pid "))
            return psutil.Process(pid).cmdline()  # /proc/<pid>/cmdline
        finally:
            await backend.close()

    argv = asyncio.run(go())
    return argv[argv.index("--threads") + 1], argv[argv.index("--threads-batch") + 1]


@pytest.mark.integration
def test_llama_server_gets_the_serving_threads_when_shared(tiny_gguf: Path, tmp_path: Path) -> None:
    n = usable_cores() + 1  # a count that no unshared default would give
    cpu = CpuConfig(shared=True, serve_threads=n)
    backend = LlamaCppBackend(ServeConfig(n_threads=0, n_ctx=2048), tmp_path / "logs", cpu=cpu)
    assert served_threads(backend, tiny_gguf) == (str(n), str(n))


@pytest.fixture
def shared_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """FORGEFLOW_CPU__SHARED=true, as `forgeflow up` starts its processes; this process's settings
    are read afresh, and again once the test is done."""
    n = usable_cores() + 1
    monkeypatch.setenv("FORGEFLOW_CPU__SHARED", "true")
    monkeypatch.setenv("FORGEFLOW_CPU__SERVE_THREADS", str(n))
    monkeypatch.delenv("FORGEFLOW_SERVE__N_THREADS", raising=False)
    get_settings.cache_clear()
    yield n
    get_settings.cache_clear()


@pytest.mark.integration
def test_the_backend_reads_the_shared_setting_from_the_environment(
    tiny_gguf: Path, tmp_path: Path, shared_env: int
) -> None:
    backend = LlamaCppBackend(ServeConfig(n_threads=0, n_ctx=2048), tmp_path / "logs")
    assert served_threads(backend, tiny_gguf) == (str(shared_env), str(shared_env))
