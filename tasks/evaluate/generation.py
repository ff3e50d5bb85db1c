"""Greedy answers to held-out eval prompts, scored against the repository's own answers.

Locate answers ("`f` is defined in `a.py` at line 3.") are scored by exact match; explain answers
(docstrings) by ROUGE-L F1, since many wordings of an explanation are right.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from core.chat_template import Message, render

_WORD = re.compile(r"\w+")


def rouge_l_f1(prediction: str, reference: str) -> float:
    """ROUGE-L F1: longest common subsequence of lowercase word tokens, harmonic mean of P and R."""
    pred, ref = _words(prediction), _words(reference)
    if not pred or not ref:
        return float(pred == ref)
    lcs = _lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def normalize_answer(text: str) -> str:
    """Whitespace collapsed and a final period dropped: 'at line 3.' and ' at  line 3' agree."""
    return " ".join(text.split()).removesuffix(".").rstrip()


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when both answers are equal after `normalize_answer` (case kept: paths are case-sensitive)."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


@dataclass(frozen=True, slots=True)
class GenerationMetric:
    task: str  # meta.task of the samples it scores
    name: str  # field in the report
    label: str  # in the Markdown report
    score: Callable[[str, str], float]  # (prediction, reference) -> [0, 1]


METRICS = (
    GenerationMetric("locate", "exact_match_locate", "exact match, locate", exact_match),
    GenerationMetric("explain", "rouge_l_explain", "ROUGE-L F1, explain", rouge_l_f1),
)


@dataclass(frozen=True, slots=True)
class Prompt:
    task: str
    question: str  # the last user turn, for the report
    ids: list[int]  # conversation without its final assistant turn, with the generation prompt
    reference: str  # the final assistant turn


def select_prompts(
    conversations: Iterable[tuple[str, Sequence[Message]]], tokenizer: Any, per_task: int, max_tokens: int
) -> list[Prompt]:
    """Up to `per_task` prompts per scored task, in the given order; prompts longer than `max_tokens` skipped.

    Args:
        conversations: (task, messages) pairs whose last message is the assistant's answer.
    """
    wanted = {m.task for m in METRICS}
    picked: dict[str, list[Prompt]] = {task: [] for task in wanted}
    for task, messages in conversations:
        if task not in wanted or len(picked[task]) >= per_task or messages[-1]["role"] != "assistant":
            continue
        text = render(tokenizer, messages[:-1], generation_prompt=True)
        # the rendered text already holds the template's special tokens: add none
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) <= max_tokens:
            question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
            picked[task].append(Prompt(task, question, ids, messages[-1]["content"]))
    return [p for m in METRICS for p in picked[m.task]]


def generate_answer(model: Any, tokenizer: Any, prompt_ids: list[int], max_new_tokens: int) -> str:
    """The model's greedy continuation of `prompt_ids`, up to its end-of-turn token, as text."""
    import torch
    from transformers import GenerationConfig

    # An explicit config: a base model's own generation_config may ask for sampling.
    config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        eos_token_id=_stop_ids(model, tokenizer),
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids], device=device)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
    return str(tokenizer.decode(out[0, len(prompt_ids) :], skip_special_tokens=True)).strip()


def score_generations(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    max_new_tokens: int,
    on_prompt: Callable[[], None] | None = None,
) -> tuple[dict[str, float | int | None], list[str]]:
    """Mean score per metric (None without samples) and sample counts; plus each prompt's answer.

    Returns:
        ({"exact_match_locate": 0.5, "locate_samples": 2, ...}, answers in prompt order)
    """
    answers = []
    per_task: dict[str, list[float]] = {m.task: [] for m in METRICS}
    metric_of = {m.task: m for m in METRICS}
    for prompt in prompts:
        answer = generate_answer(model, tokenizer, prompt.ids, max_new_tokens)
        answers.append(answer)
        per_task[prompt.task].append(metric_of[prompt.task].score(answer, prompt.reference))
        if on_prompt is not None:
            on_prompt()
    scores: dict[str, float | int | None] = {}
    for m in METRICS:
        values = per_task[m.task]
        scores[m.name] = sum(values) / len(values) if values else None
        scores[f"{m.task}_samples"] = len(values)
    return scores, answers


def _stop_ids(model: Any, tokenizer: Any) -> list[int]:
    # The tokenizer's eos ends a chat turn for ChatML models; Llama 3 style models list their
    # end-of-turn token only in the model's generation config.
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    return sorted({int(i) for i in [tokenizer.eos_token_id, *ids] if i is not None})


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    if len(a) < len(b):
        a, b = b, a  # one row over the shorter sequence: O(min(n, m)) memory
    prev = [0] * (len(b) + 1)
    for x in a:
        row = [0]
        for j, y in enumerate(b, start=1):
            row.append(prev[j - 1] + 1 if x == y else max(prev[j], row[j - 1]))
        prev = row
    return prev[-1]
