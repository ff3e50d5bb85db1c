"""The promote gate's repo-knowledge evaluation, re-run on a finished retrain job.

Usage: FORGEFLOW_HOME=... .venv/bin/python benchmarks/knowledge.py --job JOB_DIR --name PROJECT
       --repo PATH [--questions 6] [--max-tokens 48] [--out benchmarks/results/knowledge.json]

The same code the retrain flow's `repo-knowledge` task runs (tasks/evaluate/knowledge.py): the
job's exported GGUF, the base model's GGUF and `PROJECT:champion` answer the job's questions through
llama.cpp, with and without the project's repo index. Writes the report, the settings it ran with and
the wall time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.atomic import write_json  # noqa: E402
from core.settings import get_settings  # noqa: E402
from tasks.evaluate.knowledge import (  # noqa: E402
    evaluate_knowledge,
    knowledge_inputs,
    pick_questions,
    render_table,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", type=Path, required=True, help="a retrain job directory")
    parser.add_argument("--name", required=True, help="the project's registry name")
    parser.add_argument("--repo", required=True, help="the repository the job trained on")
    parser.add_argument("--base-model", default=None)
    parser.add_argument("--questions", type=int, default=None, help="per kind (evaluate.knowledge_questions)")
    parser.add_argument("--max-tokens", type=int, default=None, help="evaluate.knowledge_max_tokens")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/knowledge.json"))
    args = parser.parse_args()

    settings = get_settings()
    evaluate = settings.evaluate.model_copy(
        update={
            k: v
            for k, v in (("knowledge_questions", args.questions), ("knowledge_max_tokens", args.max_tokens))
            if v is not None
        }
    )
    settings = settings.model_copy(update={"evaluate": evaluate})
    base_model = args.base_model or settings.base_model
    candidate, base, champion, index_file = knowledge_inputs(
        args.job / "run" / "export", args.name, settings, base_model, args.repo
    )
    questions = pick_questions(args.job / "dataset", evaluate.knowledge_questions)
    started = time.perf_counter()
    report = evaluate_knowledge(
        candidate, questions, settings, base=base, champion=champion, index_file=index_file
    )
    seconds = time.perf_counter() - started
    print(render_table(report))
    print(f"{len(questions)} questions, recall@k {report.recall_at_k}, {seconds:.0f} s")
    result = {
        "command": "python " + " ".join(sys.argv),
        "machine": {"cpus": os.cpu_count()},
        "settings": {"knowledge_questions": evaluate.knowledge_questions,
                     "knowledge_max_tokens": evaluate.knowledge_max_tokens, "base_model": base_model},
        "candidate": candidate.name,
        "seconds": round(seconds, 1),
        "report": report.model_dump(mode="json"),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
