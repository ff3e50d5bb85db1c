"""Fold a finetune run's adapter into its base weights: one HF model directory llama.cpp can convert."""

from __future__ import annotations

from pathlib import Path

from core.atomic import replace_dir
from core.trained import TrainedRun, load_tuned


def merge_adapter(run: TrainedRun, target: Path, cache_dir: Path) -> None:
    """Merge the run's LoRA/DoRA adapter into its fp32 base; save weights and tokenizer atomically.

    PiSSA runs need nothing special: training saves them as plain LoRA over the original base.
    """
    model, tokenizer = load_tuned(run, cache_dir)
    merged = model.merge_and_unload()

    def fill(tmp: Path) -> None:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))  # with its chat template: the converter copies it into the GGUF

    replace_dir(target, fill)
