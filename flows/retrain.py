"""The retrain flow: monitor → extract → validate → finetune → evaluate → export (parity) → promote
(quality gate, then a `benchmark` subflow: the speed gate against the champion) → deploy.

One flow for every training entry point (`POST /v1/fine-tune`, `POST /v1/retrain`, git hooks, the
schedule), run by the `retrain/training` deployment, whose concurrency limit is how many train at
once. Each run works in its own job directory (`core.jobs.job_dir`).

Pausing suspends the run: the process exits and frees its slot; resuming re-runs the flow from
the top, where every finished stage is found done in the job directory (the dataset, the
training run's checkpoints, the export's content-hash cache) and training continues from its
last checkpoint, not from step 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.flow_runs import suspend_flow_run
from prefect.variables import Variable
from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.atomic import write_json
from core.bench.params import BenchParams
from core.bench.records import BenchReport
from core.config import Method
from core.errors import InputError
from core.jobs.status import (
    PROGRESS_KEY,
    job_dir,
    pause_variable,
    record_process,
    stage_progress,
    sweep_staging,
)
from core.processes import die_with_parent
from core.reports import EvalReport, ExportReport, FinetuneReport, MonitorReport
from core.settings import Settings, get_settings
from flows.benchmark import benchmark_flow
from flows.finetune import record_lineage
from tasks.benchmark.gate import SpeedGate, speed_gate
from tasks.deploy.run import PromoteDecision, deploy_task, promote_task
from tasks.evaluate.run import evaluate_task
from tasks.export.run import export_task
from tasks.extract.run import extract_task
from tasks.finetune.run import load_profile, train_task
from tasks.monitor.run import check_repo_task, mark_trained, resolve_repo_task
from tasks.validate.run import validate_task

PLAN = "plan.json"  # what the first run decided (commit, dataset): a resumed run keeps to it
PAUSE_POLL_S = 2.0  # how often training asks Prefect for a pause request


class RetrainParams(BaseModel):
    """One job: which repo (or prepared dataset), which base model, and how to train it."""

    model_config = ConfigDict(extra="forbid")

    project_name: str | None = Field(
        None, pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", description="registry name; default: the repo's name"
    )
    repo: str | None = Field(None, min_length=1, max_length=2048, description="local path or git URL")
    dataset: str | None = Field(None, min_length=1, max_length=1024, description="a prepared dataset dir")
    base_model: str | None = Field(None, min_length=1, max_length=1024, description="default: settings")
    profile: str | None = Field(None, min_length=1, max_length=256, description="default: jobs.profile")
    method: Method | None = None
    epochs: float | None = Field(None, gt=0, le=100)
    max_steps: int | None = Field(None, ge=1, le=10_000_000)
    learning_rate: float | None = Field(None, gt=0, le=1)
    rank: int | None = Field(None, ge=1, le=1024)
    force: bool = Field(False, description="train even when the monitor says nothing changed")
    promote: bool = Field(True, description="register and, when it wins, make it the champion")
    auto_deploy: bool = Field(True, description="load the new champion on the running API")
    trigger: Literal["api", "fine-tune", "post-commit", "post-merge", "post-receive", "schedule", "cli"] = (
        "api"
    )

    @model_validator(mode="after")
    def _one_source(self) -> RetrainParams:
        if (self.repo is None) == (self.dataset is None):
            raise ValueError("give exactly one of repo and dataset")
        return self


class RetrainReport(BaseModel):
    """What a retrain run did; None fields are stages it did not reach."""

    job_id: str
    status: Literal["skipped", "trained", "promoted", "kept-champion"]
    monitor: MonitorReport | None = None
    dataset_dir: str | None = None
    train: FinetuneReport | None = None
    evaluate: EvalReport | None = None
    export: ExportReport | None = None
    promote: PromoteDecision | None = None
    benchmark: BenchReport | None = None
    speed_gate: SpeedGate | None = None
    deployed: str | None = None


def _sweep_hook(flow: Any, flow_run: Any, state: Any) -> None:
    """on_cancellation / on_crashed: remove what the stopped process had half-written."""
    job = job_dir(get_settings(), flow_run.id)
    removed = sweep_staging(job)
    (job / "pid").unlink(missing_ok=True)
    if removed:
        get_run_logger().info("removed half-written files: %s", ", ".join(removed))


@flow(name="retrain", log_prints=False, on_cancellation=[_sweep_hook], on_crashed=[_sweep_hook])
def retrain(params: RetrainParams) -> RetrainReport:
    """Keep a repo's model fresh: decide, prepare, train, evaluate, export, promote, deploy."""
    settings = get_settings()
    logger = get_run_logger()
    job_id = _flow_run_id()
    job = job_dir(settings, job_id)
    die_with_parent()  # a killed runner takes its runs with it: the watchdog then marks them crashed
    record_process(job)
    sweep_staging(job)  # a crashed earlier attempt of this run may have left staging files
    plan: dict[str, Any] = _read_plan(job)
    artifact = create_progress_artifact(0.0, key=PROGRESS_KEY, description="retrain: starting")
    progress = _progress(artifact)
    report = RetrainReport(job_id=str(job_id), status="trained")

    # monitor → extract → validate (once per job: a resumed run reuses the dataset it made)
    data = job / "dataset"
    if params.dataset is not None:
        data = Path(params.dataset)
        if not (data / "train.jsonl").is_file():
            raise InputError(f"{params.dataset} has no train.jsonl: run `forgeflow prepare` first")
        if not plan.get("dataset_ready"):
            progress("validate", 0.0, "validating the given dataset")
            validate_task(str(data), settings)
            plan["dataset_ready"] = True
            write_json(job / PLAN, plan)
    elif not plan.get("dataset_ready"):
        assert params.repo is not None  # one of repo and dataset, by RetrainParams
        handle = resolve_repo_task(params.repo, settings)
        name = params.project_name or _slug(handle.path.name)
        report.monitor = check_repo_task(handle, settings)
        head = report.monitor.metrics.head_commit or "unknown"
        _rename(job_id, f"retrain-{name}-{head[:7]}")
        progress("monitor", 1.0, report.monitor.reason)
        if not (params.force or report.monitor.should_retrain):
            logger.info("nothing to do: %s", report.monitor.reason)
            report.status = "skipped"
            progress("promote", 1.0, f"skipped: {report.monitor.reason}")
            return report
        plan |= {"project": name, "repo": params.repo, "commit": head}
        _pause_point(settings, job_id, "extract")
        extract_task(
            str(handle.path),
            str(data),
            settings,
            handle.display,
            progress=lambda _s, done, total: progress("extract", done / max(total, 1), "extracting"),
            rev=head if head != "unknown" else "HEAD",
        )
        progress("validate", 0.0, "validating")
        validate_task(str(data), settings)
        plan["dataset_ready"] = True
        write_json(job / PLAN, plan)
    project = params.project_name or plan.get("project") or _slug(data.parent.name)
    report.dataset_dir = str(data)

    # finetune: a pause request checkpoints and suspends; the resumed run continues from there
    base_model = params.base_model or settings.base_model
    cfg = load_profile(
        params.profile or settings.jobs.profile,
        method=params.method,
        max_steps=params.max_steps,
        epochs=params.epochs,
        learning_rate=params.learning_rate,
        rank=params.rank,
    )
    _pause_point(settings, job_id, "train")
    run = job / "run"
    report.train = _train(settings, job_id, data, base_model, run, cfg, progress)

    _pause_point(settings, job_id, "evaluate")
    progress("evaluate", 0.0, "evaluating against the base")
    report.evaluate = evaluate_task(str(run), str(data), settings)
    _pause_point(settings, job_id, "export")
    progress("export", 0.0, "exporting GGUF, checking parity")
    report.export = export_task(str(run), str(run / "export"), settings, str(data))
    record_lineage(str(run), report.train, report.evaluate, report.export)

    if params.promote:
        _pause_point(settings, job_id, "promote")
        progress("promote", 0.0, "promote gate")
        report.promote = promote_task(
            project, str(run / "export"), str(data), report.evaluate, report.export, settings
        )
        if report.promote.promote and settings.bench.retrain:
            progress("promote", 0.3, "benchmarking the candidate against the champion")
            report.benchmark, report.speed_gate = _speed_check(settings, report.promote, data)
            if not report.speed_gate.passed:
                report.promote = report.promote.model_copy(
                    update={"promote": False, "reason": f"speed gate: {report.speed_gate.reason}"}
                )
        write_json(job / "promote.json", report.promote.model_dump(mode="json"))
        if report.promote.promote:
            report.deployed = deploy_task(report.promote, settings, params.auto_deploy)
            report.status = "promoted"
            if plan.get("repo") and plan.get("commit"):
                from core.repos.spec import resolve_repo

                mark_trained(resolve_repo(plan["repo"], settings), plan["commit"], settings)
        else:
            report.status = "kept-champion"
    _final_table(report)
    progress("promote", 1.0, f"done: {report.status}")
    return report


