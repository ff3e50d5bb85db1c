"""Training throughput: forgeflow's path vs a plain peft + transformers `Trainer` with padded batches.

Usage: .venv/bin/python benchmarks/train.py [--base-model smollm2-135m] [--data data/dataset]
       [--steps 8] [--max-length 512] [--rows 2] [--baseline-batch 8]
Writes benchmarks/results/train.json.

Both sides train the same LoRA (same rank, targets, lr, seed) on the same base model and the same
encoded samples (assistant-only labels). forgeflow packs samples into rows of --max-length tokens
(--rows per step, no padding computed, trl's chunked LM-head loss); the baseline batches
--baseline-batch samples padded to the longest, the way `Trainer` + `DataCollatorForSeq2Seq` does.
Throughput counts real (non-padding) tokens per second, between the end of the first step and the
end of the last (model loading and the first, warm-up step excluded), with the same callback.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from core.base_models import load_tokenizer, materialize  # noqa: E402
from core.config import TrainConfig  # noqa: E402
from core.settings import get_settings  # noqa: E402
from tasks.finetune.run import encode_split, finetune  # noqa: E402
from tasks.finetune.trainer import ProgressCallback, build_model  # noqa: E402


def _throughput(events: list[tuple[float, dict[str, Any]]]) -> dict[str, float]:
    (t0, first), (t1, last) = events[0], events[-1]
    tokens = last["tokens"] - first["tokens"]
    return {
        "tokens": tokens,
        "seconds": round(t1 - t0, 2),
        "tokens_per_second": round(tokens / (t1 - t0), 1),
        "final_loss": round(last["loss"], 4),
    }


def run_forgeflow(cfg: TrainConfig, base_model: str, data: Path, cache: Path) -> dict[str, float]:
    events: list[tuple[float, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as out:
        finetune(
            data,
            base_model,
            Path(out) / "run",
            cfg,
            cache,
            progress=lambda e: events.append((time.time(), e)),
        )
    return _throughput(events)


def run_baseline(
    cfg: TrainConfig, base_path: Path, rows: list[dict[str, list[int]]], tok: Any, batch: int
) -> dict:
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, PrinterCallback, Trainer, TrainingArguments

    events: list[tuple[float, dict[str, Any]]] = []
    model = build_model(cfg, base_path, "peft")
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=batch,
            learning_rate=cfg.learning_rate,
            lr_scheduler_type=cfg.lr_scheduler,
            max_steps=cfg.max_steps or 1,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            seed=cfg.seed,
            use_cpu=not torch.cuda.is_available(),
            include_num_input_tokens_seen="non_padding",
            disable_tqdm=True,
            remove_unused_columns=False,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100),
            callbacks=[ProgressCallback(lambda e: events.append((time.time(), e)), None)],
        )
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    return _throughput(events)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-model", default="smollm2-135m")
    ap.add_argument("--data", type=Path, default=Path("data/dataset"))
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--rows", type=int, default=2, help="packed rows per forgeflow step")
    ap.add_argument("--baseline-batch", type=int, default=8, help="padded samples per baseline step")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/train.json"))
    args = ap.parse_args()
    settings = get_settings()
    common = dict(
        rank=16, alpha=32, dropout=0.05, learning_rate=2e-4, lr_scheduler="constant", warmup_ratio=0.0,
        max_steps=args.steps, grad_accum=1, max_length=args.max_length, save_steps=10_000, seed=42,
    )  # fmt: skip
    base_path = materialize(args.base_model, settings.cache_dir)
    tok = load_tokenizer(str(base_path), settings.cache_dir)
    rows, truncated, _ = encode_split(tok, args.data / "train.jsonl", args.max_length)
    ours = run_forgeflow(
        TrainConfig(**common, batch_size=args.rows, packing=True),
        args.base_model,
        args.data,
        settings.cache_dir,
    )
    base = run_baseline(
        TrainConfig(**common, batch_size=args.baseline_batch), base_path, rows, tok, args.baseline_batch
    )
    lengths = sorted(len(r["input_ids"]) for r in rows)
    result = {
        "benchmark": "train",
        "base_model": args.base_model,
        "samples": len(rows),
        "truncated_samples": truncated,
        "sample_tokens": {"min": lengths[0], "median": lengths[len(lengths) // 2], "max": lengths[-1]},
        "steps": args.steps,
        "forgeflow": {"packed_rows_per_step": args.rows, "max_length": args.max_length, **ours},
        "baseline": {"padded_samples_per_step": args.baseline_batch, **base},
        "speedup": round(ours["tokens_per_second"] / base["tokens_per_second"], 2),
        "machine": {"cpus": torch.get_num_threads(), "device": "cuda" if torch.cuda.is_available() else "cpu",
                    "python": platform.python_version(), "torch": torch.__version__},
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
