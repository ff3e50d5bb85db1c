"""The repo index: cold build, refresh after a one-file commit, retrieval latency and recall@k.

Usage: .venv/bin/python benchmarks/index.py --repo PATH [--repo PATH ...]
       [--out benchmarks/results/index.json]

Each repo is cloned into a temp dir (its full history), so the one-file commit touches nothing of
yours. Cold: an empty parse cache and no index. Locate questions are asked about every definition
whose name is unique in the repo ("Where is NAME defined?"): a hit is the definition's path and
first line among the top k. Explain questions ("What does NAME do?") are scored the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import ExtractConfig  # noqa: E402
from core.index import Entry, RepoIndex  # noqa: E402
from core.index.store import DEFINITIONS  # noqa: E402
from tasks.extract.index import build_index  # noqa: E402

SAMPLE = 400  # questions per kind, at most (a fixed seed picks them)


def git(repo: Path, *args: str) -> str:
    ident = ["-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    return subprocess.run(
        ["git", "-C", str(repo), *ident, *args], check=True, capture_output=True, text=True
    ).stdout


def definitions(idx: RepoIndex) -> list[Entry]:
    rows = idx._db.execute(  # noqa: SLF001  # the benchmark reads the file directly
        "SELECT kind, name, qualname, path, start_line, end_line FROM entries"
    ).fetchall()
    found = [Entry(k, n, q, p, s, e) for k, n, q, p, s, e in rows if k in DEFINITIONS]
    counts = Counter(e.name for e in found)
    return [e for e in found if counts[e.name] == 1 and not e.name.startswith("_") and len(e.name) > 2]


def recall(idx: RepoIndex, entries: list[Entry], template: str, ks: tuple[int, ...]) -> dict[str, object]:
    hits = dict.fromkeys(ks, 0)
    latencies: list[float] = []
    for e in entries:
        started = time.perf_counter()
        found = idx.search(template.format(name=e.name), max(ks))
        latencies.append((time.perf_counter() - started) * 1000)
        where = [(h.entry.path, h.entry.start_line) for h in found]
        for k in ks:
            hits[k] += (e.path, e.start_line) in where[:k]
    n = max(1, len(entries))
    return {
        "questions": len(entries),
        **{f"recall@{k}": round(hits[k] / n, 4) for k in ks},
        "latency_ms_p50": round(statistics.median(latencies), 3) if latencies else None,
        "latency_ms_p95": round(sorted(latencies)[int(0.95 * (len(latencies) - 1))], 3)
        if latencies
        else None,
    }


def one_file_commit(repo: Path) -> str:
    """Append a function to the largest Python file and commit it; returns the file."""
    files = [p for p in git(repo, "ls-files", "*.py").split() if "/tests/" not in f"/{p}"]
    target = max(files, key=lambda p: (repo / p).stat().st_size)
    with open(repo / target, "a", encoding="utf-8") as fh:
        fh.write('\n\ndef forgeflow_bench_marker():\n    """Added by the index benchmark."""\n    return 1\n')
    git(repo, "commit", "-qam", "Add a marker function")
    return target


def measure(source: Path) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="ff-index-bench-") as tmp:
        repo = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(source), str(repo)], check=True)
        target, cache, cfg = Path(tmp) / "index.sqlite", Path(tmp) / "cache", ExtractConfig()
        cold = build_index(repo, target, cfg, cache, display=source.name)
        warm = build_index(repo, Path(tmp) / "warm.sqlite", cfg, cache, display=source.name, full=True)
        changed = one_file_commit(repo)
        refresh = build_index(repo, target, cfg, cache, display=source.name)
        with RepoIndex(target) as idx:
            status = idx.status()
            pool = definitions(idx)
            random.Random(0).shuffle(pool)
            picked = pool[:SAMPLE]
            locate = recall(idx, picked, "Where is {name} defined?", (1, 5))
            explain = recall(idx, picked, "What does {name} do?", (1, 5))
            marker = idx.search("Where is forgeflow_bench_marker defined?", 1)
        commits = int(git(repo, "rev-list", "--count", "HEAD"))
        return {
            "repo": source.name,
            "commits": commits,
            "files": status.files,
            "entries": status.entries,
            "by_kind": status.by_kind,
            "index_bytes": target.stat().st_size,
            "cold_build_s": cold.elapsed_seconds,
            "full_rebuild_parse_cached_s": warm.elapsed_seconds,
            "one_file_commit": {
                "file": changed,
                "refresh_s": refresh.elapsed_seconds,
                "parsed": refresh.parsed_files,
            },
            "marker_found_after_refresh": bool(marker) and marker[0].entry.name == "forgeflow_bench_marker",
            "locate": locate,
            "explain": explain,
            "unique_definitions": len(pool),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", action="append", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/index.json"))
    args = ap.parse_args()
    results = [measure(r.resolve()) for r in args.repo]
    doc = {
        "command": "python benchmarks/index.py " + " ".join(f"--repo {r}" for r in args.repo),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
