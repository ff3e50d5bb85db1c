"""The `forgeflow` Typer app and what every command shares: consoles, the error runner, progress.

Command modules import from here and never from each other; `cli.main` registers their commands.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from core.errors import ForgeflowError
from core.paths import display

if TYPE_CHECKING:
    from core.settings import Settings

app = typer.Typer(
    help="forgeflow: turn a git repository into its own local coding assistant.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True, soft_wrap=True)  # one error, one line: never wrapped
T = TypeVar("T")

RepoOpt = Annotated[str, typer.Option("--repo", help="local path or git URL (https, ssh, file)")]
DataOpt = Annotated[Path, typer.Option("--data", help="dataset directory (train.jsonl, eval.jsonl)")]
QuantOpt = Annotated[list[str] | None, typer.Option("--quant", help="f16, q8_0, q4_k_m (repeatable)")]


def run(fn: Callable[[], T]) -> T:
    """Run a command body; user errors become one red line and an exit code, never a traceback."""
    _quiet_libraries()
    debug = False
    try:
        settings = _settings()
        debug = settings.debug
        logging.basicConfig(level=settings.log_level, format="%(levelname)s %(message)s")
        return fn()
    except ForgeflowError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/yellow]")
        raise typer.Exit(130) from None
    except (typer.Exit, click.exceptions.Exit):  # a command's own exit code, not an error
        raise
    except Exception as exc:  # a bug of ours: say so in one line, keep the traceback for debugging
        if debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        hint = "(set FORGEFLOW_DEBUG=1 for a traceback)"
        err.print(f"[red]internal error:[/red] {type(exc).__name__}: {first} {hint}", highlight=False)
        raise typer.Exit(3) from None


def _settings() -> Settings:
    """The process settings; a bad config file or FORGEFLOW_* variable is the user's error, in one line."""
    from pydantic import ValidationError

    from core.settings import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ForgeflowError(
            f"invalid setting {where}: {first['msg']} (configs/forgeflow.yaml or FORGEFLOW_* variables)"
        ) from None


def run_flow(fn: Callable[[], Any], reports: Sequence[Path] = ()) -> Any:
    """Run a Prefect flow (called with `return_state=True`) under `run`.

    On failure the user sees the flow's one-line error, then where to look: the flow run (its URL
    when a Prefect UI is configured) and the reports the run wrote. The engine's own tracebacks stay
    in the run's logs, which the Prefect UI shows.
    """
    started = time.time()

    def body() -> Any:
        _quiet_prefect_console()
        state = fn()
        if not state.is_failed() and not state.is_crashed():
            return state.result()
        _where_to_look(state, reports, started)  # for every failure, ours or an internal error
        state.result()  # raises the run's error, which `run` turns into its one line
        raise ForgeflowError(state.message or "the flow run failed")

    return run(body)


def progress() -> Progress:
    """A transient progress display on stderr (nothing when stderr is not a terminal)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


def _where_to_look(state: Any, reports: Sequence[Path], started: float) -> None:
    from prefect.settings import PREFECT_UI_URL

    run_id = state.state_details.flow_run_id
    ui = PREFECT_UI_URL.value()
    # without a configured server the run lives in PREFECT_HOME's database: `prefect server start` shows it
    where = f"{ui}/runs/flow-run/{run_id}" if ui else f"flow run {run_id} (`prefect server start` shows it)"
    fresh = [display(p) for p in reports if p.is_file() and p.stat().st_mtime >= started - 1]
    # printed before the error line, so the error is what the user reads last
    err.print(f"see: {where}" + (f"; report: {', '.join(fresh)}" if fresh else ""), highlight=False)


def _quiet_libraries() -> None:
    # the CLI shows its own progress: silence the libraries' per-file bars and deprecation chatter
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # Prefect's telemetry row, written as the temporary server starts, races its own migrations on
    # SQLite ("database is locked" tracebacks in the terminal): forgeflow sends no telemetry anyway
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # the temporary server migrates a fresh database first: on 2 busy cores that takes over 20 s
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    warnings.filterwarnings("ignore", category=FutureWarning)


def _quiet_prefect_console() -> None:
    """Keep Prefect's engine logs (tracebacks included) out of the terminal; they still reach the API.

    Prefect's console handler sits on the root logger, so it is filtered, not silenced: forgeflow's
    own log lines (FORGEFLOW_LOG_LEVEL) still show.
    """
    from prefect.logging.configuration import setup_logging
    from prefect.logging.handlers import PrefectConsoleHandler

    setup_logging()
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, PrefectConsoleHandler) and _not_prefect not in handler.filters:
                handler.addFilter(_not_prefect)


def _not_prefect(record: logging.LogRecord) -> bool:
    return not (record.name == "prefect" or record.name.startswith("prefect."))
