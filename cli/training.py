"""`forgeflow finetune | evaluate | export | pipeline`: the model half of the command line."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.app import DataOpt, QuantOpt, err, out, progress, run, run_flow
from core.reports import EvalReport, ExportReport
from core.settings import get_settings


def finetune(
    data: DataOpt = Path("data/dataset"),
    out_dir: Annotated[Path, typer.Option("--out", help="run directory")] = Path(".forgeflow/runs/latest"),
    base_model: Annotated[str | None, typer.Option(help="embedded name, HF dir, .gguf or cached id")] = None,
    profile: Annotated[str, typer.Option(help="configs/train/<name>.yaml, or a YAML path")] = "cpu-quick",
    method: Annotated[str | None, typer.Option(help="lora | pissa | dora | qlora")] = None,
    max_steps: Annotated[int | None, typer.Option(help="overrides the profile's steps/epochs")] = None,
    epochs: Annotated[float | None, typer.Option()] = None,
    resume: Annotated[bool, typer.Option(help="continue from the last checkpoint in --out")] = False,
    overwrite: Annotated[bool, typer.Option(help="discard a previous run in --out")] = False,
) -> None:
    """Train a LoRA/PiSSA/DoRA adapter on the dataset (peft + trl on CPU, unsloth on CUDA).

    Ctrl-C once pauses: a checkpoint at the next step, then `--resume` continues. Twice aborts.
    """
    from tasks.finetune.run import finetune as train
    from tasks.finetune.run import load_profile

    def body() -> Any:
        settings = get_settings()
        cfg = load_profile(profile, method=method, max_steps=max_steps, epochs=epochs)
        with progress() as bar:
            task = bar.add_task("training", total=None)

            def report(e: dict[str, Any]) -> None:
                bar.update(
                    task,
                    completed=e["step"],
                    total=e["max_steps"],
                    description=f"loss {e['loss']:.4f} · {e['tokens_per_second']:.0f} tok/s",
                )

            with pause_on_interrupt() as asked:
                return train(
                    data, base_model or settings.base_model, out_dir, cfg, settings.cache_dir,
                    resume=resume, overwrite=overwrite, progress=report, should_pause=asked,
                )  # fmt: skip

    r = run(body)
    verb = {"completed": "trained", "paused": "paused", "cached": "already trained"}[r.status]
    out.print(
        f"[bold]{verb}[/]: {r.method} on {r.base_model}, {r.steps} steps, final loss {r.final_loss}, "
        f"{r.tokens_per_second:.0f} tokens/s → {out_dir}",
        highlight=False,
    )
    if r.status == "paused":
        out.print("resume with: forgeflow finetune ... --resume")


def evaluate(
    model: Annotated[Path, typer.Option("--model", help="run directory from finetune")],
    data: DataOpt = Path("data/dataset"),
    out_dir: Annotated[Path | None, typer.Option("--out", help="default: the run directory")] = None,
) -> None:
    """Tuned vs base on the eval split: NLL, perplexity, exact match and ROUGE-L; exit 1 if not better."""
    from core.errors import ValidationFailed
    from tasks.evaluate.run import evaluate_model

    def body() -> EvalReport:
        settings = get_settings()
        report = evaluate_model(model, data, settings.evaluate, settings.cache_dir, out_dir)
        table = Table("", "base", "tuned")
        table.add_row("nll", f"{report.base.nll:.4f}", f"{report.tuned.nll:.4f}")
        table.add_row("perplexity", f"{report.base.perplexity:.4f}", f"{report.tuned.perplexity:.4f}")
        out.print(table)
        if not report.passed:
            raise ValidationFailed("the tuned model does not beat its base on eval perplexity")
        return report

    run(body)
    out.print("[green]passed[/]: the tuned model beats its base")


def export_gguf(
    model: Annotated[Path, typer.Option("--model", help="run directory (or an HF model directory)")],
    out_dir: Annotated[Path, typer.Option("--out")],
    quant: QuantOpt = None,
    data: Annotated[Path | None, typer.Option("--data", help="dataset: eval prompts for parity")] = None,
) -> None:
    """Merge the adapter, write GGUF f16 and quantized files, check parity with llama.cpp."""
    from tasks.export.run import export_model

    def body() -> ExportReport:
        settings = get_settings()
        cfg = settings.export.model_copy(update={"quants": quant}) if quant else settings.export
        cfg = type(cfg).model_validate(cfg.model_dump())  # validates --quant values
        with progress() as bar:
            task = bar.add_task("export", total=1.0)
            return export_model(
                model, out_dir, cfg, settings.cache_dir, data,
                progress=lambda stage, done: bar.update(task, completed=done, description=stage),
            )  # fmt: skip

    manifest = run(body)
    table = Table("gguf", "size MB", "agreement", "sha256")
    for q, g in manifest.ggufs.items():
        table.add_row(q, f"{g.bytes / 1e6:.1f}", f"{g.parity.agreement:.3f}", g.sha256[:16])
    out.print(table)


def pipeline(
    repo: Annotated[str, typer.Option("--repo", help="repository to learn (prepare-data first)")] = ".",
    data: DataOpt = Path("data/dataset"),
    out_dir: Annotated[Path, typer.Option("--out", help="run directory")] = Path(".forgeflow/runs/latest"),
    profile: Annotated[str, typer.Option()] = "cpu-quick",
    max_steps: Annotated[int | None, typer.Option()] = None,
    quant: QuantOpt = None,
    skip_prepare: Annotated[bool, typer.Option(help="use the dataset in --data as it is")] = False,
) -> None:
    """The whole job as Prefect flows: prepare-data, then finetune → evaluate → export GGUF → parity."""
    from flows.finetune import FinetuneParams, finetune_flow
    from flows.prepare_data import PrepareDataParams, prepare_data

    if not skip_prepare:
        run_flow(
            lambda: prepare_data(PrepareDataParams(repo=repo, out_dir=str(data)), return_state=True),
            [data / "validation.md"],
        )
    params = {"data_dir": str(data), "out_dir": str(out_dir), "profile": profile, "max_steps": max_steps}
    result = run_flow(
        lambda: finetune_flow(FinetuneParams(**params, quants=quant), return_state=True),
        [out_dir / "eval.md", out_dir / "export" / "export.md"],
    )
    if result.train is not None:
        loss = f"{result.train.final_loss:.4f}" if result.train.final_loss is not None else "-"
        out.print(f"trained {result.train.steps} steps, final loss {loss}")
    if (ev := result.evaluate) is not None:
        out.print(
            f"eval perplexity: base {ev.base.perplexity:.3f} → tuned {ev.metrics.perplexity:.3f}"
            f" ({'passed' if ev.passed else 'not better'})"
        )
    for q, g in (result.export.ggufs if result.export else {}).items():
        out.print(f"{q}: {out_dir / 'export' / g.file} (parity {g.parity.agreement:.3f})")
    if result.registered is not None:
        key = result.registered.key
        out.print(f"registered {key}: serve it with `forgeflow serve --model {key}`")


@contextlib.contextmanager
def pause_on_interrupt() -> Iterator[Callable[[], bool]]:
    """While training: the first Ctrl-C asks for a pause (the `should_pause` it yields turns true),
    the second interrupts as usual."""
    asked = False

    def on_sigint(signum: int, frame: Any) -> None:
        nonlocal asked
        if asked:
            raise KeyboardInterrupt
        asked = True
        err.print("[yellow]pausing at the next step[/] (Ctrl-C again to stop at once)")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield lambda: asked
    finally:
        signal.signal(signal.SIGINT, previous)