def _speed_check(
    settings: Settings, decision: PromoteDecision, data: Path
) -> tuple[BenchReport | None, SpeedGate]:
    """The `bench.retrain_suite` on candidate and champion (a `benchmark` subflow run), then the gate.

    A benchmark that cannot run is logged and does not block: it measured no regression.
    """
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


def _train(
    settings: Settings,
    job_id: UUID,
    data: Path,
    base_model: str,
    run: Path,
    cfg: Any,
    progress: Callable[[str, float, str], None],
) -> FinetuneReport:
    from tasks.finetune.checkpoints import CHECKPOINTS, RUN_STATE
    from tasks.finetune.trainer import complete_checkpoints

    asked = _pause_poller(job_id)
    resume = (run / RUN_STATE).is_file() and bool(complete_checkpoints(run / CHECKPOINTS))
    progress("train", 0.0, "training" + (" (resumed from its checkpoint)" if resume else ""))
    report = train_task(str(data), base_model, str(run), cfg, settings, resume=resume, should_pause=asked)
    if report.status == "paused":
        get_run_logger().info("training paused at step %d: suspending until resumed", report.steps)
        _suspend(settings, job_id, "train")
    progress("train", 1.0, f"trained: {report.steps} steps")
    return report


def _pause_poller(job_id: UUID) -> Callable[[], bool]:
    last, asked = 0.0, False

    def poll() -> bool:
        nonlocal last, asked
        now = time.monotonic()
        if not asked and now - last >= PAUSE_POLL_S:
            last = now
            asked = Variable.get(pause_variable(job_id), default=None) is not None
        return asked

    return poll


