"""Retrieval-augmented training samples (AI Forge's RAFT recipe): questions that carry repo context.

A share of the locate, explain, doc and module samples (`extract.context_share`) get the context
serving would give them, rendered by the same code (`core.index.context`) into the same place (a
system message): the chunk that holds the answer (the oracle) among the chunks retrieval finds
for the question. A share of those (`extract.distractor_share`) get the distractors only, so the
model also learns to answer when retrieval missed. Training samples never see a held-out file in
their context, as oracle or distractor; which samples get what is decided by a hash of the sample,
so a re-extraction makes the same dataset.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

from core.config import ExtractConfig, IndexConfig
from core.index import Hit, RepoIndex, render_context
from core.index.context import CHARS_PER_TOKEN, locator, with_context
from core.index.store import DEFINITIONS, Entry

Sample = dict[str, Any]
ORACLE_KINDS = {
    "locate": DEFINITIONS,
    "explain": DEFINITIONS,
    "doc_qa": frozenset({"section"}),
    "summarize_module": frozenset({"module"}),
}
CITED = frozenset({"explain", "doc_qa", "summarize_module"})  # answers that end by naming their source


class ContextAdder:
    """Adds retrieved context to samples, from an index of the very commit they were extracted from."""

    def __init__(self, index: RepoIndex, cfg: ExtractConfig, index_cfg: IndexConfig) -> None:
        self._index = index
        self._cfg = cfg
        self._k = index_cfg.top_k
        self._chars = int(index_cfg.max_context_tokens * CHARS_PER_TOKEN)
        self.counts: Counter[str] = Counter()

    def apply(self, samples: list[Sample], held_out: set[str]) -> list[Sample]:
        """`samples` with context added where the hash says so (new dicts; the inputs are untouched)."""
        return [self._one(s, held_out) for s in samples]

    def _one(self, sample: Sample, held_out: set[str]) -> Sample:
        meta = sample["meta"]
        kinds = ORACLE_KINDS.get(meta["task"])
        messages = sample["messages"]
        if (
            kinds is None
            or messages[0]["role"] != "user"
            or _unit("context", sample) >= self._cfg.context_share
        ):
            return sample
        oracle = self._index.at(meta["source_path"], meta["lines"][0], kinds)
        if oracle is None:
            return sample
        train = meta["split"] == "train"
        question = messages[0]["content"].split("\n\n```", 1)[0]
        found = [
            h
            for h in self._index.search(question, self._k + 3)
            if not (train and h.entry.kind != "commit" and h.entry.path in held_out)
        ]
        others = [h for h in found if not _same(h.entry, oracle)]
        distractors_only = _unit("distractors", sample) < self._cfg.distractor_share
        if distractors_only:  # nothing from the oracle's file: its module entry would answer too
            hits = [h for h in others if h.entry.path != oracle.path][: self._k]
        else:
            at = next((i for i, h in enumerate(found) if _same(h.entry, oracle)), None)
            if at is None or at >= self._k:  # retrieval missed it: shown where the hash puts it
                at = int(_unit("rank", sample) * min(self._k, len(others) + 1))
            hits = others[: self._k - 1]
            hits.insert(min(at, len(hits)), Hit(oracle, 0.0, False))
        context, shown = render_context(hits, meta["commit"], self._chars)
        if not distractors_only and not any(_same(h.entry, oracle) for h in hits[:shown]):
            return sample  # the oracle did not fit the budget: keep the sample as it was
        self.counts["distractors_only" if distractors_only else "with_oracle"] += 1
        answer = messages[-1]
        if not distractors_only and meta["task"] in CITED:
            answer = {**answer, "content": f"{answer['content']}\n\nSource: `{locator(oracle)}`"}
        out = with_context([*messages[:-1], answer], context)
        return {
            **sample,
            "messages": out,
            "meta": {**meta, "context": "distractors" if distractors_only else "oracle"},
        }


def _same(a: Entry, b: Entry) -> bool:
    return (a.path, a.start_line, a.kind) == (b.path, b.start_line, b.kind)


def _unit(salt: str, sample: Sample) -> float:
    meta = sample["meta"]
    key = (
        f"{salt}\0{meta['task']}\0{meta['source_path']}\0{meta['lines']}\0{sample['messages'][0]['content']}"
    )
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64
