"""Secret scanner throughput and false-positive rate on real code (installed packages, 40-line chunks).

Usage: .venv/bin/python benchmarks/secret_scan.py [--packages transformers pydantic prefect]
Writes benchmarks/results/secrets.json. Flagged chunks in real libraries are mostly fake keys in
docs and tests; the rate bounds how much clean code the scanner would wrongly drop.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.extract.secrets import SecretScanner  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packages", nargs="+", default=["transformers", "pydantic", "prefect"])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/secrets.json"))
    args = ap.parse_args()
    chunks: list[str] = []
    for package in args.packages:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"package {package} is not installed")
        for f in sorted(Path(next(iter(spec.submodule_search_locations))).rglob("*.py")):
            lines = f.read_text(encoding="utf-8", errors="replace").split("\n")
            chunks += ["\n".join(lines[i : i + 40]) for i in range(0, len(lines), 40)]
    scanner = SecretScanner()
    megabytes = sum(len(c.encode()) for c in chunks) / 1e6
    started = time.process_time()
    flagged = sum(1 for c in chunks if scanner.first_reason(c))
    cpu = time.process_time() - started
    result = {
        "benchmark": "secrets",
        "packages": args.packages,
        "chunks": len(chunks),
        "megabytes": round(megabytes, 1),
        "cpu_seconds": round(cpu, 2),
        "megabytes_per_second_one_core": round(megabytes / cpu, 1),
        "flagged_chunks": flagged,
        "flagged_fraction": round(flagged / len(chunks), 5),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
