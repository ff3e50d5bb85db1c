"""One `llama-server` child process: started on a port of its own choosing, health-checked, stopped.

The server binds port 0 (the kernel picks a free one, so no other process can take it between a
probe and the bind) and logs `listening on http://127.0.0.1:PORT` once its model is loaded; we read
the port from its log and confirm with `GET /health`.

Children die with us: Linux's PR_SET_PDEATHSIG kills them if this process dies without cleaning up,
and `stop()` ends them with SIGTERM, then SIGKILL. Their stdout and stderr go to a log file whose
last meaningful line becomes the error message when a server fails to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from core.paths import scrub_paths
from core.processes import spawn
from core.serving.base import BackendError, BackendUnavailable

HOST = "127.0.0.1"
LOG_TAIL_BYTES = 64 * 1024
_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
_ERROR_LINE = re.compile(r"error|exception|failed|refus|invalid|unknown|not found", re.IGNORECASE)
_LLAMA_ERROR = re.compile(r"error loading model(?: architecture)?:\s*(.+)")


def llama_server_binary(configured: str | None = None) -> Path | None:
    """The `llama-server` to run: the configured path, else the one installed beside this Python
    (`make install` puts the portable build into the virtualenv), else one on PATH."""
    if configured:
        path = Path(configured).expanduser()
        return path if path.is_file() and os.access(path, os.X_OK) else None
    beside = Path(sys.executable).parent / "llama-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("llama-server")
    return Path(found) if found else None


def child_env() -> dict[str, str]:
    """Our environment minus what llama-server would read as settings (LLAMA_ARG_*, LLAMA_API_KEY,
    its log options): only the command line configures it."""
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("LLAMA_")}


def meaningful_line(log: str) -> str:
    """The line of a server log that best says why it failed (llama.cpp's own reason first)."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for line in lines:
        found = _LLAMA_ERROR.search(line)
        if found:  # the loader's reason; the lines after it only say that loading failed
            return scrub_paths(found.group(1).strip())[:500]
    errors = [line for line in lines if _ERROR_LINE.search(line)]
    chosen = errors[-1] if errors else (lines[-1] if lines else "no output")
    return scrub_paths(chosen)[:500]


class ServerProcess:
    """A running llama-server child; `spawn`, then `wait_ready`, finally `stop`."""

    def __init__(self, popen: subprocess.Popen[bytes], log_path: Path, log_offset: int) -> None:
        self.popen, self.log_path, self._log_offset = popen, log_path, log_offset
        self.port = 0  # known once the server listens
        self.base_url = ""

    @classmethod
    def spawn(cls, binary: Path, args: list[str], log_path: Path) -> ServerProcess:
        """Start `llama-server ARGS --host 127.0.0.1 --port 0`, logging to `log_path`.

        Call it from the event loop's thread: PR_SET_PDEATHSIG fires when the *thread* that forked the
        child exits, so a short-lived worker thread would take the server down with it.
        """
        argv = [str(binary), *args, "--host", HOST, "--port", "0"]
        offset = log_path.stat().st_size if log_path.exists() else 0  # this run's lines start here
        header = f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting\n"
        return cls(spawn(argv, log_path, env=child_env(), header=header), log_path, offset)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self) -> str:
        """What this run of the server wrote so far (its last 64 KiB)."""
        try:
            with self.log_path.open("rb") as log:
                start = max(self._log_offset, log.seek(0, os.SEEK_END) - LOG_TAIL_BYTES)
                log.seek(start)
                return log.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    async def wait_ready(self, client: httpx.AsyncClient, alias: str, timeout_s: float) -> None:
        """Wait until the server says where it listens and `GET /health` answers 200 (model loaded).

        Raises:
            BackendError: the server exited (its log's reason in the message).
            BackendUnavailable: it was not ready within `timeout_s` (it is stopped).
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive:
                reason = meaningful_line(self.log_tail())
                raise BackendError(f"{alias}: the llama.cpp server exited: {reason}")
            if not self.port:
                found = _LISTENING.findall(self.log_tail())
                if found:
                    self.port = int(found[-1])
                    self.base_url = f"http://{HOST}:{self.port}"
            if self.port:
                with contextlib.suppress(httpx.TransportError):
                    resp = await client.get(f"{self.base_url}/health", timeout=1.0)
                    if resp.status_code == 200:
                        return
            await asyncio.sleep(0.05)
        await self.stop()
        raise BackendUnavailable(
            f"{alias}: the llama.cpp server was not ready within {timeout_s:g}s "
            f"(raise serve.start_timeout_s for large models): {meaningful_line(self.log_tail())}",
            retry_after=max(1, int(timeout_s)),
        )

    async def stop(self, grace_s: float = 3.0) -> None:
        """SIGTERM, up to `grace_s` to exit, then SIGKILL; returns once the process is reaped."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.popen.terminate()
            deadline = time.monotonic() + grace_s
            while self.alive and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        self.kill()

    def kill(self) -> None:
        """SIGKILL and reap, synchronously: for cleanup paths that may not await (cancellation)."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
