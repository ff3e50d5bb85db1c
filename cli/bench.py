"""`forgeflow bench`: measure served models on a suite (TTFT, TPOT, ITL, tokens/s, goodput)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.app import out, progress, run, run_flow


def _levels(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter("use comma-separated integers, e.g. 1,2,4,8") from None
    if not levels or min(levels) < 1:
        raise typer.BadParameter("concurrency levels are integers of 1 or more, e.g. 1,4")
    return levels


def bench(
    model: Annotated[
        list[str], typer.Option("--model", help="registry ref (name, name:version, name:alias), repeatable")
    ],
    suite: Annotated[
        str | None, typer.Option(help="configs/benchmarks/<suite>.yaml (default: bench.suite)")
    ] = None,
    concurrency: Annotated[str | None, typer.Option(help="levels to sweep, e.g. 1,2,4,8")] = None,
    requests: Annotated[int | None, typer.Option(help="measured requests per level")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="tokens each request generates")] = None,
    rate: Annotated[
        float | None, typer.Option(help="Poisson arrivals per second (default: closed loop)")
    ] = None,
    warmup: Annotated[int | None, typer.Option(help="unmeasured requests per model first")] = None,
    scenario: Annotated[list[str] | None, typer.Option("--scenario", help="only these scenarios")] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="dataset for the repo suite (eval split)")
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="another OpenAI-compatible server (default: ours)")
    ] = None,
    allow_remote: Annotated[bool, typer.Option(help="allow a non-loopback --base-url")] = False,
    ignore_eos: Annotated[bool, typer.Option(help="generate exactly max tokens where supported")] = True,
) -> None:
    """Benchmark models through their OpenAI-compatible streaming endpoint; results go to the registry."""
    from core.bench.params import BenchParams
    from flows.benchmark import benchmark_flow
    from tasks.benchmark import run as stage

    params = run(
        lambda: BenchParams(
            models=model, suite=suite, base_url=base_url, allow_remote=allow_remote,
            concurrency=_levels(concurrency), requests=requests, max_tokens=max_tokens, rate=rate,
            warmup=warmup, scenarios=scenario or None, dataset=str(data) if data else None,
            ignore_eos=ignore_eos, source="cli",
        )
    )  # fmt: skip
    with progress() as bar:
        task = bar.add_task("benchmark", total=None)

        def update(what: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=what)

        stage.LISTENERS.append(update)
        try:
            report = run_flow(lambda: benchmark_flow(params, return_state=True))
        finally:
            stage.LISTENERS.remove(update)
    out.print(_table(report))
    for name, cold in report.cold.items():
        loaded = {True: "was loaded", False: "loaded for it", None: "load state unknown"}[cold.loaded_before]
        out.print(f"cold start {name}: TTFT {_ms(cold.ttft_ms)}, e2e {_ms(cold.e2e_ms)} ({loaded})")
    for note in report.notes:
        out.print(f"[yellow]note:[/] {note}")
    out.print(
        f"[bold]{report.status}[/]: run {report.run_id} · "
        f"{report.out_dir}/summary.md, results.csv, chart.png",
        highlight=False,
    )
    if report.status != "completed":
        raise typer.Exit(1)


# the Markdown summary's figures that fit a terminal
SHOWN = {
    "out tok/s",
    "req/s",
    "TTFT p50 ms",
    "TTFT p95 ms",
    "TPOT p50 ms",
    "ITL p50 ms",
    "e2e p50 ms",
    "e2e p99 ms",
}
SHOWN |= {"errors", "timeouts"}


def _table(report: Any) -> Table:
    from tasks.benchmark.report import FIGURES

    figures = [(name, cell) for name, cell in FIGURES if name in SHOWN]
    table = Table(title=f"benchmark {report.suite} · {report.endpoint}")
    for col in ("model", "scenario", "c", *(name for name, _ in figures)):
        table.add_column(col, justify="left" if col in ("model", "scenario") else "right")
    for r in report.results:
        table.add_row(r.model, r.scenario, str(r.concurrency), *(cell(r) for _, cell in figures))
    return table


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.0f} ms"
