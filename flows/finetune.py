"""The finetune flow: dataset → train → evaluate → merge + export GGUF → parity, with lineage recorded.

Every step keeps its own content-hash cache (a finished run, merged weights, a GGUF whose sidecar
matches), so a retried flow run never redoes finished work. A pause request (`core.jobs.pause`, the
same protocol as a job's) makes training checkpoint and stop; this flow then pauses in place (it has
no deployment to be re-run by), and resuming it in the Prefect UI continues training from that
checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from core.atomic import write_json
from core.config import Method, Quant
from core.errors import InputError, ValidationFailed
from core.hashing import file_sha256
from core.jobs.orchestrator import flow_run_id
from core.jobs.pause import PausePoint
from core.reports import EvalReport, ExportReport, FinetuneFlowReport, FinetuneReport, RegisteredModel
from core.settings import Settings, get_settings
from tasks.evaluate.run import evaluate_task
from tasks.export.run import export_task
from tasks.finetune.checkpoints import CHECKPOINTS, RUN_STATE
from tasks.finetune.run import load_profile, train_task
from tasks.finetune.trainer import complete_checkpoints
from tasks.validate.run import validate_task

LINEAGE = "lineage.json"
EXPORT_DIR = "export"


class FinetuneParams(BaseModel):
    """What to train, from which data, and how far to take it."""

    model_config = ConfigDict(extra="forbid")

    data_dir: str = Field("data/dataset", min_length=1, max_length=1024)
    out_dir: str = Field(".forgeflow/runs/latest", min_length=1, max_length=1024, description="run directory")
    base_model: str | None = Field(None, max_length=1024, description="default: base_model from settings")
    profile: str = Field("cpu-quick", min_length=1, max_length=256)
    method: Method | None = None
    max_steps: int | None = Field(None, ge=1, le=10_000_000)
    epochs: float | None = Field(None, gt=0, le=100)
    quants: list[Quant] | None = Field(None, min_length=1, description="default: export.quants from settings")
    require_improvement: bool = Field(
        False, description="stop before export when the tuned model does not beat the base"
    )
    stop_after: Literal["train", "evaluate", "export"] = "export"
    pause_timeout_seconds: int = Field(86_400, ge=60, le=30 * 86_400)
    dry_run: bool = Field(False, description="check inputs and settings; train nothing")
    register_as: str | None = Field(
        "forgeflow",
        pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$",
        description="registry name for the exported model (a new version each time); None: skip",
    )


@task(name="record-lineage", retries=0, cache_policy=NO_CACHE)
def record_lineage(
    out_dir: str, train: FinetuneReport, evaluation: EvalReport | None, export: ExportReport | None
) -> dict[str, Any]:
    """Write lineage.json: source commit → dataset hash → config hash → adapter → GGUF sha256s."""
    run = Path(out_dir)
    adapter = run / "adapter" / "adapter_model.safetensors"
    lineage = {
        "source_commit": train.source_commit,
        "dataset_hash": train.dataset_hash,
        "config_hash": train.config_hash,
        "base_model": train.base_model,
        "method": train.method,
        "adapter_sha256": file_sha256(adapter) if adapter.is_file() else None,
        "evaluation": None
        if evaluation is None
        else {
            "passed": evaluation.passed,
            "perplexity": evaluation.metrics.perplexity,
            "base_perplexity": evaluation.base.perplexity,
        },
        "ggufs": None
        if export is None
        else {q: {"file": g.file, "sha256": g.sha256} for q, g in export.ggufs.items()},
    }
    write_json(run / LINEAGE, lineage)
    return lineage


@task(name="register-model", retries=0, cache_policy=NO_CACHE)
def register_model(out_dir: str, name: str, export: ExportReport, settings: Settings) -> RegisteredModel:
    """Add the export to the model registry as a new version of `name` (once per exported GGUF)."""
    from core.registry import Registry

    with Registry.from_settings(settings) as registry:
        info = registry.register_export(Path(out_dir) / EXPORT_DIR, name=name)  # a retried run: no new one
        return RegisteredModel(key=info.key, sha256=info.artifacts["gguf"].sha256, aliases=info.aliases)


@flow(name="finetune", log_prints=False)
def finetune_flow(params: FinetuneParams | None = None) -> FinetuneFlowReport:
    """Train an adapter, evaluate it against its base, export GGUFs that pass parity; record lineage."""
    params = params or FinetuneParams()
    settings = get_settings()
    logger = get_run_logger()
    cfg = load_profile(params.profile, method=params.method, max_steps=params.max_steps, epochs=params.epochs)
    base_model = params.base_model or settings.base_model
    if not (Path(params.data_dir) / "train.jsonl").is_file():
        raise InputError(f"{params.data_dir} has no train.jsonl: run the prepare-data flow first")
    if params.dry_run:
        return FinetuneFlowReport(plan={"config": cfg.model_dump(mode="json"), "base_model": base_model})
    validate_task(params.data_dir, settings)
    train = _train_until_done(params, cfg, base_model, settings, logger)
    result = FinetuneFlowReport(train=train)
    if params.stop_after != "train":
        evaluation = result.evaluate = evaluate_task(params.out_dir, params.data_dir, settings)
        logger.info(
            "perplexity: tuned %.3f vs base %.3f", evaluation.metrics.perplexity, evaluation.base.perplexity
        )
        if params.require_improvement and not evaluation.passed:
            raise ValidationFailed("the tuned model does not beat its base on eval perplexity: not exported")
    if params.stop_after == "export":
        export_settings = settings
        if params.quants:
            export_settings = settings.model_copy(
                update={"export": settings.export.model_copy(update={"quants": params.quants})}
            )
        out = str(Path(params.out_dir) / EXPORT_DIR)
        result.export = export_task(params.out_dir, out, export_settings, params.data_dir)
    result.lineage = record_lineage(params.out_dir, train, result.evaluate, result.export)
    if result.export is not None and params.register_as:
        result.registered = register_model(params.out_dir, params.register_as, result.export, settings)
        logger.info(
            "registered %s: serve it with `forgeflow serve --model %s`", *(result.registered.key,) * 2
        )
    return result


def _train_until_done(
    params: FinetuneParams, cfg: Any, base_model: str, settings: Settings, logger: Any
) -> FinetuneReport:
    """Train; on a pause request, pause this flow run and resume training from its checkpoint after."""
    run = Path(params.out_dir)
    pause = PausePoint(flow_run_id(), params.pause_timeout_seconds, can_suspend=False)
    # an interrupted run of the same inputs continues from its checkpoint (finetune refuses other inputs)
    resume = (run / RUN_STATE).is_file() and bool(complete_checkpoints(run / CHECKPOINTS))
    while True:
        report = train_task(
            params.data_dir,
            base_model,
            params.out_dir,
            cfg,
            settings,
            resume=resume,
            should_pause=pause.requested,
        )
        if report.status != "paused":
            return report
        logger.info("training paused at step %d: resume the flow run to continue", report.steps)
        pause.pause("train")
        resume = True
