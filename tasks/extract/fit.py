"""Samples against the token budget: a prose answer over it is cut at a paragraph boundary, the rest dropped.

It runs in the main process on the deduplicated samples, in two batch counts (all samples, then the cuts
of those over the budget). The parser processes and their per-file results know nothing of it: the budget
depends on the base model, and changing the model must not re-parse the repository. Counts are kept by
tokenizer and conversation instead (`cached_counter`), so re-extraction only counts new samples.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from core.budget import TokenBudget
from core.config import ExtractConfig
from tasks.extract.cache import ResultCache

Sample = dict[str, Any]
Count = Callable[[list[Sample]], list[int]]  # rendered tokens of each sample, as TokenBudget.count

# Answers that are prose from the repo (a docstring, a doc section, a commit message): their first
# paragraphs still answer the prompt. Code (implement) cut short is wrong code, and a prompt cut short
# (a diff, a code block) no longer matches its answer: those samples are dropped instead.
CUTTABLE = frozenset({"explain", "docstring", "summarize_module", "doc_qa", "commit"})
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_FENCE = "```"


@dataclass(frozen=True)
class Fitted:
    """The samples after fitting, index for index: cut ones replaced, misfits marked to drop."""

    samples: list[Sample]
    keep: list[bool]
    tokens: list[int]  # rendered length of each sample as it now is
    cut: list[int]  # indices of the samples whose answer was cut
    over: int  # dropped: over max_tokens even after any cut
    under: int  # dropped: under min_tokens (or not renderable with the chat template)


def fit_to_budget(
    samples: list[Sample], budget: TokenBudget, cfg: ExtractConfig, count: Count | None = None
) -> Fitted:
    """Keep each sample inside `budget`: cut a prose answer to the longest paragraph prefix that fits.

    Args:
        count: how tokens are counted; by default `budget.count` (`cached_counter` remembers them).
    """
    count = count or (lambda batch: budget.count([s["messages"] for s in batch]))
    tokens = count(samples)
    over = [i for i, n in enumerate(tokens) if n > budget.max_tokens]
    candidates = [(i, c) for i in over for c in _cuts(samples[i], cfg)]  # longest first per sample
    counts = count([c for _, c in candidates])
    chosen: dict[int, tuple[Sample, int]] = {}
    for (i, cut), n in zip(candidates, counts, strict=True):
        if i not in chosen and budget.fits(n):
            chosen[i] = (cut, n)
    fitted, lengths = list(samples), list(tokens)
    for i, (cut, n) in chosen.items():
        fitted[i], lengths[i] = cut, n
    keep = [budget.fits(n) for n in lengths]
    return Fitted(
        samples=fitted,
        keep=keep,
        tokens=lengths,
        cut=sorted(chosen),
        over=len(over) - len(chosen),
        under=sum(1 for n in tokens if n < budget.min_tokens),
    )


def cached_counter(budget: TokenBudget, cache: ResultCache) -> Count:
    """`budget.count`, remembered in `cache` by tokenizer fingerprint and conversation."""

    def count(samples: list[Sample]) -> list[int]:
        keys = [_count_key(budget.fingerprint, s["messages"]) for s in samples]
        known = cache.get_counts(keys)
        todo = [i for i, key in enumerate(keys) if key not in known]
        fresh = budget.count([samples[i]["messages"] for i in todo])
        cache.put_counts((keys[i], n) for i, n in zip(todo, fresh, strict=True))
        known.update((keys[i], n) for i, n in zip(todo, fresh, strict=True))
        return [known[key] for key in keys]

    return count


def _count_key(fingerprint: str, messages: list[dict[str, str]]) -> str:
    h = hashlib.blake2b(fingerprint.encode(), digest_size=20)
    h.update(orjson.dumps(messages))
    return h.hexdigest()


def _cuts(sample: Sample, cfg: ExtractConfig) -> list[Sample]:
    """The sample with its answer cut after each whole paragraph, longest first; none for other tasks.

    A cut keeps at least the first paragraph (a docstring's summary, a commit's subject line), never ends
    inside a fenced code block, and keeps a doc section at least `min_doc_section_chars` long, the rule
    extraction applies to doc sections in the first place.
    """
    task = sample["meta"]["task"]
    if task not in CUTTABLE:
        return []
    answer = sample["messages"][-1]["content"]
    floor = cfg.min_doc_section_chars if task == "doc_qa" else 1
    prefixes = []
    for brk in reversed(list(_PARAGRAPH_BREAK.finditer(answer))):
        prefix = answer[: brk.start()].rstrip()
        if (
            len(prefix) >= floor
            and prefix.strip()
            and prefix.count(_FENCE) % 2 == 0
            and prefix not in prefixes
        ):
            prefixes.append(prefix)
    return [_with_answer(sample, p) for p in prefixes]


def _with_answer(sample: Sample, answer: str) -> Sample:
    # new dicts: the messages of cached per-file results are shared and never mutated
    *rest, last = sample["messages"]
    return {**sample, "messages": [*rest, {**last, "content": answer}]}
