"""Lexical vs dense vs hybrid retrieval on a repo index: does the MiniLM embedder earn its place?

Usage: .venv/bin/python benchmarks/retrieval_dense.py --index PATH/index.sqlite [-n 100]
       [--out benchmarks/results/retrieval_dense-NAME.json]

The index is one `forgeflow index build` made (`<home>/projects/<project>/index.sqlite`). Every
entry is embedded with the embedded all-MiniLM-L6-v2 by the API's own embedder
(`core.serving.embedder`: mean pooling, L2-normalised), and two question sets, drawn with a
fixed seed from definitions whose name is unique, are asked three ways:

- locate: "Where is NAME defined?" (the name is in the question);
- describe: the first sentence of the definition's docstring, without its name ("Which code does
  this: <sentence>?"): a user who knows what, not what it is called;
- lexical: `RepoIndex.search` as served (exact names, then BM25); dense: cosine top-k over the
  vectors; hybrid: the exact-name tier first, then lexical and dense lists fused by reciprocal rank.

A hit is the definition itself (path and first line) among the top k. Also reported: the time to
embed the whole index (what a cold build would add) and per-question latency of each method.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sqlite3
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.atomic import write_json  # noqa: E402
from core.index import RepoIndex  # noqa: E402
from core.registry.sources import embedded_source  # noqa: E402
from core.serving.base import ServedModel  # noqa: E402
from core.serving.embedder import Loaded, embed, load  # noqa: E402

K = 5
RRF_K = 60
DEFS = "('function', 'method', 'class', 'struct', 'interface', 'trait', 'enum', 'type')"


def load_minilm() -> Loaded:
    """The embedded all-MiniLM-L6-v2, loaded by the API's own embedder."""
    source = embedded_source("all-minilm-l6-v2")
    return load(ServedModel("all-minilm-l6-v2:1.0.0", "text-embedding", source.path, sha256=""))


def vectors_of(model: Loaded, texts: list[str]) -> np.ndarray:
    vectors, _ = embed(model, texts)
    return np.asarray(vectors, dtype=np.float32)


def entry_text(kind: str, qualname: str, path: str, signature: str, doc: str, body: str) -> str:
    """What a dense vector of an entry is made from: what it is, where, its docstring and code."""
    return f"{kind} {qualname} in {path}\n{doc}\n{signature or ''}\n{body or ''}"[:2000]


def questions(rows: list[tuple[Any, ...]], n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r[2]] = counts.get(r[2], 0) + 1
    pool = [r for r in rows if counts[r[2]] == 1 and not r[2].startswith("_") and len(r[2]) > 2]
    pool = [r for r in pool if "test" not in r[4] and not r[2].startswith("test_")]
    random.Random(0).shuffle(pool)
    locate = [{"q": f"Where is {r[2]} defined?", "path": r[4], "line": r[5]} for r in pool[:n]]
    describe = []
    for r in pool:
        sentence = re.split(r"(?<=\.)\s", (r[7] or "").strip().split("\n\n")[0])[0].rstrip(".")
        sentence = re.sub(re.escape(r[2]), "it", sentence, flags=re.I)
        if len(sentence.split()) >= 5:
            describe.append({"q": f"Which code does this: {sentence}?", "path": r[4], "line": r[5]})
        if len(describe) >= n:
            break
    return locate, describe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/retrieval_dense.json"))
    args = parser.parse_args()

    db = sqlite3.connect(f"file:{args.index}?mode=ro", uri=True)
    rows = db.execute(
        "SELECT id, kind, name, qualname, path, start_line, signature, doc, body FROM entries"
    ).fetchall()
    defs = [
        (r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7])
        for r in db.execute(
            "SELECT id, kind, name, qualname, path, start_line, signature, doc FROM entries "
            f"WHERE kind IN {DEFS}"
        )
    ]
    ids = [r[0] for r in rows]
    where = {r[0]: (r[4], r[5]) for r in rows}
    model = load_minilm()
    started = time.perf_counter()
    vectors = vectors_of(model, [entry_text(r[1], r[3], r[4], r[6], r[7], r[8]) for r in rows])
    embed_s = time.perf_counter() - started

    locate, describe = questions(defs, args.n)
    results: dict[str, Any] = {}
    with RepoIndex(args.index) as idx:
        for name, qs in (("locate", locate), ("describe", describe)):
            found = {"lexical": 0, "dense": 0, "hybrid": 0}
            lat: dict[str, list[float]] = {"lexical": [], "dense": [], "hybrid": []}
            for q in qs:
                t0 = time.perf_counter()
                lexical_hits = idx.search(q["q"], 50)
                t1 = time.perf_counter()
                qv = vectors_of(model, [q["q"]])[0]
                order = np.argsort(-(vectors @ qv))[:50]
                t2 = time.perf_counter()
                lexical = [(h.entry.path, h.entry.start_line) for h in lexical_hits]
                dense = [where[ids[i]] for i in order]
                exact = [(h.entry.path, h.entry.start_line) for h in lexical_hits if h.exact]
                scores: dict[tuple[str, int], float] = {}
                for rank, key in enumerate(exact):
                    scores[key] = 1.0 + 0.5 * (len(exact) - rank) / len(exact)
                for ranked in (lexical, dense):
                    for rank, key in enumerate(ranked):
                        scores[key] = scores.get(key, 0.0) + 1.0 / (RRF_K + rank)
                hybrid = [key for key, _ in sorted(scores.items(), key=lambda kv: -kv[1])]
                t3 = time.perf_counter()
                target = (q["path"], q["line"])
                for method, ranked in (("lexical", lexical), ("dense", dense), ("hybrid", hybrid)):
                    found[method] += target in ranked[:K]
                lat["lexical"].append(t1 - t0)
                lat["dense"].append(t2 - t1)
                lat["hybrid"].append(t3 - t0)
            results[name] = {
                "questions": len(qs),
                **{f"{m}_recall@{K}": round(found[m] / max(1, len(qs)), 4) for m in found},
                **{f"{m}_p50_ms": round(statistics.median(v) * 1000, 2) for m, v in lat.items() if v},
                "examples": [q["q"] for q in qs[:3]],
            }
            print(name, {k: v for k, v in results[name].items() if k != "examples"})
    out = {
        "command": "python " + " ".join(sys.argv),
        "machine": {"cpus": os.cpu_count()},
        "index": {"entries": len(rows), "definitions": len(defs)},
        "embed_all_entries_s": round(embed_s, 2),
        "results": results,
    }
    print(f"{len(rows)} entries embedded in {embed_s:.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, out)


if __name__ == "__main__":
    main()
