"""The retrain flow: monitor → extract → validate → finetune → evaluate → export (parity) → promote
(quality gate, then a `benchmark` subflow: the speed gate against the champion) → deploy.

One flow for every training entry point (`POST /v1/fine-tune`, `POST /v1/retrain`, git hooks, the
schedule), run by the `retrain/training` deployment, whose concurrency limit is how many train at
once. Each run works in its own job directory (`core.jobs.directory.JobDir`).

Pausing suspends the run (`core.jobs.pause`): the process exits and frees its slot; resuming re-runs
the flow from the top, where every finished stage is found done in the job directory (the dataset,
the training run's checkpoints, the export's content-hash cache) and training continues from its
last checkpoint, not from step 0.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel

from core.bench.params import BenchParams
from core.bench.records import BenchReport
from core.errors import InputError
from core.jobs.context import JobContext
from core.jobs.directory import JobDir
from core.jobs.params import RetrainParams
from core.reports import (
    EvalReport,
    ExportReport,
    FinetuneReport,
    KnowledgeReport,
    MonitorReport,
    PromoteDecision,
)
from core.repos.spec import resolve_repo
from core.settings import get_settings
from flows.benchmark import benchmark_flow
from flows.finetune import record_lineage
from tasks.benchmark.gate import SpeedGate, speed_gate
from tasks.deploy.run import deploy_task, ensure_champion_task, promote_task
from tasks.evaluate.knowledge import knowledge_task
from tasks.evaluate.run import evaluate_task
from tasks.export.run import export_task
from tasks.extract.index import index_task
from tasks.extract.run import extract_task
from tasks.finetune.checkpoints import CHECKPOINTS, RUN_STATE
from tasks.finetune.run import load_profile, train_task
from tasks.finetune.trainer import complete_checkpoints
from tasks.monitor.run import check_repo_task, mark_trained, resolve_repo_task
from tasks.validate.run import validate_task

__all__ = ["RetrainParams", "RetrainReport", "retrain"]


class RetrainReport(BaseModel):
    """What a retrain run did; None fields are stages it did not reach."""

    job_id: str
    status: Literal["skipped", "trained", "promoted", "kept-champion"]
    monitor: MonitorReport | None = None
    dataset_dir: str | None = None
    train: FinetuneReport | None = None
    evaluate: EvalReport | None = None
    export: ExportReport | None = None
    knowledge: KnowledgeReport | None = None
    promote: PromoteDecision | None = None
    benchmark: BenchReport | None = None
    speed_gate: SpeedGate | None = None
    deployed: str | None = None


def _sweep_hook(flow: Any, flow_run: Any, state: Any) -> None:
    """on_cancellation / on_crashed: remove what the stopped process had half-written."""
    job = JobDir.of(get_settings(), flow_run.id)
    removed = job.sweep_staging()
    job.pid_file.unlink(missing_ok=True)
    if removed:
        get_run_logger().info("removed half-written files: %s", ", ".join(removed))


@flow(name="retrain", log_prints=False, on_cancellation=[_sweep_hook], on_crashed=[_sweep_hook])
def retrain(params: RetrainParams) -> RetrainReport:
    """Keep a repo's model fresh: decide, prepare, train, evaluate, export, promote, deploy."""
    job = JobContext.start(get_settings())
    report = RetrainReport(job_id=str(job.id), status="trained")

    data = prepare_data(job, params, report)  # monitor → extract → validate, once per job
    if data is None:
        report.status = "skipped"
        return report
    report.dataset_dir = str(data)
    report.train = finetune(job, params, data)  # a pause checkpoints, suspends, and resumes here
    job.enter("evaluate", "evaluating against the base")
    report.evaluate = evaluate_task(str(job.dir.run), str(data), job.settings)
    job.enter("export", "exporting GGUF, checking parity")
    report.export = export_task(str(job.dir.run), str(job.dir.export), job.settings, str(data))
    record_lineage(str(job.dir.run), report.train, report.evaluate, report.export)
    if params.promote:
        promote(job, params, data, report)  # the quality gate, then the speed gate
        if report.promote is not None and report.promote.promote:
            deploy(job, params, report)
        else:
            report.status = "kept-champion"
    _final_table(report)
    job.progress("promote", 1.0, f"done: {report.status}")
    return report


