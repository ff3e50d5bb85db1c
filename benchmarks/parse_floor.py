"""The floor under cold extraction: CPython's own `ast.parse` over every .py file of a package.

Usage: .venv/bin/python benchmarks/parse_floor.py [--package transformers]
Writes benchmarks/results/parse_floor.json: files/s of ast.parse alone on one core.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import json
import time
import warnings
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--package", default="transformers")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/parse_floor.json"))
    args = ap.parse_args()
    spec = importlib.util.find_spec(args.package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {args.package} is not installed")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).rglob("*.py"))
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for text in texts:
            with contextlib.suppress(SyntaxError):
                ast.parse(text)
    elapsed = time.perf_counter() - started
    result = {
        "benchmark": "parse_floor",
        "package": args.package,
        "files": len(files),
        "megabytes": round(sum(len(t.encode()) for t in texts) / 1e6, 1),
        "ast_parse_seconds_one_core": round(elapsed, 3),
        "ast_parse_files_per_second_one_core": round(len(files) / elapsed, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
