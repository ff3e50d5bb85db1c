"""ProcessSampler and listening_pid on real processes: a busy tree, a listening socket."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from tasks.benchmark.sampler import ProcessSampler, listening_pid

# Both loops end once their parent is gone, so nothing outlives the test even if cleanup fails.
BUSY_CHILD = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    pass\n"
BUSY_PARENT = (
    "import os, subprocess, sys\n"
    f"subprocess.Popen([sys.executable, '-c', {BUSY_CHILD!r}])\n"
    "parent = os.getppid()\n"
    "while os.getppid() == parent:\n"
    "    pass\n"
)
LISTENER = (
    "import socket, sys, time\n"
    "s = socket.socket()\n"
    "s.bind(('127.0.0.1', 0))\n"
    "s.listen()\n"
    "print(s.getsockname()[1], flush=True)\n"
    "time.sleep(30)\n"
)


def _stop(proc: subprocess.Popen[str]) -> None:
    """Kill a process we started and the children it started, by pid."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for child in children:
        child.kill()
    proc.kill()
    proc.wait(timeout=5)


@pytest.fixture
def busy_tree() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-c", BUSY_PARENT], text=True)
    yield proc
    _stop(proc)


@pytest.fixture
def listener() -> Iterator[tuple[subprocess.Popen[str], int]]:
    proc = subprocess.Popen([sys.executable, "-c", LISTENER], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    yield proc, port
    _stop(proc)


def test_sampler_sums_cpu_and_ram_over_a_busy_process_and_its_child(busy_tree: subprocess.Popen[str]) -> None:
    with ProcessSampler(busy_tree.pid, interval_s=0.25) as sampler:
        time.sleep(1.5)
    samples = sampler.result()
    assert samples.n >= 3
    assert samples.cpu_avg is not None and samples.cpu_avg > 20
    assert samples.cpu_max is not None and samples.cpu_max >= samples.cpu_avg
    assert samples.ram_avg_mb is not None and samples.ram_avg_mb > 1
    assert samples.ram_max_mb is not None and samples.ram_max_mb >= samples.ram_avg_mb


def test_sampler_stops_promptly() -> None:
    start = time.monotonic()
    with ProcessSampler(psutil.Process().pid, interval_s=0.25):
        pass
    assert time.monotonic() - start < 1.0


def test_a_level_shorter_than_one_interval_still_gets_a_sample() -> None:
    with ProcessSampler(psutil.Process().pid, interval_s=30.0) as sampler:
        pass
    result = sampler.result()
    assert result.n == 1 and result.cpu_avg is not None
    assert result.ram_avg_mb is not None and result.ram_avg_mb > 10  # this Python process


def test_sampler_without_a_pid_records_nothing() -> None:
    with ProcessSampler(None) as sampler:
        time.sleep(0.3)
    samples = sampler.result()
    assert samples.n == 0 and samples.cpu_avg is None and samples.ram_avg_mb is None


def test_listening_pid_finds_the_process_behind_a_loopback_port(
    listener: tuple[subprocess.Popen[str], int],
) -> None:
    proc, port = listener
    assert listening_pid("127.0.0.1", port) == proc.pid
    assert listening_pid("localhost", port) == proc.pid
    assert listening_pid("10.255.255.1", port) is None  # bound to loopback, not to that address
