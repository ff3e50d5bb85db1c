"""Extraction throughput: cold files/s on a large Python tree, and incremental/cold after a one-file commit.

Usage: .venv/bin/python benchmarks/extract.py [--package transformers] [--out benchmarks/results/extract.json]
The tree is a git repo made in a temp dir from an installed package's files (no network).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.budget import token_budget  # noqa: E402
from core.config import ExtractConfig  # noqa: E402
from core.settings import Settings  # noqa: E402
from tasks.extract.run import extract_dataset  # noqa: E402


def make_repo(package: str, dest: Path) -> int:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {package} is not installed")
    src = Path(next(iter(spec.submodule_search_locations)))
    shutil.copytree(src, dest / package, ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyc"))
    git = ["git", "-C", str(dest), "-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", f"import {package}"], check=True)
    return sum(1 for _ in (dest / package).rglob("*.py"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--package", default="transformers")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/extract.json"))
    args = ap.parse_args()
    cfg = ExtractConfig()
    with tempfile.TemporaryDirectory() as tmp:
        repo, cache, out = Path(tmp, "repo"), Path(tmp, "cache"), Path(tmp, "dataset")
        repo.mkdir()
        py_files = make_repo(args.package, repo)
        budget = token_budget(Settings(home=Path(tmp, "ws")))  # loading the tokenizer is not timed
        t0 = time.perf_counter()
        cold = extract_dataset(repo, out, cfg, cache, budget)
        cold_s = time.perf_counter() - t0
        # one-file commit: append a documented function to some module
        target = sorted((repo / args.package).rglob("*.py"))[0]
        with target.open("a", encoding="utf-8") as fh:
            fh.write(
                '\n\ndef forgeflow_bench_added(x):\n    """Return x doubled for the benchmark."""\n'
                "    y = x * 2\n    return y\n"
            )
        git = ["git", "-C", str(repo), "-c", "user.name=bench", "-c", "user.email=bench@example.com"]
        subprocess.run([*git, "commit", "-qam", "Add a benchmark function to one module"], check=True)
        t0 = time.perf_counter()
        inc = extract_dataset(repo, out, cfg, cache, budget)
        inc_s = time.perf_counter() - t0
    result = {
        "benchmark": "extract",
        "package": args.package,
        "python_files": py_files,
        "source_files": cold.files.sources,
        "cold_seconds": round(cold_s, 3),
        "cold_files_per_second": round(cold.files.sources / cold_s, 1),
        "cold_samples": cold.samples.total,
        "incremental_seconds": round(inc_s, 3),
        "incremental_files_parsed": inc.files.parsed,
        "incremental_over_cold": round(inc_s / cold_s, 4),
        "targets": {"cold_files_per_second": 1000, "incremental_over_cold": 0.05},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