def _pause_point(settings: Settings, job_id: UUID, stage: str) -> None:
    """A task boundary: suspend here when a pause was requested."""
    if Variable.get(pause_variable(job_id), default=None) is not None:
        get_run_logger().info("pause requested: suspending before %s", stage)
        _suspend(settings, job_id, stage)


def _suspend(settings: Settings, job_id: UUID, stage: str) -> None:
    request = Variable.get(pause_variable(job_id), default=None)
    Variable.unset(pause_variable(job_id))
    # the request's id keys the suspension: Prefect fires each key once, so a resumed run passes it
    suspend_flow_run(timeout=settings.jobs.pause_timeout_s, key=f"{stage}-{request}")


def _progress(artifact: Any) -> Callable[[str, float, str], None]:
    def update(stage: str, fraction: float, what: str) -> None:
        update_progress_artifact(artifact, stage_progress(stage, fraction), description=f"{stage}: {what}")

    return update


def _final_table(report: RetrainReport) -> None:
    rows: list[dict[str, Any]] = [{"figure": "status", "value": report.status}]
    if report.evaluate is not None:
        rows += [
            {"figure": "base perplexity", "value": round(report.evaluate.base.perplexity, 4)},
            {"figure": "tuned perplexity", "value": round(report.evaluate.metrics.perplexity, 4)},
        ]
    if report.export is not None:
        rows += [{"figure": f"{q} sha256", "value": g.sha256} for q, g in report.export.ggufs.items()]
    if report.speed_gate is not None:
        rows += [{"figure": "speed gate", "value": report.speed_gate.reason}]
    if report.promote is not None:
        rows += [{"figure": "promote", "value": report.promote.reason}]
    create_table_artifact(rows, key="retrain-result", description="the job's final figures")


def _flow_run_id() -> UUID:
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        raise RuntimeError("retrain runs as a Prefect flow run")
    return ctx.flow_run.id


def _rename(job_id: UUID, name: str) -> None:
    with get_client(sync_client=True) as client:
        client.update_flow_run(job_id, name=name)


def _read_plan(job: Path) -> dict[str, Any]:
    import json

    try:
        return dict(json.loads((job / PLAN).read_text()))
    except (OSError, ValueError):
        return {}


def _slug(name: str) -> str:
    import re

    slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")[:64]
    return slug or "project"
