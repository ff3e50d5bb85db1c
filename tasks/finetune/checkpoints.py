"""A training run's directory: its report, completion marker, resume checks and final adapter.

Layout (see core.trained): `adapter/` and `train.json` once complete; `checkpoints/`, `run.json`
(the hashes an unfinished run was started with) and `pissa-init/` meanwhile.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from core.atomic import publish_dir
from core.errors import InputError
from core.reports import ExtractReport, FinetuneReport
from core.trained import ADAPTER_DIR, MANIFEST

CHECKPOINTS = "checkpoints"
PISSA_INIT = "pissa-init"
RUN_STATE = "run.json"  # hashes of an unfinished run, so --resume refuses different inputs


def save_pissa_init(model: Any, target: Path) -> None:
    """PiSSA's initial adapter: needed at the end to turn the trained PiSSA into a plain LoRA."""
    config = model.peft_config["default"]
    init = config.init_lora_weights
    config.init_lora_weights = True  # saved as a plain adapter; peft's documented recipe
    publish_dir(target, lambda tmp: model.save_pretrained(str(tmp)))
    config.init_lora_weights = init


def publish_adapter(model: Any, tokenizer: Any, out_dir: Path, pissa_init: Path | None) -> None:
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
    publish_dir(target, fill)


def finished(out_dir: Path, chash: str, dataset_hash: str) -> FinetuneReport | None:
    manifest = out_dir / MANIFEST
    if not (manifest.is_file() and (out_dir / ADAPTER_DIR / "adapter_config.json").is_file()):
        return None
    try:
        report = FinetuneReport.model_validate_json(manifest.read_bytes())
    except ValidationError:
        return None
    return report if (report.config_hash, report.dataset_hash) == (chash, dataset_hash) else None


def discard_run(out_dir: Path) -> None:
    """Remove a previous run's files from `out_dir` (what --overwrite and DVC's re-runs want)."""
    for name in (ADAPTER_DIR, CHECKPOINTS, PISSA_INIT):
        shutil.rmtree(out_dir / name, ignore_errors=True)
    for name in (MANIFEST, RUN_STATE):
        (out_dir / name).unlink(missing_ok=True)


def check_resume(out_dir: Path, resume: bool, last: Path | None, chash: str, dataset_hash: str) -> None:
    state_file = out_dir / RUN_STATE
    if not resume:
        if last is not None or (out_dir / MANIFEST).exists():
            raise InputError(
                f"{out_dir.name}/ holds another run: pass --resume to continue it, --overwrite to "
                "discard it, or choose another --out"
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


def source_commit(data_dir: Path) -> str | None:
    try:
        commit = json.loads((data_dir / ExtractReport.FILE).read_text(encoding="utf-8")).get("commit")
    except (OSError, ValueError):
        return None
    return str(commit) if commit else None
