"""Repo knowledge of served models: locate and explain questions, with and without retrieval.

Usage: .venv/bin/python benchmarks/repo_knowledge.py --repo PATH [--tuned FILE.gguf] [-n 30]
       [--out benchmarks/results/repo_knowledge.json]

What users get: the real API (llama.cpp behind it) answers over HTTP. The base model is the
embedded SmolLM2-135M GGUF; `--tuned` adds a fine-tuned GGUF (e.g. a `make run` export). Each is
registered with the repo as its source, and asked with `retrieval: false` and with retrieval on:
four columns when a tuned model is given. Questions are about definitions whose name is unique in
the repo (a fixed seed picks them):

- locate: "Where is NAME defined?"; right when the answer holds `path:line` with the definition's
  path and first line (path_and_line), or at least its path (path).
- explain: "What does NAME do?" for definitions with a docstring; ROUGE-L F1 against the docstring.
- retrieval recall@5 of the same locate questions; TTFT of streamed answers (p50) with retrieval.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.app import create_app  # noqa: E402
from core.base_models import embedded_gguf  # noqa: E402
from core.config import ServeConfig  # noqa: E402
from core.index import RepoIndex, index_path  # noqa: E402
from core.registry import Registry  # noqa: E402
from core.repos.spec import parse_repo_spec  # noqa: E402
from core.settings import Settings  # noqa: E402
from tasks.evaluate.generation import rouge_l_f1  # noqa: E402
from tasks.extract.index import refresh_index  # noqa: E402

MAX_TOKENS = 64


def serve(settings: Settings) -> tuple[str, Any, threading.Thread]:
    import uvicorn

    app = create_app(settings, indexer=refresh_index)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}", server, thread


def questions(
    settings: Settings, repo: Path, n: int, held_out: set[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`n` locate questions (half about held-out files when there are any) and `n` explain ones."""
    path = index_path(settings, parse_repo_spec(str(repo), settings).project_id)
    with RepoIndex(path) as idx:
        rows = idx._db.execute(  # noqa: SLF001
            "SELECT kind, name, path, start_line, doc FROM entries WHERE kind IN "
            "('function', 'method', 'class', 'struct', 'interface', 'trait', 'enum', 'type')"
        ).fetchall()
    counts: dict[str, int] = {}
    for r in rows:
        counts[r[1]] = counts.get(r[1], 0) + 1
    pool = [r for r in rows if counts[r[1]] == 1 and not r[1].startswith("_") and len(r[1]) > 2]
    pool = [r for r in pool if "test" not in r[2].split("/")[0] and not r[1].startswith("test_")]
    random.Random(0).shuffle(pool)
    held = [r for r in pool if r[2] in held_out][: n // 2]
    picked = held + [r for r in pool if r[2] not in held_out][: n - len(held)]
    locate = [{"name": r[1], "path": r[2], "line": r[3], "held_out": r[2] in held_out} for r in picked]
    explain = [{"name": r[1], "doc": r[4].split("\n\n")[0]} for r in pool if len(r[4]) > 20][:n]
    return locate, explain


def ask(url: str, model: str, text: str, retrieval: bool) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": MAX_TOKENS,
            "temperature": 0, "retrieval": retrieval}  # fmt: skip
    reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300)
    reply.raise_for_status()
    return dict(reply.json())


def ttft(url: str, model: str, text: str) -> float:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 8, "stream": True}
    started = time.perf_counter()
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=300) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: ") and '"content"' in line:
                return time.perf_counter() - started
    return time.perf_counter() - started


