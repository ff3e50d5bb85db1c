"""One `python -m llama_cpp.server` child process: started on a free port, health-checked, stopped.

Children die with us: Linux's PR_SET_PDEATHSIG kills them if this process dies without cleaning up,
and `stop()` ends them with SIGTERM, then SIGKILL. Their stdout and stderr go to a log file whose
last meaningful line becomes the error message when a server fails to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from core.paths import scrub_paths
from core.serving.base import BackendError, BackendUnavailable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
HOST = "127.0.0.1"
LOG_TAIL_BYTES = 64 * 1024
_BIND_RACE = "address already in use"
_ERROR_LINE = re.compile(r"error|exception|failed|refus|invalid|unknown|not found", re.IGNORECASE)


class PortTaken(BackendError):
    """Another process bound the port between our probe and the server's bind: pick another."""


def free_port() -> int:
    """A port nothing listens on right now (the caller retries if someone takes it first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@functools.cache
def _settings_variables() -> frozenset[str]:
    """Environment variables llama_cpp.server reads as settings (pydantic-settings, any case)."""
    from llama_cpp.server.settings import Settings

    return frozenset(name.upper() for name in Settings.model_fields) | {"CONFIG_FILE"}


def child_env(port: int) -> dict[str, str]:
    """Our environment minus anything llama_cpp.server would read as a setting (API_KEY, CONFIG_FILE,
    CHAT_FORMAT...), so only the command line configures it; HOST and PORT override its CLI flags."""
    blocked = _settings_variables()
    env = {k: v for k, v in os.environ.items() if k.upper() not in blocked}
    env |= {"HOST": HOST, "PORT": str(port), "PYTHONUNBUFFERED": "1"}
    return env


def _die_with_parent(parent_pid: int) -> None:
    """Runs in the child before exec: ask the kernel for SIGKILL when the parent goes away."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def meaningful_line(log: str) -> str:
    """The line of a server log that best says why it failed (llama.cpp's own reason first)."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("File ", "Traceback", "^", "~"))]
    for line in lines:
        if "error loading model:" in line:  # llama.cpp's reason; Python's ValueError only says "failed"
            return scrub_paths(line.split("error loading model:", 1)[1].strip())
    errors = [line for line in lines if _ERROR_LINE.search(line)]
    chosen = errors[-1] if errors else (lines[-1] if lines else "no output")
    return scrub_paths(chosen)[:500]


class ServerProcess:
    """A running llama_cpp.server child; `spawn`, then `wait_ready`, finally `stop`."""

    def __init__(self, popen: subprocess.Popen[bytes], port: int, log_path: Path, log_offset: int) -> None:
        self.popen, self.port, self.log_path, self._log_offset = popen, port, log_path, log_offset
        self.base_url = f"http://{HOST}:{port}"

    @classmethod
    def spawn(cls, args: list[str], log_path: Path) -> ServerProcess:
        """Start `python -m llama_cpp.server ARGS --host --port` on a free port, logging to `log_path`.

        Call it from the event loop's thread: PR_SET_PDEATHSIG fires when the *thread* that forked the
        child exits, so a short-lived worker thread would take the server down with it.
        """
        port = free_port()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "llama_cpp.server", *args, "--host", HOST, "--port", str(port)]
        with log_path.open("ab") as log:
            offset = log.seek(0, os.SEEK_END)
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting on port {port}\n".encode())
            log.flush()
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env(port),
                preexec_fn=functools.partial(_die_with_parent, os.getpid()),
                start_new_session=True,  # Ctrl-C in our terminal is ours to handle, not the servers'
            )
        return cls(popen, port, log_path, offset)

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
        """Poll GET /v1/models until it lists `alias`.

        Raises:
            PortTaken: the server lost the race for its port (start another).
            BackendError: the server exited (its log's reason in the message).
            BackendUnavailable: it did not answer within `timeout_s` (it is stopped).
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive:
                tail = self.log_tail()
                if _BIND_RACE in tail:
                    raise PortTaken(f"port {self.port} was taken")
                raise BackendError(f"{alias}: the llama.cpp server exited: {meaningful_line(tail)}")
            with contextlib.suppress(httpx.TransportError):
                resp = await client.get(f"{self.base_url}/v1/models", timeout=1.0)
                if resp.status_code == 200 and alias in {m.get("id") for m in resp.json().get("data", [])}:
                    return
            await asyncio.sleep(0.1)
        await self.stop()
        raise BackendUnavailable(
            f"{alias}: the llama.cpp server did not answer within {timeout_s:g}s "
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
