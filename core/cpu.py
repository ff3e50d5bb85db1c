"""How training and serving share one machine's cores (`settings.cpu`; `forgeflow up` runs both).

Left alone, a training run and the champion's llama-server each take every core: torch's threads
and llama.cpp's spin on the same CPUs, and every token waits for a preempted decode thread (on a
busy 2-core machine inter-token latency went from ~14 ms to ~1.1 s). With `cpu.shared` the cores
are split: llama.cpp gets `cpu.serve_threads` per model, torch the rest (at least one), and the
training process runs at niceness `cpu.train_nice`, so the scheduler hands serving the CPU
whenever both want it. Not shared, nothing changes: every core for each, torch's own defaults.

"Cores" are the CPUs this process may run on (its affinity mask), not the machine's count.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from core.config import CpuConfig, ServeConfig

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)


def usable_cores() -> int:
    """The CPUs this process may run on (`taskset`, cgroup cpusets), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)  # pragma: no cover - no affinity API (not Linux)


def llama_threads(serve: ServeConfig, cpu: CpuConfig) -> int:
    """llama.cpp threads per model: `serve.n_threads` if set, else `cpu.serve_threads` when shared,
    else every core. (`serving_threads` for a Settings; the backend has only these two configs.)"""
    if serve.n_threads > 0:
        return serve.n_threads
    return cpu.serve_threads if cpu.shared else usable_cores()


def serving_threads(settings: Settings) -> int:
    """llama.cpp threads per model (`--threads`, `--threads-batch`) under these settings."""
    return llama_threads(settings.serve, settings.cpu)


def training_threads(settings: Settings) -> int:
    """torch threads for training: shared, the cores serving leaves (at least one); else every core."""
    cores = usable_cores()
    if not settings.cpu.shared:
        return cores
    return max(1, cores - serving_threads(settings))


def apply_training_budget(settings: Settings) -> None:
    """Fit this (training) process into its share of the cores; a no-op unless `cpu.shared`.

    Shared: torch intra-op threads = `training_threads`, inter-op threads too while torch still
    allows setting them (only before its first parallel work), and the niceness of every thread
    of the process raised to `cpu.train_nice`. Niceness only ever goes up (an unprivileged
    process cannot lower it back), so calling this again changes nothing. Not shared, torch keeps
    its own defaults (every core, or OMP_NUM_THREADS) and the niceness is left as it is.
    """
    cpu = settings.cpu
    if not cpu.shared:
        log.debug("cpu.shared is off: training keeps torch's default threads and its niceness")
        return
    import torch

    threads = training_threads(settings)
    torch.set_num_threads(threads)
    interop = "kept"
    if torch.get_num_interop_threads() != threads:
        try:
            torch.set_num_interop_threads(threads)
            interop = str(threads)
        except RuntimeError:  # inter-op work already started: torch fixes the pool then
            interop = f"kept at {torch.get_num_interop_threads()} (already in use)"
    before, after = _raise_niceness(cpu.train_nice)
    log.info(
        "cpu shared: training on %d of %d cores (torch threads %d, inter-op %s), niceness %d -> %d; "
        "llama.cpp keeps %d thread(s) per model",
        threads,
        usable_cores(),
        torch.get_num_threads(),
        interop,
        before,
        after,
        serving_threads(settings),
    )


def _raise_niceness(target: int) -> tuple[int, int]:
    """Every thread of this process to niceness `target` at least; (before, after) of this thread.

    Linux keeps a niceness per thread and a new thread inherits its creator's: threads that exist
    already (torch's pool, a progress bar's) are raised one by one, later ones start raised.
    """
    before = os.nice(0)
    if before < target:
        try:
            os.nice(target - before)
        except OSError as exc:  # pragma: no cover - raising niceness is always allowed
            log.warning("could not raise training's niceness to %d: %s", target, exc)
    tasks = Path("/proc/self/task")
    for tid in sorted(int(t) for t in os.listdir(tasks)) if tasks.is_dir() else []:
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            if os.getpriority(os.PRIO_PROCESS, tid) < target:
                os.setpriority(os.PRIO_PROCESS, tid, target)
    return before, os.nice(0)
