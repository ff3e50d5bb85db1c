"""How forgeflow starts its own Python processes: nothing in the user's directory can shadow forgeflow,
and a child dies with its parent.

forgeflow's import names (`core`, `api`, `tasks`, `flows`, `cli`) are generic, and a user's repo often
has a package of the same name. Python puts the current directory first on `sys.path` for `python -m`
and `python -c`, so a child started that way from such a repo would import the user's `core/`, not
forgeflow's. Every child forgeflow starts therefore runs either the `forgeflow` console script (Python
puts the script's own directory first, the virtualenv's `bin/`) or Python in safe-path mode (`-P`, which
keeps the current and the script's directory out of `sys.path`), with the workspace as its working
directory.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import subprocess
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def python_command(*args: str) -> list[str]:
    """`python -P ARGS` with this interpreter: the current directory never enters `sys.path`."""
    return [sys.executable, "-P", *args]


def forgeflow_command(*args: str) -> list[str]:
    """The `forgeflow` CLI with ARGS: the console script beside this Python, else `python -P -m cli.main`."""
    script = Path(sys.executable).with_name("forgeflow")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script), *args]
    return python_command("-m", "cli.main", *args)


def die_with_parent_preexec(parent_pid: int) -> None:
    """Runs in a child before exec (`preexec_fn`): ask the kernel for SIGKILL when `parent_pid` dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (a runner's flow-run process)."""
    parent = os.getppid()
    if parent == 1:
        return  # already adopted by init: there is no parent to follow
    die_with_parent_preexec(parent)


def spawn(
    argv: list[str],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    header: str = "",
) -> subprocess.Popen[bytes]:
    """Start a child that dies with this process: its own session (a Ctrl-C in our terminal is ours
    to handle), no stdin, stdout and stderr appended to `log` after `header`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        if header:
            out.write(header.encode())
            out.flush()
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=functools.partial(die_with_parent_preexec, os.getpid()),
            start_new_session=True,
        )
