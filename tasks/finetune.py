"""Fine-tune a LoRA / PiSSA / DoRA / QLoRA adapter on a validated dataset (`forgeflow finetune`).

Samples are rendered with the base tokenizer's chat template and learned on assistant tokens only
(`core.chat_template.encode`); packed into full rows with per-sample attention (no padding
computed); checkpointed atomically every `save_steps`; resumable with the same data order; paused
cleanly at a step boundary when asked. The output directory follows `core.trained`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ValidationError

from core.atomic import write_json
from core.base_models import _publish_dir, load_tokenizer, materialize
from core.chat_template import encode
from core.config import TrainConfig
from core.errors import InputError
from core.trained import ADAPTER_DIR, MANIFEST

log = logging.getLogger(__name__)

PROFILES_DIR = Path(__file__).resolve().parents[1] / "configs" / "train"
CHECKPOINTS = "checkpoints"
PISSA_INIT = "pissa-init"
PAUSE_FILE = "PAUSE"  # touch it (the flow or the API does) to pause at the next step boundary
RUN_STATE = "run.json"  # hashes of an unfinished run, so --resume refuses different inputs


class FinetuneReport(BaseModel):
    """What a training run did; `train.json` holds it (plus lineage) once the run completes."""

    status: Literal["completed", "paused", "cached"]
    base_model: str
    method: str
    backend: str
    device: str
    dtype: str
    config: dict[str, Any]
    config_hash: str
    dataset_hash: str
    source_commit: str | None
    samples: int
    truncated_samples: int
    dropped_samples: int
    steps: int
    epochs: float
    tokens: int
    tokens_per_second: float
    final_loss: float | None
    loss_curve: list[tuple[int, float]]
    runtime_seconds: float
    peak_memory_mb: float


def load_profile(profile: str | Path, **overrides: Any) -> TrainConfig:
    """A training profile (`cpu-quick` or a YAML path) with CLI overrides applied (None = keep)."""
    path = Path(profile)
    if not path.suffix:
        path = PROFILES_DIR / f"{profile}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.yaml")))
            raise InputError(f"unknown training profile '{profile}'; known: {known}")
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
    blob = orjson.dumps(
        {"config": cfg.model_dump(mode="json"), "base_model": base_model}, option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(blob).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
            full = encode(tokenizer, messages)
            enc = (
                encode(tokenizer, messages, max_length=max_length)
                if len(full.input_ids) > max_length
                else full
            )
            truncated += enc is not full
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
    progress: Callable[[dict[str, Any]], None] | None = None,
    should_pause: Callable[[], bool] | None = None,
) -> FinetuneReport:
    """Train an adapter on `data_dir/train.jsonl`; returns what happened (completed, paused or cached)."""
    from tasks.training import clear_staging, complete_checkpoints, select_backend

    train_file = data_dir / "train.jsonl"
    if not train_file.is_file():
        raise InputError(f"{data_dir} has no train.jsonl: run `forgeflow prepare` (or extract) first")
    backend = select_backend(cfg)
    dataset_hash = file_sha256(train_file)
    chash = config_hash(cfg, base_model)
    done = _finished(out_dir, chash, dataset_hash)
    if done is not None:
        log.info(
            "%s already holds this run (config %s, data %s): not retrained", out_dir, chash, dataset_hash[:12]
        )
        return done.model_copy(update={"status": "cached"})
    ckpt_root = out_dir / CHECKPOINTS
    clear_staging(ckpt_root)
    checkpoints = complete_checkpoints(ckpt_root)
    last = checkpoints[-1] if checkpoints else None
    _check_resume(out_dir, resume, last, chash, dataset_hash)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / RUN_STATE, {"config_hash": chash, "dataset_hash": dataset_hash})

    base_path = materialize(base_model, cache_dir)
    tokenizer = load_tokenizer(str(base_path), cache_dir)
    rows, truncated, dropped = encode_split(tokenizer, train_file, cfg.max_length)
    if not rows:
        raise InputError(
            f"{train_file} has no sample with assistant tokens within max_length {cfg.max_length}"
        )
    return _train(
        rows, tokenizer, base_path, out_dir, cfg, backend,
        resume_from=last if resume else None, progress=progress, should_pause=should_pause,
        lineage={
            "base_model": base_model, "config_hash": chash, "dataset_hash": dataset_hash,
            "source_commit": _source_commit(data_dir), "samples": len(rows),
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

    from tasks.training import ForgeflowTrainer, ProgressCallback, build_model, torch_dtype

    pause_file = out_dir / PAUSE_FILE

    def pause_requested() -> bool:
        return pause_file.exists() or (should_pause is not None and should_pause())

    model = build_model(cfg, base_path, backend)
    pissa_init = out_dir / PISSA_INIT
    if cfg.method == "pissa" and not (pissa_init / "adapter_config.json").is_file():
        _save_pissa_init(model, pissa_init)
    callback = ProgressCallback(progress, pause_requested)
    trainer = ForgeflowTrainer(
        model=model,
        args=_sft_config(cfg, out_dir / CHECKPOINTS),
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
        final_loss=callback.losses[-1][1] if callback.losses else None,
        loss_curve=[(int(h["step"]), float(h["loss"])) for h in state.log_history if "loss" in h],
        runtime_seconds=round(runtime, 2),
        peak_memory_mb=_peak_memory_mb(),
        **lineage,
    )
    if callback.paused:
        pause_file.unlink(missing_ok=True)  # honoured: a resume must not pause again at once
        log.info("paused at step %d; resume with --resume", state.global_step)
        return report
    _publish_adapter(trainer.model, tokenizer, out_dir, pissa_init if cfg.method == "pissa" else None)
    write_json(out_dir / MANIFEST, report.model_dump(mode="json"))  # last: marks the run complete
    (out_dir / RUN_STATE).unlink(missing_ok=True)
    return report


def _sft_config(cfg: TrainConfig, output_dir: Path) -> Any:
    import torch
    from trl import SFTConfig

    from tasks.training import torch_dtype

    dtype = torch_dtype(cfg)
    return SFTConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        logging_steps=1,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=None,  # ForgeflowTrainer prunes, after the new checkpoint is in place
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none",
        disable_tqdm=True,  # progress goes through ProgressCallback (rich in the CLI, artifacts in Prefect)
        max_length=cfg.max_length,
        packing=cfg.packing,
        packing_strategy="bfd",  # best-fit decreasing: whole samples, attention kept within each
        train_sampling_strategy="random" if cfg.packing else "group_by_length",
        include_num_input_tokens_seen="all" if cfg.packing else "non_padding",
        gradient_checkpointing=cfg.gradient_checkpointing,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        dataset_num_proc=None,
    )


def _save_pissa_init(model: Any, target: Path) -> None:
    """PiSSA's initial adapter: needed at the end to turn the trained PiSSA into a plain LoRA."""
    config = model.peft_config["default"]
    init = config.init_lora_weights
    config.init_lora_weights = True  # saved as a plain adapter; peft's documented recipe
    _publish_dir(target, lambda tmp: model.save_pretrained(str(tmp)))
    config.init_lora_weights = init


