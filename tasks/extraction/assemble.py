"""From per-file and per-commit results to the final train/eval split, deduplicated, with stats."""

from __future__ import annotations

import copy
import hashlib
from collections import Counter, defaultdict
from typing import Any

from core.config import ExtractConfig
from tasks.extraction.dedup import exact_key, near_duplicates

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
) -> tuple[list[Sample], list[Sample], dict[str, Any]]:
    """Split by file, drop ambiguous locate questions and duplicates; returns (train, eval, stats)."""
    content_skipped: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    held_out = eval_paths([p for p, _, r in files if not r["skip"]], cfg)
    samples: list[Sample] = []
    for path, _lang, result in files:
        if result["skip"]:
            content_skipped[result["skip"]] += 1
        dropped.update(result["dropped"])
        for s in result["samples"]:
            s = copy.deepcopy(s)  # cached dicts may be shared
            s["meta"]["commit"] = commit
            s["meta"]["split"] = "eval" if path in held_out else "train"
            samples.append(s)
    commit_stats: Counter[str] = Counter()
    for c in commits:
        if "skip" in c:
            commit_stats[c["skip"]] += 1
            continue
        s = copy.deepcopy(c["sample"])
        touched_eval = sorted(
            p for p in c["paths"] if p in held_out or _unit(cfg.split_seed, p) < cfg.eval_fraction
        )
        # a commit touching any eval file is eval, and is filed under that file so splits stay disjoint
        s["meta"]["split"] = "eval" if touched_eval else "train"
        s["meta"]["source_path"] = touched_eval[0] if touched_eval else s["meta"]["source_path"]
        samples.append(s)
        commit_stats["used"] += 1

    samples = _drop_ambiguous_locates(samples, dropped)
    # eval first: when a train sample duplicates an eval one, the train copy goes (no leakage)
    samples.sort(
        key=lambda s: (
            s["meta"]["split"] != "eval",
            s["meta"]["source_path"],
            tuple(s["meta"]["lines"]),
            s["meta"]["task"],
        )
    )
    samples = _dedup(samples, cfg, dropped)
    train = [s for s in samples if s["meta"]["split"] == "train"]
    evals = [s for s in samples if s["meta"]["split"] == "eval"]
    stats = {
        "commit": commit,
        "samples": {
            "total": len(samples),
            "train": len(train),
            "eval": len(evals),
            "by_task": dict(sorted(Counter(s["meta"]["task"] for s in samples).items())),
            "by_lang": dict(sorted(Counter(s["meta"]["lang"] for s in samples).items())),
        },
        "split": {"eval_files": len(held_out), "eval_fraction": cfg.eval_fraction},
        "dropped": dict(sorted(dropped.items())),
        "commits": {"seen": len(commits), **dict(sorted(commit_stats.items()))},
        "content_skipped": content_skipped,
    }
    return train, evals, stats


def _drop_ambiguous_locates(samples: list[Sample], dropped: Counter[str]) -> list[Sample]:
    """'Where is X defined?' has no single true answer when X is defined in several places."""
    answers: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        if s["meta"]["task"] == "locate":
            answers[s["messages"][0]["content"]].add(s["messages"][1]["content"])
    ambiguous = {q for q, a in answers.items() if len(a) > 1}
    kept = [
        s for s in samples if not (s["meta"]["task"] == "locate" and s["messages"][0]["content"] in ambiguous)
    ]
    if len(kept) != len(samples):
        dropped["ambiguous_locate"] += len(samples) - len(kept)
    return kept


def _dedup(samples: list[Sample], cfg: ExtractConfig, dropped: Counter[str]) -> list[Sample]:
    seen: set[str] = set()
    unique: list[Sample] = []
    for s in samples:
        key = exact_key(s["meta"]["task"] + "\0" + "\0".join(m["content"] for m in s["messages"]))
        prompt_key = exact_key(s["messages"][0]["content"])
        if key in seen or prompt_key in seen:  # the same prompt twice is a duplicate even with another answer
            dropped["exact_duplicate"] += 1
            continue
        seen.update((key, prompt_key))
        unique.append(s)
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(unique):
        if s["meta"]["task"] != "locate":  # locate prompts differ by one name: similar by construction
            by_task[s["meta"]["task"]].append(i)
    drop: set[int] = set()
    for idx in by_task.values():
        texts = ["\n".join(m["content"] for m in unique[i]["messages"]) for i in idx]
        drop.update(idx[j] for j in near_duplicates(texts, cfg.near_duplicate_threshold))
    dropped["near_duplicate"] += len(drop)
    return [s for i, s in enumerate(unique) if i not in drop]
