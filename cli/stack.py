"""`forgeflow up | down | status`: the embedded stack (Prefect server + UI, runner, API), supervised.

Also the stack's own entry points, which `up` starts: `forgeflow supervise` (the supervisor) and
`forgeflow runner` (serves the deployments). Every part gets the same PREFECT_API_URL, so nothing
ever starts a throwaway Prefect server, and every part dies with the supervisor.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import typer
from rich.table import Table

from cli.app import err, out, run
from core.errors import ForgeflowError
from core.processes import forgeflow_command
from core.settings import Settings, get_settings
from core.stack.supervisor import read_state, stack_dir, stack_env, supervisor_pid


def up() -> None:
    """Start the stack (Prefect server and UI, the runner, the API) and wait until each part answers."""

    def body() -> None:
        settings = get_settings()
        if supervisor_pid(settings) is not None:
            out.print("the stack is running already:")
            _print_status(settings)
            return
        directory = stack_dir(settings)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "state.json").unlink(missing_ok=True)
        with (directory / "supervisor.log").open("ab") as log:
            proc = subprocess.Popen(
                forgeflow_command("supervise"),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=stack_env(settings),
                cwd=settings.home,  # the workspace: the user's directory is never on the stack's path
                start_new_session=True,  # the stack outlives this command, not the other way round
            )
        deadline = time.monotonic() + settings.jobs.start_timeout_s * 2
        with err.status("starting the stack: Prefect server, runner, API") as status:
            while True:
                state = read_state(settings) or {}
                parts = state.get("parts", {})
                waiting = (
                    [n for n, p in parts.items() if not p["ready"]] if parts else ["prefect", "runner", "api"]
                )
                if parts and not waiting:
                    break
                status.update(f"starting the stack: waiting for {', '.join(waiting)}")
                if proc.poll() is not None:
                    raise ForgeflowError(
                        f"the stack's supervisor exited ({proc.returncode}): see {_logs(settings)}"
                    )
                if time.monotonic() > deadline:
                    _stop(settings, proc.pid)
                    raise ForgeflowError(
                        f"{', '.join(waiting)} did not answer in time: see {_logs(settings)}"
                    )
                time.sleep(1)
        _print_status(settings)
        out.print("stop it with `forgeflow down`")

    run(body)


def down() -> None:
    """Stop exactly the stack's processes (and the flow runs and model servers they started)."""

    def body() -> None:
        settings = get_settings()
        pid = supervisor_pid(settings)
        if pid is None:
            out.print("no stack is running")
            return
        _stop(settings, pid)
        out.print("stack stopped")

    run(body)


def status() -> None:
    """Each part of the stack: its process, whether it answers, its URL and log."""

    def body() -> None:
        settings = get_settings()
        if supervisor_pid(settings) is None:
            out.print("no stack is running: start it with `forgeflow up`")
            raise typer.Exit(1)
        _print_status(settings)

    run(body)


def supervise() -> None:
    """(internal) The stack's supervisor: `forgeflow up` starts it."""
    from core.jobs.watchdog import Watchdog, sweep_stopped_jobs
    from core.stack.supervisor import Supervisor

    settings = get_settings()
    watchdog = Watchdog(settings)
    swept = False

    def tick() -> None:
        nonlocal swept
        if not swept:
            sweep_stopped_jobs(settings)
            swept = True
        watchdog.check()

    Supervisor(settings, tick=tick).run()


def runner() -> None:
    """(internal) Serve forgeflow's Prefect deployments: the stack runs one."""
    from flows.deployments import serve_deployments

    serve_deployments(get_settings())


def _stop(settings: Settings, pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    with err.status("stopping the stack"):
        while time.monotonic() < deadline:
            if supervisor_pid(settings) is None:
                return
            time.sleep(0.5)
    os.killpg(pid, signal.SIGKILL)  # its children die with it (PR_SET_PDEATHSIG)


def _logs(settings: Settings) -> str:
    from core.paths import display

    return display(stack_dir(settings) / "logs", fallback="the stack's logs")


def _print_status(settings: Settings) -> None:
    state = read_state(settings) or {}
    table = Table("part", "pid", "answers", "restarts", "log")
    for name, part in state.get("parts", {}).items():
        answers = "[green]yes[/]" if part["ready"] else "[red]no[/]"
        table.add_row(name, str(part["pid"] or "-"), answers, str(part["restarts"]), part["log"])
    out.print(table)
    parts = state.get("parts", {})
    if "prefect" in parts:
        ui = parts["prefect"]["url"]
        out.print(f"Prefect UI: {ui}  (jobs are the `retrain` flow's runs)", soft_wrap=True)
    if "api" in parts:
        out.print(f"API: {parts['api']['url']}  (OpenAI base URL {parts['api']['url']}/v1)", soft_wrap=True)
