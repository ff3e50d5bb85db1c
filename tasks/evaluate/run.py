"""Evaluate a fine-tuning run against its base model on the eval split: NLL, perplexity, generations.

Both models see the same tokenizer and the same samples; the base numbers come from the tuned
model with its adapter disabled, which is exactly the base model (adapters apply to the original
base weights, see core.trained) and saves loading the weights twice.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from core.atomic import write_json, write_text
from core.chat_template import IGNORE_INDEX, Encoded, Message, encode
from core.config import EvalConfig
from core.dataset import load_eval_set
from core.errors import InputError
from core.reports import EvalReport
from core.settings import Settings
from core.trained import load_tuned, read_run
from tasks.evaluate.generation import Prompt, score_generations, select_prompts
from tasks.evaluate.report import (
    REPORT_MD,
    ModelScores,
    NllScore,
    build_report,
    render_report_markdown,
    summary_line,
)

log = logging.getLogger(__name__)
Progress = Callable[[str, float], None]  # (stage, fraction of the whole evaluation done)

REPORT_JSON = EvalReport.FILE
ARTIFACT_KEY = "evaluation-report"


def evaluate_model(
    model_dir: Path,
    data_dir: Path,
    cfg: EvalConfig,
    cache_dir: Path,
    out_dir: Path | None = None,
    progress: Progress | None = None,
) -> EvalReport:
    """Score the run in `model_dir` and its base on `data_dir`'s eval split; write eval.json and eval.md.

    Args:
        out_dir: where the reports go (default: `model_dir`).
        progress: called with (stage, fraction done) as batches and generations finish.

    Returns:
        The report written to eval.json.

    Raises:
        InputError: `model_dir` is not a finetune run, or `data_dir` has no usable eval split.
    """
    run = read_run(model_dir)
    eval_set = load_eval_set(data_dir)
    model, tokenizer = load_tuned(run, cache_dir)
    conversations = eval_set.conversations()
    encoded = _encode(tokenizer, conversations[: cfg.max_samples or None], cfg.max_length)
    tasks = [s.meta.task for s in eval_set.samples]
    pairs = zip(tasks, conversations, strict=True)
    prompts = select_prompts(pairs, tokenizer, cfg.generation_samples, cfg.max_length)
    tracker = _Tracker(progress, total=2 * (math.ceil(len(encoded) / cfg.batch_size) + len(prompts)))

    # disable_adapter() runs the untouched base weights: same model object, same tokenizer
    with model.disable_adapter():
        base = _score_model("base", model, tokenizer, encoded, prompts, cfg, tracker)
    tuned = _score_model("tuned", model, tokenizer, encoded, prompts, cfg, tracker)

    lineage = {
        "base_model": run.base_model,
        "method": run.method,
        "config_hash": run.manifest.get("config_hash"),
        "train_dataset_hash": run.manifest.get("dataset_hash"),
        "eval_dataset_sha256": eval_set.sha256,
    }
    report = EvalReport.model_validate(
        build_report(base, tuned, cfg, lineage, eval_samples=len(eval_set.samples))
    )
    document = report.model_dump(mode="json")
    out = out_dir if out_dir is not None else model_dir
    write_json(out / REPORT_JSON, document)
    examples = list(zip(prompts, base.answers, tuned.answers, strict=True))
    write_text(out / REPORT_MD, render_report_markdown(document, examples))
    tracker.finish()
    return report


def score_nll(
    model: Any,
    encoded: Sequence[Encoded],
    batch_size: int,
    pad_id: int,
    on_batch: Callable[[], None] | None = None,
) -> NllScore:
    """Token-weighted mean NLL over assistant tokens only: prompt and padding tokens never count.

    Samples are batched by length (right padding, attention mask) so that little padding is computed.
    """
    import torch
    import torch.nn.functional as F

    rows = sorted((e for e in encoded if e.assistant_tokens), key=lambda e: len(e.input_ids))
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            width = max(len(e.input_ids) for e in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, e in enumerate(batch):
                ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
                labels[row, : len(e.labels)] = torch.tensor(e.labels)
                mask[row, : len(e.input_ids)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
            targets = labels[:, 1:].to(device)  # the logits at position t predict token t + 1
            keep = targets != IGNORE_INDEX
            # only the scored positions go through log-softmax: a full [batch, width, vocab] copy is large
            nll = F.cross_entropy(logits[:, :-1][keep].float(), targets[keep], reduction="sum")
            total += float(nll)
            tokens += int(keep.sum())
            if on_batch is not None:
                on_batch()
    if tokens == 0:
        raise InputError("no assistant token to score in the eval split: check the chat template")
    return NllScore(total / tokens, tokens, len(rows))


@task(name="evaluate-model", retries=0, cache_policy=NO_CACHE)
def evaluate_task(
    model_dir: str,
    data_dir: str,
    settings: Settings,
    out_dir: str | None = None,
    progress: Progress | None = None,
) -> EvalReport:
    """Prefect task: evaluate tuned vs base and publish the report; the flow decides what a fail means.

    A model that does not beat its base is a result, not an error, so the task does not fail on it.
    Not retried: it reads local files. Not cached: a key on the paths would miss a retrained adapter.
    """
    out = Path(out_dir) if out_dir else Path(model_dir)
    report = evaluate_model(
        Path(model_dir), Path(data_dir), settings.evaluate, settings.cache_dir, out, progress
    )
    create_markdown_artifact(
        (out / REPORT_MD).read_text(encoding="utf-8"),
        key=ARTIFACT_KEY,
        description="tuned vs base evaluation",
    )
    (log.info if report.passed else log.warning)("%s", summary_line(report.model_dump(mode="json")))
    return report


def _encode(tokenizer: Any, conversations: list[list[Message]], max_length: int) -> list[Encoded]:
    encoded = [encode(tokenizer, c, max_length=max_length) for c in conversations]
    kept = [e for e in encoded if e.assistant_tokens]
    if not kept:
        raise InputError(f"no eval sample has an answer within max_length {max_length}: raise it")
    if len(kept) < len(encoded):
        log.warning("%d eval samples lose their answer to max_length: not scored", len(encoded) - len(kept))
    return kept


def _score_model(
    name: str,
    model: Any,
    tokenizer: Any,
    encoded: list[Encoded],
    prompts: list[Prompt],
    cfg: EvalConfig,
    tracker: _Tracker,
) -> ModelScores:
    import torch

    pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
    nll = score_nll(model, encoded, cfg.batch_size, pad_id, tracker.stage(f"score {name}"))
    log.info("%s: mean NLL %.4f, perplexity %.3f over %d tokens", name, nll.nll, nll.perplexity, nll.tokens)
    torch.manual_seed(cfg.seed)  # greedy decoding draws nothing, but a model's own code might
    generation, answers = score_generations(
        model, tokenizer, prompts, cfg.max_new_tokens, tracker.stage(f"generate {name}")
    )
    return ModelScores(nll, generation, answers)


class _Tracker:
    """Turns per-batch and per-prompt ticks into (stage, fraction) progress calls."""

    def __init__(self, callback: Progress | None, total: int) -> None:
        self.callback, self.total, self.done = callback, max(total, 1), 0

    def stage(self, name: str) -> Callable[[], None]:
        def tick() -> None:
            self.done += 1
            if self.callback is not None:
                self.callback(name, min(self.done / self.total, 1.0))

        if self.callback is not None:
            self.callback(name, self.done / self.total)
        return tick

    def finish(self) -> None:
        if self.callback is not None:
            self.callback("done", 1.0)
