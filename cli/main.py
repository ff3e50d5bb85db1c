"""The `forgeflow` command line: thin wrappers over tasks and flows, with rich progress."""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.errors import ForgeflowError
from core.settings import get_settings

app = typer.Typer(
    help="forgeflow: turn a git repository into its own local coding assistant.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True, soft_wrap=True)  # one error, one line: never wrapped
T = TypeVar("T")

RepoOpt = Annotated[str, typer.Option("--repo", help="local path or git URL (https, ssh, file)")]


def _run(fn: Callable[[], T]) -> T:
    """Run a command body; user errors become one red line and an exit code, never a traceback."""
    logging.basicConfig(
        level=os.environ.get("FORGEFLOW_LOG_LEVEL", "WARNING"), format="%(levelname)s %(message)s"
    )
    # the CLI shows its own progress: silence the libraries' per-file bars and deprecation chatter
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        return fn()
    except ForgeflowError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/yellow]")
        raise typer.Exit(130) from None
    except Exception as exc:  # a bug of ours: say so in one line, keep the traceback for debugging
        if os.environ.get("FORGEFLOW_DEBUG"):
            raise
        err.print(
            f"[red]internal error:[/red] {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            " (set FORGEFLOW_DEBUG=1 for a traceback)",
            highlight=False,
        )
        raise typer.Exit(3) from None


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


@app.command()
def monitor(
    repo: RepoOpt = ".",
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    mark_trained: Annotated[
        str | None, typer.Option(help="record that a model was trained at this commit")
    ] = None,
) -> None:
    """Should this repository's assistant be retrained? (or record a training with --mark-trained)"""
    from core.repos import resolve_repo
    from tasks.monitor.run import check_repo
    from tasks.monitor.run import mark_trained as mark

    def body() -> None:
        settings = get_settings()
        handle = resolve_repo(repo, settings)
        if mark_trained:
            sha = mark(handle, mark_trained, settings)
            out.print(json.dumps({"last_trained_commit": sha}) if as_json else f"marked trained at {sha}")
            return
        report = check_repo(handle, settings)
        if as_json:
            out.print_json(report.model_dump_json())
            return
        verdict = "[bold green]retrain[/]" if report.should_retrain else "[bold]up to date[/]"
        out.print(f"{verdict}: {report.reason}")
        table = Table(show_header=False, box=None)
        for k, v in report.metrics.model_dump().items():
            table.add_row(k, str(v))
        out.print(table)

    _run(body)


@app.command()
def extract(
    repo: RepoOpt = ".",
    out_dir: Annotated[Path, typer.Option("--out", help="dataset directory to write")] = Path("data/dataset"),
    rev: Annotated[str, typer.Option(help="commit to extract from")] = "HEAD",
) -> None:
    """Extract train/eval instruction samples from a repository's code, docs and history."""
    from core.repos import resolve_repo
    from tasks.extract.run import extract_dataset

    def body() -> dict[str, Any]:
        settings = get_settings()
        handle = resolve_repo(repo, settings)
        with _progress() as bar:
            tasks: dict[str, Any] = {}

            def report(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=total)
                bar.update(tasks[stage], completed=done, total=total)

            return extract_dataset(
                handle.path,
                out_dir,
                settings.extract,
                settings.cache_dir,
                rev=rev,
                display=handle.display,
                progress=report,
            )

    stats = _run(body)
    _print_summary(stats, out_dir)


def _print_summary(stats: dict[str, Any], out_dir: Path) -> None:
    s = stats["samples"]
    out.print(
        f"[bold]{s['total']}[/] samples ([green]{s['train']}[/] train, [cyan]{s['eval']}[/] eval) "
        f"from {stats['files']['sources']} files at {stats['commit'][:12]} → {out_dir}"
    )
    table = Table("task", "samples")
    for task, n in s["by_task"].items():
        table.add_row(task, str(n))
    out.print(table)
    skipped = {**stats["files"]["skipped"], **{f"dropped:{k}": v for k, v in stats["dropped"].items()}}
    if skipped:
        out.print("skipped/dropped: " + ", ".join(f"{k}={v}" for k, v in skipped.items()))


@app.command()
def validate(
    dataset: Annotated[Path, typer.Argument(help="dataset directory (train.jsonl, eval.jsonl)")],
) -> None:
    """Check a dataset with Great Expectations; exit 1 naming the failed expectations."""
    from core.base_models import load_tokenizer
    from core.errors import ValidationFailed
    from tasks.validate.run import failure_message, validate_dataset

    def body() -> None:
        settings = get_settings()
        tokenizer = load_tokenizer(settings.validation.tokenizer, settings.cache_dir)
        report = validate_dataset(dataset, settings.validation, tokenizer)
        for e in report.expectations:
            mark = "[green]✓[/]" if e.success else "[red]✗[/]"
            out.print(f"{mark} {e.name}: {e.detail}", highlight=False)
        if not report.passed:
            raise ValidationFailed(failure_message(report))
        out.print(f"[green]passed[/]: {report.samples} samples ({report.train} train, {report.eval} eval)")

    _run(body)


@app.command()
def prepare(
    repo: RepoOpt = ".",
    out_dir: Annotated[Path, typer.Option("--out")] = Path("data/dataset"),
    only_if_changed: Annotated[
        bool, typer.Option(help="skip extraction unless the monitor says retrain")
    ] = False,
) -> None:
    """Run the prepare-data Prefect flow: monitor → extract → validate."""
    from flows.prepare_data import PrepareDataParams, prepare_data

    def body() -> dict[str, Any]:
        params = PrepareDataParams(repo=repo, out_dir=str(out_dir), only_if_changed=only_if_changed)
        return prepare_data(params)

    result = _run(body)
    out.print(f"monitor: {result['monitor']['reason']}")
    if result.get("extract"):
        _print_summary(result["extract"], out_dir)
        out.print(f"validation: [green]passed[/] ({result['validation']['samples']} samples)")


import cli.models  # noqa: E402,F401  (registers the `models` group)
import cli.serving  # noqa: E402,F401  (registers deploy, serve)
import cli.training  # noqa: E402,F401  (registers finetune, evaluate, export, pipeline)
