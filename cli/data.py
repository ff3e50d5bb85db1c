"""`forgeflow monitor | extract | validate | prepare`: the data half of the pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.app import RepoOpt, out, progress, run, run_flow
from core.paths import display
from core.reports import ExtractReport
from core.settings import get_settings


def monitor(
    repo: RepoOpt = ".",
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    mark_trained: Annotated[
        str | None, typer.Option(help="record that a model was trained at this commit")
    ] = None,
) -> None:
    """Should this repository's assistant be retrained? (or record a training with --mark-trained)"""
    from core.repos.spec import resolve_repo
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

    run(body)


def extract(
    repo: RepoOpt = ".",
    out_dir: Annotated[Path, typer.Option("--out", help="dataset directory to write")] = Path("data/dataset"),
    rev: Annotated[str, typer.Option(help="commit to extract from")] = "HEAD",
) -> None:
    """Extract train/eval instruction samples from a repository's code, docs and history."""
    from core.budget import token_budget
    from core.repos.spec import resolve_repo
    from tasks.extract.run import extract_dataset

    def body() -> ExtractReport:
        settings = get_settings()
        handle = resolve_repo(repo, settings)
        with progress() as bar:
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
                token_budget(settings),
                rev=rev,
                display=handle.display,
                progress=report,
                index_cfg=settings.index,
            )

    stats = run(body)
    _print_summary(stats, out_dir)


def _print_summary(stats: ExtractReport, out_dir: Path) -> None:
    s = stats.samples
    out.print(
        f"[bold]{s.total}[/] samples ([green]{s.train}[/] train, [cyan]{s.eval}[/] eval) "
        f"from {stats.files.sources} files at {stats.commit[:12]} → {out_dir}"
    )
    table = Table("task", "samples")
    for task, n in s.by_task.items():
        table.add_row(task, str(n))
    out.print(table)
    skipped = {**stats.files.skipped, **{f"dropped:{k}": v for k, v in stats.dropped.items()}}
    if skipped:
        out.print("skipped/dropped: " + ", ".join(f"{k}={v}" for k, v in skipped.items()))


def validate(
    dataset: Annotated[Path, typer.Argument(help="dataset directory (train.jsonl, eval.jsonl)")],
) -> None:
    """Check a dataset with Great Expectations; exit 1 naming the failed expectations."""
    from core.budget import token_budget
    from core.errors import ValidationFailed
    from tasks.validate.run import REPORT_MD, dataset_files, failure_message, validate_dataset

    def body() -> None:
        settings = get_settings()
        dataset_files(dataset)  # fail fast, before the tokenizer loads
        report = validate_dataset(dataset, settings.validation, token_budget(settings))
        for e in report.expectations:
            mark = "[green]✓[/]" if e.success else "[red]✗[/]"
            out.print(f"{mark} {e.name}: {e.detail}", highlight=False)
        if not report.passed:
            raise ValidationFailed(failure_message(report))
        tokens = report.token_stats
        out.print(
            f"[green]validation passed[/]: {report.samples} samples "
            f"({report.train} train, {report.eval} eval), "
            f"tokens max {tokens.get('max', 0):.0f} p95 {tokens.get('p95', 0):.0f}; "
            f"report in {display(dataset / REPORT_MD)}",
            highlight=False,
        )

    run(body)


def prepare(
    repo: RepoOpt = ".",
    out_dir: Annotated[Path, typer.Option("--out")] = Path("data/dataset"),
    only_if_changed: Annotated[
        bool, typer.Option(help="skip extraction unless the monitor says retrain")
    ] = False,
) -> None:
    """Run the prepare-data Prefect flow: monitor → extract → validate."""
    from flows.prepare_data import PrepareDataParams, prepare_data

    params = {"repo": repo, "out_dir": str(out_dir), "only_if_changed": only_if_changed}
    result = run_flow(
        lambda: prepare_data(PrepareDataParams(**params), return_state=True), [out_dir / "validation.md"]
    )
    out.print(f"monitor: {result.monitor.reason}")
    if result.extract is not None:
        _print_summary(result.extract, out_dir)
    if result.validation is not None:
        out.print(f"validation: [green]passed[/] ({result.validation.samples} samples)")