def _publish_adapter(model: Any, tokenizer: Any, out_dir: Path, pissa_init: Path | None) -> None:
    """The final adapter, applicable to the original base weights, plus the tokenizer, atomically."""

    def fill(tmp: Path) -> None:
        if pissa_init is not None:  # rank doubles; the residual base is no longer needed
            model.save_pretrained(str(tmp), path_initial_model_for_weight_conversion=str(pissa_init))
        else:
            model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))

    target = out_dir / ADAPTER_DIR
    if target.exists():
        shutil.rmtree(target)
    _publish_dir(target, fill)


def _finished(out_dir: Path, chash: str, dataset_hash: str) -> FinetuneReport | None:
    manifest = out_dir / MANIFEST
    if not (manifest.is_file() and (out_dir / ADAPTER_DIR / "adapter_config.json").is_file()):
        return None
    try:
        report = FinetuneReport.model_validate_json(manifest.read_bytes())
    except ValidationError:
        return None
    return report if (report.config_hash, report.dataset_hash) == (chash, dataset_hash) else None


def _check_resume(out_dir: Path, resume: bool, last: Path | None, chash: str, dataset_hash: str) -> None:
    state_file = out_dir / RUN_STATE
    if not resume:
        if last is not None or (out_dir / MANIFEST).exists():
            raise InputError(
                f"{out_dir.name}/ holds another run: pass --resume to continue it, or choose another --out"
            )
        return
    if last is None:
        raise InputError(f"nothing to resume in {out_dir.name}/: no checkpoint yet; run without --resume")
    if state_file.is_file():
        state = json.loads(state_file.read_text(encoding="utf-8"))
        if (state.get("config_hash"), state.get("dataset_hash")) != (chash, dataset_hash):
            raise InputError(
                "cannot resume: the dataset or the training config changed since the checkpoint "
                f"(config {state.get('config_hash')} -> {chash}); start a new run in another --out"
            )


def _source_commit(data_dir: Path) -> str | None:
    try:
        commit = json.loads((data_dir / "stats.json").read_text(encoding="utf-8")).get("commit")
    except (OSError, ValueError):
        return None
    return str(commit) if commit else None


def _peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    # ru_maxrss is KiB on Linux: the process's peak resident set, model and optimizer included
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def request_pause(out_dir: Path) -> None:
    """Ask a training running in `out_dir` to checkpoint and stop at its next step boundary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / PAUSE_FILE).touch()
