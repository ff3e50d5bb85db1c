"""What the serving processes use while a benchmark runs: CPU, RAM and, where there is one, the GPU.

A background thread samples a root process and all its descendants (re-read every tick, so
processes the server starts mid-run count) and, at most once a second, `nvidia-smi`.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import subprocess
import threading
import time
from types import TracebackType

import numpy as np
import psutil

from tasks.benchmark.stats import ResourceSamples

logger = logging.getLogger(__name__)

_MIB = 1024 * 1024
_GPU_EVERY_S = 1.0
_GPU_QUERY = ("--query-gpu=utilization.gpu", "--format=csv,noheader,nounits")
_WILDCARDS = {"0.0.0.0", "::", ""}


def listening_pid(host: str, port: int) -> int | None:
    """The pid of the process listening on TCP `host:port`, or None (none, or not ours to see).

    A socket bound to the wildcard address counts for any host; "localhost" matches any loopback.
    """
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return None
    for conn in connections:
        listening = conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
        if listening and _host_matches(conn.laddr.ip, host):
            return None if conn.pid is None else int(conn.pid)
    return None


class ProcessSampler:
    """Samples a process tree's CPU and RSS (and the GPU) in a thread; use as a context manager.

    Args:
        pid: the root process; None makes a sampler that records nothing.
        interval_s: seconds between samples.
    """

    def __init__(self, pid: int | None, interval_s: float = 0.25) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._procs: dict[int, psutil.Process] = {}  # primed for cpu_percent
        self._cpu: list[float] = []
        self._ram: list[float] = []
        self._gpu: list[float] = []
        self._nvidia_smi = shutil.which("nvidia-smi")
        self._gpu_at = 0.0

    def __enter__(self) -> ProcessSampler:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start sampling (nothing happens without a pid, or when already started)."""
        if self.pid is None or self._thread is not None:
            return
        self._tree(self.pid)  # primes cpu_percent, so the first sample measures the first interval
        self._thread = threading.Thread(
            target=self._run, args=(self.pid,), name=f"sampler-{self.pid}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling, wait for the thread (bounded by the nvidia-smi timeout), take a last sample.

        The last sample covers the time since the one before (or since `start`), so a level shorter
        than `interval_s` still gets its CPU and RAM instead of none.
        """
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is None or self.pid is None:
            return
        thread.join(timeout=self.interval_s + 5.0)
        try:
            self._sample(self.pid)
        except Exception:  # as in _run: a lost sample is only a lost sample
            logger.debug("resource sample failed", exc_info=True)

    def result(self) -> ResourceSamples:
        """The averages and maxima of the samples so far."""
        with self._lock:
            cpu, ram, gpu = list(self._cpu), list(self._ram), list(self._gpu)
        if not cpu:
            return ResourceSamples(gpu_avg=_mean(gpu))
        return ResourceSamples(
            cpu_avg=_mean(cpu),
            cpu_max=max(cpu),
            ram_avg_mb=_mean(ram),
            ram_max_mb=max(ram),
            gpu_avg=_mean(gpu),
            n=len(cpu),
        )

    def _run(self, pid: int) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._sample(pid)
            except Exception:  # the thread must never die loudly: a lost sample is only a lost sample
                logger.debug("resource sample failed", exc_info=True)

    def _sample(self, pid: int) -> None:
        cpu = ram = 0.0
        alive = 0
        for proc, primed in self._tree(pid):
            try:
                with proc.oneshot():
                    usage = proc.cpu_percent(None)
                    rss = proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            cpu += usage if primed else 0.0  # a new process's first reading is meaningless
            ram += rss / _MIB
            alive += 1
        gpu = self._gpu_sample()
        with self._lock:
            if alive:
                self._cpu.append(cpu)
                self._ram.append(ram)
            if gpu is not None:
                self._gpu.append(gpu)

    def _tree(self, pid: int) -> list[tuple[psutil.Process, bool]]:
        """The root and its descendants now, each with whether its cpu_percent was primed before."""
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return []
        tree = []
        seen: dict[int, psutil.Process] = {}
        for proc in procs:
            known = self._procs.get(proc.pid)
            if known is not None and known == proc:  # same pid and creation time: not a reused pid
                tree.append((known, True))
                seen[proc.pid] = known
                continue
            try:
                proc.cpu_percent(None)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            tree.append((proc, False))
            seen[proc.pid] = proc
        self._procs = seen
        return tree

    def _gpu_sample(self) -> float | None:
        """Mean utilisation over the GPUs, at most once a second; None when skipped or failed."""
        now = time.monotonic()
        if self._nvidia_smi is None or now - self._gpu_at < _GPU_EVERY_S:
            return None
        self._gpu_at = now
        try:
            out = subprocess.run(
                [self._nvidia_smi, *_GPU_QUERY], capture_output=True, text=True, timeout=2.0, check=True
            ).stdout
            values = [float(line) for line in out.split() if line.strip()]
        except (OSError, subprocess.SubprocessError, ValueError):
            return None
        return _mean(values)


def _host_matches(ip: str, host: str) -> bool:
    if ip in _WILDCARDS or ip == host:
        return True
    bound = _address(ip)
    if bound is None:
        return False
    if host == "localhost":
        return bound.is_loopback
    wanted = _address(host)
    return wanted is not None and bound == wanted


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in `text`, IPv4-mapped IPv6 (::ffff:127.0.0.1) read as IPv4; None when not one."""
    try:
        addr = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None