def column(
    url: str, model: str, retrieval: bool, locate: list[dict[str, Any]], explain: list[dict[str, Any]]
) -> dict[str, Any]:
    exact = path_only = 0
    recall = 0
    held = held_exact = 0
    samples = []
    for q in locate:
        reply = ask(url, model, f"Where is {q['name']} defined?", retrieval)
        answer = reply["choices"][0]["message"]["content"] or ""
        has_path = q["path"] in answer
        # `path:N`, or the training data's own phrasing: "`X` is defined in `path` at line N."
        has_line = has_path and bool(re.search(rf"(:|line ){q['line']}\b", answer))
        exact += has_line
        path_only += has_path
        held += q.get("held_out", False)
        held_exact += has_line and q.get("held_out", False)
        recall += any(
            s["path"] == q["path"] and s["start_line"] == q["line"] for s in reply.get("sources", [])
        )
        if len(samples) < 3:
            samples.append(
                {
                    "question": f"Where is {q['name']} defined?",
                    "expected": f"{q['path']}:{q['line']}",
                    "answer": answer,
                }
            )
    rouge = [
        rouge_l_f1(
            ask(url, model, f"What does {q['name']} do?", retrieval)["choices"][0]["message"]["content"]
            or "",
            q["doc"],
        )
        for q in explain
    ]
    n = max(1, len(locate))
    out: dict[str, Any] = {
        "locate_path_and_line": round(exact / n, 4),
        "locate_path": round(path_only / n, 4),
        "locate_path_and_line_held_out": round(held_exact / held, 4) if held else None,
        "held_out_questions": held,
        "explain_rouge_l": round(statistics.mean(rouge), 4) if rouge else None,
        "samples": samples,
    }
    if retrieval:
        out["retrieval_recall@5"] = round(recall / n, 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, required=True)
    ap.add_argument("--tuned", type=Path, help="a fine-tuned GGUF of this repo (e.g. from make run)")
    ap.add_argument("-n", type=int, default=30, help="questions of each kind")
    ap.add_argument("--dataset", type=Path, help="the tuned model's dataset: its eval files are held out")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/repo_knowledge.json"))
    args = ap.parse_args()
    repo = args.repo.resolve()
    with tempfile.TemporaryDirectory(prefix="ff-rk-") as tmp:
        roots = [repo, Path(tmp), embedded_gguf("smollm2-135m").parent]
        roots += [args.tuned.resolve().parent] if args.tuned else []
        settings = Settings(
            home=Path(tmp) / "ws",
            allowed_roots=roots,
            serve=ServeConfig(n_ctx=2048, parallel=1, max_loaded_models=2),
        )
        refresh_index(str(repo), settings)
        models = {"base": embedded_gguf("smollm2-135m")}
        if args.tuned:
            models["tuned"] = args.tuned.resolve()
        with Registry.from_settings(settings) as registry:
            keys = {
                label: registry.register(path, name=label, source_repo=str(repo)).key
                for label, path in models.items()
            }
        held_out: set[str] = set()
        if args.dataset:
            for line in (args.dataset / "eval.jsonl").read_text().splitlines():
                held_out.add(json.loads(line)["meta"]["source_path"])
        locate, explain = questions(settings, repo, args.n, held_out)
        url, server, thread = serve(settings)
        results: dict[str, Any] = {}
        try:
            for label, key in keys.items():
                for retrieval in (False, True):
                    name = f"{label}{' + retrieval' if retrieval else ''}"
                    started = time.perf_counter()
                    results[name] = column(url, key, retrieval, locate, explain)
                    results[name]["seconds"] = round(time.perf_counter() - started, 1)
                    print(name, {k: v for k, v in results[name].items() if k != "samples"}, flush=True)
            first = next(iter(keys.values()))
            ttft(url, first, "warm up")
            times = [ttft(url, first, f"Where is {q['name']} defined?") for q in locate[:20]]
            results["ttft_ms_p50_with_retrieval"] = round(statistics.median(times) * 1000, 1)
        finally:
            server.should_exit = True
            thread.join(timeout=60)
    doc = {
        "command": f"python benchmarks/repo_knowledge.py --repo {args.repo}"
        + (f" --tuned {args.tuned}" if args.tuned else "")
        + (f" --dataset {args.dataset}" if args.dataset else "")
        + f" -n {args.n}",
        "machine": {"cpus": os.cpu_count()},
        "questions": {"locate": len(locate), "explain": len(explain)},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: v for k, v in doc.items() if k != "results"}, indent=2))


if __name__ == "__main__":
    main()
