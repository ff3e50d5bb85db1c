"""The contract between fine-tuning, evaluation and export: what a training run leaves behind.

A run directory holds `adapter/` (a peft adapter that applies to the *original* base weights, so
PiSSA runs are converted to plain LoRA when saved; the tokenizer is saved beside it) and
`train.json` (base model, method, config and its hash, dataset hash, final metrics).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.base_models import load_tokenizer, materialize
from core.errors import InputError
from core.reports import FinetuneReport

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ADAPTER_DIR = "adapter"
MANIFEST = FinetuneReport.FILE


@dataclass(frozen=True, slots=True)
class TrainedRun:
    dir: Path
    base_model: str  # as the user named it: embedded name, local path or cached HF id
    method: str
    manifest: dict[str, Any]

    @property
    def adapter_dir(self) -> Path:
        return self.dir / ADAPTER_DIR


def read_run(model_dir: Path) -> TrainedRun:
    """The training run in `model_dir`; a clear error when it is not one."""
    manifest_path = model_dir / MANIFEST
    if not (manifest_path.is_file() and (model_dir / ADAPTER_DIR / "adapter_config.json").is_file()):
        raise InputError(f"{model_dir} is not a finetune output: expected {MANIFEST} and {ADAPTER_DIR}/")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        return TrainedRun(model_dir, str(manifest["base_model"]), str(manifest["method"]), manifest)
    except (ValueError, KeyError) as exc:
        raise InputError(f"{model_dir / MANIFEST} is unreadable: {exc}") from None


def load_base(name: str, cache_dir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base model (fp32, eval mode) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    path = materialize(name, cache_dir)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    model.eval()
    return model, load_tokenizer(str(path), cache_dir)


def load_tuned(run: TrainedRun, cache_dir: Path) -> tuple[Any, PreTrainedTokenizerBase]:
    """Base model with the run's adapter applied (a peft model, eval mode, not merged)."""
    from peft import PeftModel

    base, tokenizer = load_base(run.base_model, cache_dir)
    model = PeftModel.from_pretrained(base, str(run.adapter_dir), is_trainable=False)
    model.eval()
    return model, tokenizer