def prepare_data(job: JobContext, params: RetrainParams, report: RetrainReport) -> Path | None:
    """The job's dataset: a given one (validated), or extracted from the repo when the monitor says so.

    Once per job: `plan.json` marks it ready, so a resumed attempt reuses it. None: nothing to do.
    """
    plan = job.dir.plan()
    if params.dataset is not None:
        data = Path(params.dataset)
        if not (data / "train.jsonl").is_file():
            raise InputError(f"{params.dataset} has no train.jsonl: run `forgeflow prepare` first")
        if not plan.dataset_ready:
            job.progress("validate", 0.0, "validating the given dataset")
            validate_task(str(data), job.settings)
            job.dir.write_plan(plan.model_copy(update={"dataset_ready": True}))
        return data
    if plan.dataset_ready:
        return job.dir.dataset
    assert params.repo is not None  # one of repo and dataset, by RetrainParams
    handle = resolve_repo_task(params.repo, job.settings)
    index_task(str(handle.path), handle.project_id, job.settings, handle.display)  # every run: cheap
    name = params.project_name or _slug(handle.path.name)
    # a project always has a champion to ask: its base, answering from the index, until a model wins
    ensure_champion_task(name, params.base_model or job.settings.base_model, params.repo, job.settings)
    report.monitor = check_repo_task(handle, job.settings)
    head = report.monitor.metrics.head_commit or "unknown"
    job.rename(f"retrain-{name}-{head[:7]}")
    job.progress("monitor", 1.0, report.monitor.reason)
    if not (params.force or report.monitor.should_retrain):
        get_run_logger().info("nothing to do: %s", report.monitor.reason)
        job.progress("promote", 1.0, f"skipped: {report.monitor.reason}")
        return None
    plan = plan.model_copy(update={"project": name, "repo": params.repo, "commit": head})
    job.enter("extract", "extracting")
    extracting = job.stage_progress("extract", "extracting")
    extract_task(
        str(handle.path),
        str(job.dir.dataset),
        job.settings,
        handle.display,
        progress=lambda _stage, done, total: extracting(done / max(total, 1)),
        rev=head if head != "unknown" else "HEAD",
    )
    job.progress("validate", 0.0, "validating")
    validate_task(str(job.dir.dataset), job.settings)
    job.dir.write_plan(plan.model_copy(update={"dataset_ready": True}))
    return job.dir.dataset


def finetune(job: JobContext, params: RetrainParams, data: Path) -> FinetuneReport:
    """Train the adapter; a pause request checkpoints and suspends, and the resumed run continues."""
    cfg = load_profile(
        params.profile or job.settings.jobs.profile,
        method=params.method,
        max_steps=params.max_steps,
        epochs=params.epochs,
        learning_rate=params.learning_rate,
        rank=params.rank,
    )
    run = job.dir.run
    resume = (run / RUN_STATE).is_file() and bool(complete_checkpoints(run / CHECKPOINTS))
    job.enter("train", "training" + (" (resumed from its checkpoint)" if resume else ""))
    base_model = params.base_model or job.settings.base_model
    trained = train_task(
        str(data), base_model, str(run), cfg, job.settings, resume=resume, should_pause=job.pause.requested
    )
    if trained.status == "paused":
        get_run_logger().info("training paused at step %d: suspending until resumed", trained.steps)
        job.pause.pause("train")
    job.progress("train", 1.0, f"trained: {trained.steps} steps")
    return trained


