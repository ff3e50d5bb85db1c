"""The embedded stack's processes: what they are, where their files live, and a supervisor for them.

`forgeflow up` starts one supervisor process (detached); the supervisor starts each part with
PR_SET_PDEATHSIG (so nothing outlives it), restarts a part that dies, and writes `state.json`.
`forgeflow down` sends the supervisor SIGTERM: it stops the parts in reverse order and exits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from core.atomic import write_json
from core.processes import forgeflow_command, python_command, spawn
from core.settings import CONFIG_ENV, MAIN_CONFIG, Settings, config_file

HOST = "127.0.0.1"
STATE = "state.json"
SUPERVISOR_PID = "supervisor.pid"
RESTART_BACKOFF_S = (1, 2, 5, 10, 30)


def stack_dir(settings: Settings) -> Path:
    return settings.home / "stack"


def prefect_api_url(settings: Settings) -> str:
    return f"{settings.prefect_ui_url}/api"


def stack_env(settings: Settings) -> dict[str, str]:
    """The environment every part gets: one Prefect server for all, one workspace, shared cores.

    The parts run in the workspace, not in the directory `forgeflow up` ran in, so what that directory
    decided is passed on explicitly: its main config file (and so the profiles beside it) and the
    allowed roots as resolved there.
    """
    env = dict(os.environ)
    main = config_file(MAIN_CONFIG)
    if main is not None:
        env[CONFIG_ENV] = str(main.resolve())
    env.update(
        {
            "FORGEFLOW_HOME": str(settings.home),
            "FORGEFLOW_ALLOWED_ROOTS": json.dumps([str(p) for p in settings.allowed_roots]),
            "PREFECT_API_URL": prefect_api_url(settings),
            "PREFECT_HOME": str(settings.home / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_URL": settings.prefect_ui_url,
            "FORGEFLOW_CPU__SHARED": "true",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@dataclass
class Part:
    """One supervised process: its command, and how to tell it answers."""

    name: str
    argv: list[str]
    url: str
    ready: Callable[[float], bool]  # given when this process started (epoch seconds)
    after: list[str] = field(default_factory=list)  # parts that must answer before this one starts


def parts(settings: Settings) -> list[Part]:
    """Prefect server, the runner serving forgeflow's deployments, the API (with its serving backend)."""
    api = settings.api_url
    port = str(settings.jobs.prefect_port)
    ui = settings.prefect_ui_url
    prefect = python_command("-m", "prefect", "server", "start", "--host", HOST, "--port", port)
    return [
        Part("prefect", prefect, ui, lambda _since: _answers(f"{ui}/api/health")),
        Part("runner", forgeflow_command("runner"), ui, lambda t: _polled(settings, t), after=["prefect"]),
        Part("api", forgeflow_command("serve"), api, lambda _t: _answers(f"{api}/health"), after=["prefect"]),
    ]


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _polled(settings: Settings, since: float) -> bool:
    """This runner process polls for the training deployment's runs (Prefect records `last_polled`)."""
    from datetime import datetime

    from core.jobs.status import DEPLOYMENT_PATH

    try:
        reply = httpx.get(f"{prefect_api_url(settings)}/deployments/name/{DEPLOYMENT_PATH}", timeout=2)
    except httpx.HTTPError:
        return False
    polled = reply.json().get("last_polled") if reply.status_code == 200 else None
    return polled is not None and datetime.fromisoformat(polled).timestamp() >= since


def read_state(settings: Settings) -> dict[str, Any] | None:
    try:
        return dict(json.loads((stack_dir(settings) / STATE).read_text()))
    except (OSError, ValueError):
        return None


def supervisor_pid(settings: Settings) -> int | None:
    """The running supervisor's pid, or None (a stale pid file is ignored)."""
    try:
        pid = int((stack_dir(settings) / SUPERVISOR_PID).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"supervise" in cmdline else None


class Supervisor:
    """Runs in `forgeflow stack supervise`: starts the parts, restarts them, stops them on SIGTERM."""

    def __init__(self, settings: Settings, tick: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.dir = stack_dir(settings)
        self.parts = {p.name: p for p in parts(settings)}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started: dict[str, float] = {}
        self.ready: dict[str, bool] = dict.fromkeys(self.parts, False)
        self.restarts: dict[str, int] = dict.fromkeys(self.parts, 0)
        self.next_start: dict[str, float] = dict.fromkeys(self.parts, 0.0)
        self.errors: dict[str, str] = {}
        self.tick = tick  # the jobs watchdog, run each loop once Prefect answers
        self.stopping = False

    def run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / SUPERVISOR_PID).write_text(str(os.getpid()))
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        try:
            while not self.stopping:
                self._step()
                time.sleep(1.0)
        finally:
            self._shutdown()

    def _stop(self, *_: object) -> None:
        self.stopping = True

    def _step(self) -> None:
        now = time.monotonic()
        for name, part in self.parts.items():
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:  # died: restart after a backoff
                self.errors[name] = f"exited with {proc.returncode}; restarted (see logs/{name}.log)"
                del self.procs[name]
                self.ready[name] = False
                backoff = RESTART_BACKOFF_S[min(self.restarts[name], len(RESTART_BACKOFF_S) - 1)]
                self.restarts[name] += 1
                self.next_start[name] = now + backoff
            if (
                name not in self.procs
                and now >= self.next_start[name]
                and all(self.ready[a] for a in part.after)
            ):
                self.procs[name] = self._spawn(part)
                self.started[name] = time.time() - 1
            if name in self.procs and not self.ready[name]:
                self.ready[name] = part.ready(self.started[name])
        if self.tick is not None and self.ready.get("prefect"):
            try:
                self.tick()
            except Exception as exc:  # the watchdog must never take the stack down
                self.errors["watchdog"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        self._write_state()

    def _spawn(self, part: Part) -> subprocess.Popen[bytes]:
        return spawn(
            part.argv,
            self.dir / "logs" / f"{part.name}.log",
            env=stack_env(self.settings),
            cwd=self.settings.home,  # the workspace, never the directory `forgeflow up` ran in
            header=f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {part.name}\n",
        )

    def _write_state(self) -> None:
        write_json(
            self.dir / STATE,
            {
                "supervisor": os.getpid(),
                "updated": time.time(),
                "parts": {
                    name: {
                        "pid": self.procs[name].pid if name in self.procs else None,
                        "url": part.url,
                        "ready": self.ready[name],
                        "restarts": self.restarts[name],
                        "log": f"logs/{name}.log",
                        "error": self.errors.get(name),
                    }
                    for name, part in self.parts.items()
                },
                "watchdog_error": self.errors.get("watchdog"),
            },
        )

    def _shutdown(self) -> None:
        for name in reversed(list(self.parts)):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            os.killpg(proc.pid, signal.SIGTERM)  # the part and whatever it started (flow runs, servers)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        (self.dir / STATE).unlink(missing_ok=True)
        (self.dir / SUPERVISOR_PID).unlink(missing_ok=True)
