"""Fine-tune a LoRA / PiSSA / DoRA / QLoRA adapter on a validated dataset (`forgeflow finetune`).

Samples are rendered with the base tokenizer's chat template and learned on assistant tokens only
(`core.chat_template.encode`); packed into full rows with per-sample attention (no padding
computed); checkpointed atomically every `save_steps`; resumable with the same data order; paused
cleanly at a step boundary when asked. The output directory follows `core.trained`.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import ValidationError

from core.atomic import write_json
from core.base_models import load_tokenizer, materialize
from core.chat_template import Encoded, encode
from core.config import TrainConfig
from core.cpu import apply_training_budget
from core.errors import InputError
from core.hashing import config_sha256, dataset_sha256
from core.jobs import progress as job_progress
from core.jobs.progress import TRAINING_PROGRESS_KEY, TrainingProgress
from core.reports import FinetuneReport
from core.settings import Settings, config_file, config_names, get_settings
from core.trained import MANIFEST
from tasks.finetune.checkpoints import (
    CHECKPOINTS,
    PISSA_INIT,
    RUN_STATE,
    check_resume,
    discard_run,
    finished,
    publish_adapter,
    save_pissa_init,
    source_commit,
)

log = logging.getLogger(__name__)

PROFILES = "train"  # configs/train/<name>.yaml, found like the main config (core.settings.config_file)


def load_profile(profile: str | Path, **overrides: Any) -> TrainConfig:
    """A training profile (`cpu-quick` or a YAML path) with CLI overrides applied (None = keep)."""
    path = Path(profile)
    if not path.suffix:
        found = config_file(f"{PROFILES}/{profile}.yaml")
        if found is None:
            known = ", ".join(config_names(PROFILES))
            raise InputError(f"unknown training profile '{profile}'; known: {known}")
        path = found
    elif not path.is_file():
        raise InputError(f"training profile {profile} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        data.update({k: v for k, v in overrides.items() if v is not None})
        return TrainConfig.model_validate(data)
    except (yaml.YAMLError, ValidationError) as exc:
        first = str(exc).splitlines()
        raise InputError(f"training profile {path.name} is invalid: {' '.join(first[:3])}") from None


def config_hash(cfg: TrainConfig, base_model: str) -> str:
    """Content hash of what decides the weights besides the data."""
    return config_sha256({"config": cfg.model_dump(mode="json"), "base_model": base_model})


def encode_split(tokenizer: Any, path: Path, max_length: int) -> tuple[list[dict[str, list[int]]], int, int]:
    """Token rows (input_ids, labels) of a JSONL split; also counts of truncated and dropped samples."""
    rows: list[dict[str, list[int]]] = []
    truncated = dropped = 0
    with path.open("rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                messages = orjson.loads(line)["messages"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise InputError(f"{path.name} line {n} is not a sample with messages") from None
            enc = encode(tokenizer, messages)
            if len(enc.input_ids) > max_length:  # cut here: rendering it again would cost as much
                truncated += 1
                enc = Encoded(enc.input_ids[:max_length], enc.labels[:max_length])
            if enc.assistant_tokens == 0:  # nothing left to learn once truncated
                dropped += 1
                continue
            rows.append({"input_ids": enc.input_ids, "labels": enc.labels})
    return rows, truncated, dropped


def finetune(
    data_dir: Path,
    base_model: str,
    out_dir: Path,
    cfg: TrainConfig,
    cache_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
    should_pause: Callable[[], bool] | None = None,
) -> FinetuneReport:
    """Train an adapter on `data_dir/train.jsonl`; returns what happened (completed, paused or cached)."""
    from tasks.finetune.trainer import clear_staging, complete_checkpoints, select_backend

    train_file = data_dir / "train.jsonl"
    if not train_file.is_file():
        raise InputError(f"{data_dir} has no train.jsonl: run `forgeflow prepare` (or extract) first")
    backend = select_backend(cfg)
    dataset_hash = dataset_sha256(data_dir)
    chash = config_hash(cfg, base_model)
    done = finished(out_dir, chash, dataset_hash)
    if done is not None:
        log.info("%s already holds this run (config %s): not retrained", out_dir.name, chash)
        return done.model_copy(update={"status": "cached"})
    apply_training_budget(get_settings())  # cpu.shared: leave serving its cores (core.cpu)
    base_path = materialize(base_model, cache_dir)  # a bad name fails before anything is written
    tokenizer = load_tokenizer(str(base_path), cache_dir)
    rows, truncated, dropped = encode_split(tokenizer, train_file, cfg.max_length)
    if not rows:
        raise InputError(
            f"train.jsonl has no sample with assistant tokens within max_length {cfg.max_length}"
        )
    ckpt_root = out_dir / CHECKPOINTS
    if overwrite and not resume:
        discard_run(out_dir)
    clear_staging(ckpt_root)
    checkpoints = complete_checkpoints(ckpt_root)
    last = checkpoints[-1] if checkpoints else None
    check_resume(out_dir, resume, last, chash, dataset_hash)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / RUN_STATE, {"config_hash": chash, "dataset_hash": dataset_hash})

    return _train(
        rows, tokenizer, base_path, out_dir, cfg, backend,
        resume_from=last if resume else None, progress=progress, should_pause=should_pause,
        lineage={
            "base_model": base_model, "config_hash": chash, "dataset_hash": dataset_hash,
            "source_commit": source_commit(data_dir), "samples": len(rows),
            "truncated_samples": truncated, "dropped_samples": dropped,
        },
    )  # fmt: skip


def _train(
    rows: list[dict[str, list[int]]],
    tokenizer: Any,
    base_path: Path,
    out_dir: Path,
    cfg: TrainConfig,
    backend: str,
    *,
    resume_from: Path | None,
    progress: Callable[[dict[str, Any]], None] | None,
    should_pause: Callable[[], bool] | None,
    lineage: dict[str, Any],
) -> FinetuneReport:
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback

    from tasks.finetune.trainer import (
        ForgeflowTrainer,
        ProgressCallback,
        build_model,
        sft_config,
        torch_dtype,
    )

    model = build_model(cfg, base_path, backend)
    pissa_init = out_dir / PISSA_INIT
    if cfg.method == "pissa" and not (pissa_init / "adapter_config.json").is_file():
        save_pissa_init(model, pissa_init)
    callback = ProgressCallback(progress, should_pause)
    trainer = ForgeflowTrainer(
        model=model,
        args=sft_config(cfg, out_dir / CHECKPOINTS),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[callback],
    )
    trainer.keep_checkpoints = cfg.keep_checkpoints
    trainer.assistant_only_head = backend == "peft"  # unsloth brings its own fused loss
    trainer.remove_callback(PrinterCallback)  # logs reach the user through `progress`, not stdout
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    runtime = time.perf_counter() - t0
    state = trainer.state
    # the whole curve, earlier sessions included: a resumed Trainer restores its log history
    loss_curve = [(int(h["step"]), float(h["loss"])) for h in state.log_history if "loss" in h]
    report = FinetuneReport(
        status="paused" if callback.paused else "completed",
        method=cfg.method,
        backend=backend,
        device="cuda" if torch.cuda.is_available() else "cpu",
        dtype=str(torch_dtype(cfg)).removeprefix("torch."),
        config=cfg.model_dump(mode="json"),
        steps=state.global_step,
        epochs=round(float(state.epoch or 0.0), 4),
        tokens=int(state.num_input_tokens_seen),
        tokens_per_second=round(callback.tokens_per_second(state), 1),
        final_loss=loss_curve[-1][1] if loss_curve else None,
        loss_curve=loss_curve,
        runtime_seconds=round(runtime, 2),
        peak_memory_mb=_peak_memory_mb(),
        resumed_from_step=_checkpoint_step(resume_from),
        **lineage,
    )
    if callback.paused:
        log.info("paused at step %d; resume with --resume", state.global_step)
        return report
    publish_adapter(trainer.model, tokenizer, out_dir, pissa_init if cfg.method == "pissa" else None)
    write_json(out_dir / MANIFEST, report.model_dump(mode="json"))  # last: marks the run complete
    (out_dir / RUN_STATE).unlink(missing_ok=True)
    return report


def _checkpoint_step(checkpoint: Path | None) -> int | None:
    if checkpoint is None:
        return None
    step = checkpoint.name.rsplit("-", 1)[-1]
    return int(step) if step.isdigit() else None


def _peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    # ru_maxrss is KiB on Linux: the process's peak resident set, model and optimizer included
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@task(name="train-adapter", retries=0, cache_policy=NO_CACHE)
def train_task(
    data_dir: str,
    base_model: str,
    out_dir: str,
    cfg: TrainConfig,
    settings: Settings,
    resume: bool = False,
    should_pause: Callable[[], bool] | None = None,
) -> FinetuneReport:
    """Prefect task: train, with epoch/step/loss/tokens-per-second in a progress artifact.

    The artifact carries a `TrainingProgress` record (`core.jobs.progress`), which `/status` reads.
    Never retried blindly: a failed run is resumed from its last checkpoint instead. Not cached by
    Prefect: `finetune` itself skips a run whose config and data hashes are already trained.
    """
    artifact = job_progress.create(TRAINING_PROGRESS_KEY)
    last = TrainingProgress(epoch=0.0, step=0, total=max(cfg.max_steps or 0, 1))

    def report(event: dict[str, Any]) -> None:
        nonlocal last
        loss = float(event["loss"])
        last = TrainingProgress(
            epoch=float(event["epoch"]),
            step=int(event["step"]),
            total=max(int(event["max_steps"]), 1),
            loss=loss if loss == loss else None,  # NaN: no figure to show
            tokens_per_second=float(event["tokens_per_second"]),
        )
        job_progress.publish(artifact, last.percent, last)

    result = finetune(
        Path(data_dir),
        base_model,
        Path(out_dir),
        cfg,
        settings.cache_dir,
        resume=resume,
        progress=report,
        should_pause=should_pause,
    )
    # the last figures stay readable (`/status` shows them while paused), with how training ended
    final = last.model_copy(
        update={"ended": result.status, "step": result.steps, "total": max(last.total, result.steps, 1)}
    )
    job_progress.publish(artifact, final.percent if result.status == "paused" else 100.0, final)
    return result