def promote(job: JobContext, params: RetrainParams, data: Path, report: RetrainReport) -> None:
    """Register the export and decide: the quality gate, then (when it passes) the speed gate."""
    assert report.evaluate is not None and report.export is not None
    project = params.project_name or job.dir.plan().project or _slug(data.parent.name)
    repo = job.dir.plan().repo  # the version answers from this repo's index
    job.enter("promote", "measuring repo knowledge: candidate, base and champion")
    if report.export.passed:  # a failed parity check is refused anyway: nothing to measure
        report.knowledge = knowledge_task(
            project,
            str(job.dir.export),
            str(data),
            str(job.dir.root),
            job.settings,
            params.base_model or job.settings.base_model,
            repo,
        )
    job.progress("promote", 0.2, "promote gate")
    decision = promote_task(
        project, str(job.dir.export), str(data), report.evaluate, report.export, job.settings, repo,
        report.knowledge,
    )  # fmt: skip
    if decision.promote and job.settings.bench.retrain:
        job.progress("promote", 0.3, "benchmarking the candidate against the champion")
        report.benchmark, report.speed_gate = _speed_check(job, decision, data)
        if not report.speed_gate.passed:
            reason = f"speed gate: {report.speed_gate.reason}"
            decision = decision.model_copy(update={"promote": False, "reason": reason})
    job.dir.write_promotion(decision)
    report.promote = decision


def deploy(job: JobContext, params: RetrainParams, report: RetrainReport) -> None:
    """Make the candidate the champion (loaded first when `auto_deploy`); mark the commit trained."""
    assert report.promote is not None
    report.deployed = deploy_task(report.promote, job.settings, params.auto_deploy)
    report.status = "promoted"
    plan = job.dir.plan()
    if plan.repo and plan.commit:
        mark_trained(resolve_repo(plan.repo, job.settings), plan.commit, job.settings)


def _speed_check(
    job: JobContext, decision: PromoteDecision, data: Path
) -> tuple[BenchReport | None, SpeedGate]:
    """The `bench.retrain_suite` on candidate and champion (a `benchmark` subflow run), then the gate.

    A benchmark that cannot run is logged and does not block: it measured no regression.
    """
    settings = job.settings
    models = [decision.candidate] + ([decision.champion] if decision.champion else [])
    params = BenchParams(
        models=models, suite=settings.bench.retrain_suite, dataset=str(data), source="retrain"
    )
    try:
        bench = benchmark_flow(params)
    except Exception as exc:  # the measurement failed, not the model
        get_run_logger().warning("the benchmark did not run (%s): promoting on quality alone", exc)
        gate = SpeedGate(
            passed=True, reason=f"benchmark failed ({str(exc)[:200]}): not gated", run_id="",
            candidate=None, champion=None, max_regression=settings.bench.max_regression,
        )  # fmt: skip
        return None, gate
    return bench, speed_gate(bench, decision.candidate, decision.champion, settings.bench.max_regression)


def _final_table(report: RetrainReport) -> None:
    rows: list[dict[str, Any]] = [{"figure": "status", "value": report.status}]
    if report.evaluate is not None:
        rows += [
            {"figure": "base perplexity", "value": round(report.evaluate.base.perplexity, 4)},
            {"figure": "tuned perplexity", "value": round(report.evaluate.metrics.perplexity, 4)},
        ]
    if report.export is not None:
        rows += [{"figure": f"{q} sha256", "value": g.sha256} for q, g in report.export.ggufs.items()]
    if report.knowledge is not None:
        rows += [
            {"figure": f"repo knowledge, {label}", "value": c.score}
            for label, c in report.knowledge.columns.items()
        ]
    if report.speed_gate is not None:
        rows += [{"figure": "speed gate", "value": report.speed_gate.reason}]
    if report.promote is not None:
        rows += [{"figure": "promote", "value": report.promote.reason}]
    create_table_artifact(rows, key="retrain-result", description="the job's final figures")


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")[:64]
    return slug or "project"
