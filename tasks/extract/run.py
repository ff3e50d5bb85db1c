"""Extract: a git commit's code, docs and history become train/eval chat samples."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prefect import task

from core import atomic
from core.budget import TokenBudget, token_budget
from core.config import ExtractConfig, IndexConfig
from core.errors import InputError
from core.hashing import config_sha256, dataset_sha256
from core.index import RepoIndex
from core.reports import ExtractReport
from core.settings import Settings
from tasks.extract import history
from tasks.extract.assemble import assemble
from tasks.extract.blobs import BlobReader
from tasks.extract.cache import ResultCache
from tasks.extract.dedup import dedup_text, sample_keys, signatures
from tasks.extract.files import classify, ignore_matcher, list_tree, resolve_commit, symlink_leaves_repo
from tasks.extract.fit import cached_counter
from tasks.extract.index import build_index
from tasks.extract.parse import PARSER_VERSION, FileResult, process_file
from tasks.extract.raft import ContextAdder
from tasks.extract.samples import commit_sample
from tasks.extract.secrets import SecretScanner

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]  # (stage, done, total)
_INLINE_BELOW = 300  # fewer files than this are parsed in-process: a pool costs more than it saves


def extract_dataset(
    repo: Path,
    out_dir: Path,
    cfg: ExtractConfig,
    cache_dir: Path,
    budget: TokenBudget,
    *,
    rev: str = "HEAD",
    display: str = "repository",
    progress: Progress | None = None,
    index_cfg: IndexConfig | None = None,
) -> ExtractReport:
    """Write out_dir/{train,eval}.jsonl and stats.json from commit `rev` of `repo`; returns the stats.

    Every sample written fits `budget` (`core.budget.token_budget(settings)`, the one validation checks).
    A share of the samples carry the repo context serving would retrieve for them (`tasks.extract.raft`),
    from an index of the same commit, as `index_cfg` sizes it.
    """
    index_cfg = index_cfg or IndexConfig()
    started = time.perf_counter()
    commit = resolve_commit(repo, rev, display)
    cfg_hash = config_sha256(cfg.model_dump(mode="json", exclude={"workers"}))
    entries = list_tree(repo, commit)
    skipped: Counter[str] = Counter()
    with BlobReader(repo) as blobs:
        gitignores = [e for e in entries if e.path.rsplit("/", 1)[-1] == ".gitignore" and e.mode != "120000"]
        ignored = ignore_matcher(
            dict(zip([e.path for e in gitignores], blobs.read_many([e.sha for e in gitignores]), strict=True))
        )
        sources, links = [], []
        for e in entries:
            lang, reason = classify(e, cfg, ignored)
            if lang:
                sources.append((e, lang))
            elif reason == "symlink":
                links.append(e)
            elif reason:
                skipped[reason] += 1
        for e, target in zip(links, blobs.read_many([e.sha for e in links]), strict=True):
            skipped["symlink_outside_repo" if symlink_leaves_repo(e.path, target) else "symlink"] += 1
        if not sources:
            raise InputError(
                f"no supported source files in {display} at {commit[:12]} "
                f"(languages: {', '.join(cfg.languages)}; skipped: {dict(skipped) or 'none'})"
            )

        cache = ResultCache(cache_dir / "extract.sqlite")
        keys = [_key(PARSER_VERSION, cfg_hash, e.path, e.sha) for e, _ in sources]
        results: dict[str, FileResult] = cache.get_many(keys)
        todo = [(k, e, lang) for k, (e, lang) in zip(keys, sources, strict=True) if k not in results]
        log.info("%d source files, %d cached, %d to parse", len(sources), len(sources) - len(todo), len(todo))
        fresh = _parse_all(todo, blobs, cfg, progress)
        results.update(fresh)
        cache.put_many(fresh.items())

    commit_results = _history(repo, commit, cfg, cfg_hash, cache, progress)
    files = [(e.path, lang, results[k]) for k, (e, lang) in zip(keys, sources, strict=True)]
    with _context_adder(repo, commit, cfg, index_cfg, cache_dir, display) as context:
        train, evals, stats = assemble(
            files, commit_results, commit, cfg, budget, cached_counter(budget, cache), context
        )
    cache.close()
    stats["files"] = {
        "total": len(entries),
        "sources": len(sources),
        "parsed": len(todo),
        "cached": len(sources) - len(todo),
        "skipped": dict(sorted((skipped + stats.pop("content_skipped")).items())),
    }
    stats["config_hash"] = config_sha256(
        {
            **cfg.model_dump(mode="json", exclude={"workers"}),
            "context": index_cfg.model_dump(include=_CONTEXT_KEYS),
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_jsonl(out_dir / "train.jsonl", train)
    atomic.write_jsonl(out_dir / "eval.jsonl", evals)
    stats["dataset_sha256"] = dataset_sha256(out_dir)
    report = ExtractReport.model_validate(stats)
    atomic.write_json(
        out_dir / ExtractReport.FILE, report.model_dump(mode="json", exclude={"elapsed_seconds"})
    )
    elapsed = time.perf_counter() - started
    log.info(
        "extracted %d train / %d eval samples from %d files in %.2fs",
        len(train),
        len(evals),
        len(sources),
        elapsed,
    )
    return report.model_copy(update={"elapsed_seconds": round(elapsed, 3)})


_CONTEXT_KEYS = {"top_k", "max_context_tokens"}


@contextlib.contextmanager
def _context_adder(
    repo: Path, commit: str, cfg: ExtractConfig, index_cfg: IndexConfig, cache_dir: Path, display: str
) -> Iterator[ContextAdder | None]:
    """An index of `commit` (private to this run; parsed files come from the cache) for RAFT samples."""
    if cfg.context_share <= 0:
        yield None
        return
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="raft-index-", dir=cache_dir) as tmp:
        target = Path(tmp) / "index.sqlite"
        build_index(
            repo, target, cfg, cache_dir, rev=commit, display=display, recent_commits=index_cfg.recent_commits
        )
        with RepoIndex(target) as idx:
            yield ContextAdder(idx, cfg, index_cfg)


def _key(*parts: str) -> str:
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=20).hexdigest()


def _parse_all(
    todo: list[tuple[str, Any, str]], blobs: BlobReader, cfg: ExtractConfig, progress: Progress | None
) -> dict[str, FileResult]:
    out: dict[str, FileResult] = {}
    if not todo:
        return out
    contents = blobs.read_many([e.sha for _, e, _ in todo])
    jobs = ((k, e.path, lang, data) for (k, e, lang), data in zip(todo, contents, strict=True))
    workers = cfg.workers or os.cpu_count() or 1
    pool = None
    if workers == 1 or len(todo) < _INLINE_BELOW:
        _init_worker(cfg)
        done: Iterator[tuple[str, FileResult]] = map(_work, jobs)
    else:
        pool = multiprocessing.get_context("spawn").Pool(workers, _init_worker, (cfg,))
        done = pool.imap(_work, jobs, chunksize=16)
    try:
        for i, (key, result) in enumerate(done, 1):
            out[key] = result
            if progress and (i % 50 == 0 or i == len(todo)):
                progress("parse", i, len(todo))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return out


_worker_state: dict[str, Any] = {}


def _init_worker(cfg: ExtractConfig) -> None:
    _worker_state["cfg"] = cfg
    _worker_state["scanner"] = SecretScanner(cfg.entropy_threshold)


def _work(job: tuple[str, str, str, bytes]) -> tuple[str, FileResult]:
    key, path, lang, data = job
    return key, process_file(path, lang, data, "", _worker_state["cfg"], _worker_state["scanner"])


def _history(
    repo: Path, commit: str, cfg: ExtractConfig, cfg_hash: str, cache: ResultCache, progress: Progress | None
) -> list[dict[str, Any]]:
    """Per commit: {"sample": ...} or {"skip": reason}; cached by commit SHA (commits never change)."""
    if not cfg.history:
        return []
    shas = history.list_commits(repo, commit, cfg.max_commits)
    keys = [_key("commit", PARSER_VERSION, cfg_hash, s) for s in shas]
    found = cache.get_many(keys)
    missing = [s for s, k in zip(shas, keys, strict=True) if k not in found]
    fresh: dict[str, Any] = {}
    if missing:  # building the detectors costs ~0.1 s: only when some commit is not cached yet
        scanner = SecretScanner(cfg.entropy_threshold)
        for c in history.read_commits(repo, missing):
            fresh[_key("commit", PARSER_VERSION, cfg_hash, c.sha)] = _commit_result(c, cfg, scanner)
    if progress:
        progress("history", len(shas), len(shas))
    cache.put_many(fresh.items())
    found.update(fresh)
    return [found[k] for k in keys]


def _commit_result(c: history.Commit, cfg: ExtractConfig, scanner: SecretScanner) -> dict[str, Any]:
    if not c.diff.strip() or not c.paths:
        return {"skip": "empty_diff"}
    if len(c.diff.encode()) > cfg.max_diff_bytes:
        return {"skip": "huge_diff"}
    if "\nBinary files " in c.diff and c.diff.count("\n@@") == 0:
        return {"skip": "binary_diff"}
    if not history.is_informative(c.message, cfg.min_commit_message_chars):
        return {"skip": "uninformative_message"}
    if any(p in cfg.skip_dirs for path in c.paths for p in path.split("/")[:-1]):
        return {"skip": "vendored_or_generated_dir"}
    if scanner.first_reason(c.message) or scanner.first_reason(c.diff):
        return {"skip": "secret"}
    sample = commit_sample(c, c.paths[0])
    if sum(len(m["content"]) for m in sample["messages"]) > cfg.max_sample_chars:  # the cheap prefilter
        return {"skip": "too_long"}
    return {
        "sample": sample,
        "paths": list(c.paths),
        "sigs": signatures([dedup_text(sample)]),
        "keys": sample_keys(sample),
    }


@task(name="extract-data")
def extract_task(
    repo_path: str,
    out_dir: str,
    settings: Settings,
    display: str = "repository",
    progress: Progress | None = None,
    rev: str = "HEAD",
) -> ExtractReport:
    """Prefect task: extraction. Not retried: it is deterministic, and a rerun reuses the per-file cache."""
    return extract_dataset(
        Path(repo_path),
        Path(out_dir),
        settings.extract,
        settings.cache_dir,
        token_budget(settings),
        rev=rev,
        display=display,
        progress=progress,
        index_cfg=settings.index,
    )
