"""Fold a finetune run's adapter into its base weights: one HF model directory llama.cpp can convert."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from core.base_models import _publish_dir
from core.files import file_sha256
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


def dir_sha256(path: Path) -> str:
    """Content hash of a model directory: names and bytes of its top-level files (hidden ones skipped)."""
    h = hashlib.sha256()
    for file in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
        h.update(f"{file.name}\0{file_sha256(file)}\n".encode())
    return h.hexdigest()


def replace_dir(target: Path, fill: Callable[[Path], object]) -> None:
    """Publish a fresh `target` built by `fill`; an older one is moved aside, and restored if `fill` fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    old = aside / target.name
    try:
        if target.exists():
            target.replace(old)
        try:
            _publish_dir(target, fill)
        except BaseException:
            if old.exists() and not target.exists():
                old.replace(target)
            raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
