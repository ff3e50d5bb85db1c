"""From per-file and per-commit results to the final train/eval split, deduplicated, with stats."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from typing import Any

import numpy as np

from core.budget import TokenBudget
from core.config import ExtractConfig
from tasks.extract.dedup import near_duplicates
from tasks.extract.fit import Count, fit_to_budget
from tasks.extract.raft import ContextAdder

Sample = dict[str, Any]


def eval_paths(paths: list[str], cfg: ExtractConfig) -> set[str]:
    """Files held out for eval: a stable hash of the path decides, so a file keeps its split over time."""
    if cfg.eval_fraction <= 0 or len(paths) < 2:
        return set()
    scored = sorted((_unit(cfg.split_seed, p), p) for p in paths)
    chosen = {p for u, p in scored if u < cfg.eval_fraction}
    return chosen or {scored[0][1]}  # a tiny repo still gets one eval file


def _unit(seed: str, path: str) -> float:
    h = hashlib.blake2b(f"{seed}\0{path}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def assemble(
    files: list[tuple[str, str, dict[str, Any]]],
    commits: list[dict[str, Any]],
    commit: str,
    cfg: ExtractConfig,
    budget: TokenBudget,
    count: Count | None = None,
    context: ContextAdder | None = None,
) -> tuple[list[Sample], list[Sample], dict[str, Any]]:
    """Split by file, drop ambiguous locate questions and duplicates, then fit the token budget.

    Args:
        count: how tokens are counted (see `tasks.extract.fit.fit_to_budget`).
        context: adds retrieved repo context to a share of the samples (before the budget counts them).

    Returns:
        (train, eval, stats); every sample kept fits `budget`.
    """
    content_skipped: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    held_out = eval_paths([p for p, _, r in files if not r["skip"]], cfg)
    samples: list[Sample] = []
    sigs: list[np.ndarray] = []
    keys: list[list[str]] = []  # exact-duplicate keys per sample, computed where the sample was made
    for path, _lang, result in files:
        if result["skip"]:
            content_skipped[result["skip"]] += 1
        dropped.update(result["dropped"])
        split = "eval" if path in held_out else "train"
        for s in result["samples"]:
            # new meta dict, shared messages: cached results are never mutated
            samples.append({**s, "meta": {**s["meta"], "commit": commit, "split": split}})
        if result["samples"]:
            sigs.append(result["sigs"])
            keys.extend(result["keys"])
    commit_stats: Counter[str] = Counter()
    for c in commits:
        if "skip" in c:
            commit_stats[c["skip"]] += 1
            continue
        touched_eval = sorted(
            p for p in c["paths"] if p in held_out or _unit(cfg.split_seed, p) < cfg.eval_fraction
        )
        # a commit touching any eval file is eval, and is filed under that file so splits stay disjoint
        meta = c["sample"]["meta"]
        samples.append(
            {
                **c["sample"],
                "meta": {
                    **meta,
                    "split": "eval" if touched_eval else "train",
                    "source_path": touched_eval[0] if touched_eval else meta["source_path"],
                },
            }
        )
        sigs.append(c["sigs"])
        keys.append(c["keys"])
        commit_stats["used"] += 1
    sig_rows = np.concatenate(sigs) if sigs else np.zeros((0, 1), dtype=np.uint32)

    keep = _unambiguous_locates(samples, dropped)
    # eval first: when a train sample duplicates an eval one, the train copy goes (no leakage)
    keep.sort(
        key=lambda i: (
            samples[i]["meta"]["split"] != "eval",
            samples[i]["meta"]["source_path"],
            tuple(samples[i]["meta"]["lines"]),
            samples[i]["meta"]["task"],
        )
    )
    keep = _dedup(samples, sig_rows, keys, keep, cfg, dropped)
    kept = [samples[i] for i in keep]
    if context is not None:
        kept = context.apply(kept, held_out)
    # last: tokens are counted for the samples to be written only, never for a duplicate
    fitted = fit_to_budget(kept, budget, cfg, count)
    dropped["over_token_budget"] += fitted.over
    if fitted.under:
        dropped["under_token_budget"] += fitted.under
    final = [s for s, fits in zip(fitted.samples, fitted.keep, strict=True) if fits]
    train = [s for s in final if s["meta"]["split"] == "train"]
    evals = [s for s in final if s["meta"]["split"] == "eval"]
    stats = {
        "commit": commit,
        "samples": {
            "total": len(final),
            "train": len(train),
            "eval": len(evals),
            "by_task": dict(sorted(Counter(s["meta"]["task"] for s in final).items())),
            "by_lang": dict(sorted(Counter(s["meta"]["lang"] for s in final).items())),
        },
        "split": {"eval_files": len(held_out), "eval_fraction": cfg.eval_fraction},
        "dropped": dict(sorted(dropped.items())),
        "token_budget": {
            "min_tokens": budget.min_tokens,
            "max_tokens": budget.max_tokens,
            "cut": len(fitted.cut),
            "max": max((n for n, fits in zip(fitted.tokens, fitted.keep, strict=True) if fits), default=0),
        },
        "commits": {"seen": len(commits), **dict(sorted(commit_stats.items()))},
        "context": dict(Counter(s["meta"]["context"] for s in final if s["meta"].get("context"))),
        "content_skipped": content_skipped,
    }
    return train, evals, stats


def _unambiguous_locates(samples: list[Sample], dropped: Counter[str]) -> list[int]:
    """Indices to keep: 'where is X defined?' has no single answer when X is defined in several places."""
    answers: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        if s["meta"]["task"] == "locate":
            answers[s["messages"][0]["content"]].add(s["messages"][1]["content"])
    ambiguous = {q for q, a in answers.items() if len(a) > 1}
    keep = [
        i
        for i, s in enumerate(samples)
        if not (s["meta"]["task"] == "locate" and s["messages"][0]["content"] in ambiguous)
    ]
    if len(keep) != len(samples):
        dropped["ambiguous_locate"] += len(samples) - len(keep)
    return keep


def _dedup(
    samples: list[Sample],
    sigs: np.ndarray,
    keys_of: list[list[str]],
    order: list[int],
    cfg: ExtractConfig,
    dropped: Counter[str],
) -> list[int]:
    """`order` without exact duplicates, then without near-duplicates (first occurrence wins)."""
    seen: set[str] = set()
    unique: list[int] = []
    for i in order:
        # the same prompt twice is a duplicate; so is the same content under another path or phrasing
        keys = set(keys_of[i])
        if keys & seen:
            dropped["exact_duplicate"] += 1
            continue
        seen.update(keys)
        unique.append(i)
    by_task: dict[str, list[int]] = defaultdict(list)
    for i in unique:
        if samples[i]["meta"]["task"] != "locate":  # locate prompts differ by one name: similar by design
            by_task[samples[i]["meta"]["task"]].append(i)
    drop: set[int] = set()
    for idx in by_task.values():
        drop.update(idx[j] for j in near_duplicates(sigs[idx], cfg.near_duplicate_threshold))
    dropped["near_duplicate"] += len(drop)
    return [i for i in unique if i not in drop]
