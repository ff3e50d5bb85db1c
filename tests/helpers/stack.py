"""The real embedded stack (`forgeflow up`: Prefect server, runner, API) in a temp workspace."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.helpers.api_server import free_port
from tests.helpers.tiers import NeedsIntegrationTier, unit_run

ROOT = Path(__file__).resolve().parents[2]
FORGEFLOW = str(Path(sys.executable).with_name("forgeflow"))
TERMINAL = ("completed", "failed", "cancelled", "crashed")


SHADOWING = ("core", "api", "tasks", "flows", "cli")  # forgeflow's import names


def shadowing_project(root: Path) -> Path:
    """A user's project whose own `core/`, `api/`, `tasks/`, `flows/` and `cli/` raise on import."""
    project = root / "user-project"
    for name in SHADOWING:
        (project / name).mkdir(parents=True, exist_ok=True)
        (project / name / "__init__.py").write_text(
            f"raise ImportError('the user project\\'s own {name}/ was imported instead of forgeflow\\'s')\n"
        )
    return project


@dataclass
class Stack:
    root: Path
    home: Path
    api: str
    prefect: str
    env: dict[str, str]
    started_in: Path  # where `forgeflow up` ran: a project that shadows forgeflow's packages

    def cli(self, *args: str, timeout: float = 600, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FORGEFLOW, *args], env=self.env, cwd=cwd, capture_output=True, text=True, timeout=timeout
        )

    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.home / "stack" / "state.json").read_text()))

    def status(self, job: str) -> dict[str, Any]:
        reply = httpx.get(f"{self.api}/status/{job}", timeout=30)
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

    def wait(self, job: str, until: tuple[str, ...] = TERMINAL, timeout: float = 600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(job)
            if status["status"] in until:
                return status
            assert time.monotonic() < deadline, f"job {job} still {status['status']}: {status}"
            time.sleep(1)

    def wait_state(self, job: str, state: str, timeout: float = 120) -> dict[str, Any]:
        """Until the Prefect state's name is `state` (Cancelling and Cancelled are both `cancelled`)."""
        deadline = time.monotonic() + timeout
        while (status := self.status(job))["state"] != state:
            assert time.monotonic() < deadline, f"job {job} still {status['state']}"
            time.sleep(0.5)
        return status

    def wait_for(self, job: str, check: Any, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(job)
            if check(status):
                return status
            assert status["status"] not in TERMINAL, f"job {job} ended first: {status}"
            assert time.monotonic() < deadline, f"job {job} never got there: {status}"
            time.sleep(0.5)


def stack_config(root: Path, extra: dict[str, Any] | None = None) -> Path:
    """A forgeflow.yaml for tests: small contexts, f16 exports only, fast crash detection."""
    config: dict[str, Any] = {
        "allowed_roots": [str(root), str(ROOT)],
        "export": {"quants": ["f16"], "parity_prompts": 2, "parity_tokens": 8},
        "serve": {"n_ctx": 512, "parallel": 2, "start_timeout_s": 60},
        "jobs": {"crash_after_s": 3, "start_timeout_s": 240},
    }
    for key, value in (extra or {}).items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    path = root / "forgeflow.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in config.items() if v != {}}))
    return path


@contextlib.contextmanager
def running_stack(root: Path, extra: dict[str, Any] | None = None) -> Iterator[Stack]:
    """`forgeflow up` on free ports in `root/ws`; `forgeflow down` after, which must leave nothing.

    `up` runs in a user's project whose own packages shadow forgeflow's (`shadowing_project`): every
    test on this stack is a test that nothing in the user's directory reaches forgeflow's processes.
    """
    if unit_run():
        raise NeedsIntegrationTier("this test starts the stack: mark it @pytest.mark.integration")
    api_port, prefect_port = free_port(), free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FORGEFLOW_"))
    }  # the test session's own temporary Prefect server is not the stack's
    env |= {
        "FORGEFLOW_HOME": str(root / "ws"),
        "FORGEFLOW_CONFIG": str(stack_config(root, extra)),
        "FORGEFLOW_SERVE__PORT": str(api_port),
        "FORGEFLOW_JOBS__PREFECT_PORT": str(prefect_port),
        "FORGEFLOW_LOG_LEVEL": "INFO",
    }
    api, prefect = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{prefect_port}"
    stack = Stack(root, root / "ws", api, prefect, env, shadowing_project(root))
    started = stack.cli("up", timeout=600, cwd=stack.started_in)
    try:
        assert started.returncode == 0, f"{started.stdout}\n{started.stderr}\n{_logs(stack)}"
        yield stack
    finally:
        pids = _stack_pids(stack)
        stopped = stack.cli("down", timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    deadline = time.monotonic() + 15  # a child killed with its parent may take a moment to go
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alive == [], f"`forgeflow down` left processes running: {alive}"


def _stack_pids(stack: Stack) -> list[int]:
    """The supervisor, its parts, and every process below them (flow runs, llama-servers)."""
    try:
        state = stack.state()
    except (OSError, ValueError):
        return []
    roots = [state["supervisor"], *(p["pid"] for p in state["parts"].values() if p["pid"])]
    found, todo = set(roots), list(roots)
    while todo:
        pid = todo.pop()
        for child in _children(pid):
            if child not in found:
                found.add(child)
                todo.append(child)
    return sorted(found)


def _children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return [int(c) for t in tasks for c in (t / "children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _logs(stack: Stack) -> str:
    logs = stack.home / "stack" / "logs"
    if not logs.is_dir():
        return ""
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.glob("*.log")))
