"""Repo knowledge as served: the exported GGUF answers questions about the repository through llama.cpp.

What a user gets is the GGUF behind llama.cpp, asked in plain words and, for a project model, given
the chunks its repo index retrieves. So that is what is measured, for the candidate, the base and
the champion, with and without retrieval:

- locate ("Where is `f` defined?"): right when the answer names the definition's path and first
  line (`a/b.py:12`, or the training data's "in `a/b.py` at line 12"). Questions about held-out
  files (the eval split) and about training files; the held-out share is reported on its own.
- explain ("What does `f` do?", asked without its code): ROUGE-L F1 against the docstring.
- score: the mean of the two, the figure the promote gate compares (`tasks.deploy.run.promote`).

Questions come from the job's dataset, stripped of the context and code a training sample carried;
the context each one gets here is rendered by `core.index.context`, exactly as the API renders it.
"""

from __future__ import annotations

import logging
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from core.atomic import write_json
from core.base_models import base_gguf
from core.config import IndexConfig
from core.cpu import training_threads
from core.dataset import load_eval_set, load_split
from core.errors import ForgeflowError
from core.index import IndexUnavailable, RepoIndex, index_path, render_context
from core.index.context import CHARS_PER_TOKEN, with_context
from core.registry import CHAMPION, Registry, exported_sha256s, served_gguf
from core.reports import KnowledgeReport, KnowledgeScores
from core.repos.spec import parse_repo_spec
from core.schemas import Sample
from core.settings import Settings
from tasks.evaluate.generation import rouge_l_f1

log = logging.getLogger(__name__)

RETRIEVAL = KnowledgeReport.RETRIEVAL
_CITATION = re.compile(r"\n\nSource: `[^`\n]*`\s*$")  # what RAFT appends to a cited answer
Answerer = Callable[[Path, Sequence[list[dict[str, Any]]]], list[str]]


@dataclass(frozen=True, slots=True)
class Question:
    task: str  # "locate" or "explain"
    text: str  # as a user asks it: no context, no code
    path: str
    line: int  # the definition's first line
    reference: str  # explain: the docstring
    held_out: bool


def locate_right(answer: str, path: str, line: int) -> bool:
    """The answer names `path` and `line` (`path:line`, `path:line-end`, "at line N", "lines N-M")."""
    return path in answer and re.search(rf"(?::|\blines?\s+){line}\b", answer) is not None


def pick_questions(data_dir: Path, per_kind: int) -> list[Question]:
    """Up to `per_kind` locate questions about held-out files, as many about training files, and
    `per_kind` explain questions (held-out first, training files to make up the number).

    Deterministic: both splits are taken in content-hash order (`core.dataset.load_split`).
    """
    held = load_eval_set(data_dir).samples
    train = load_split(data_dir, "train").samples
    out: list[Question] = []
    for samples, held_out in ((held, True), (train, False)):
        out += [_question(s, held_out) for s in samples if s.meta.task == "locate"][:per_kind]
    explain = [(s, True) for s in held if s.meta.task == "explain"]
    explain += [(s, False) for s in train if s.meta.task == "explain"]
    out += [_question(s, h) for s, h in explain[:per_kind]]
    return out


def evaluate_knowledge(
    candidate: Path,
    questions: list[Question],
    settings: Settings,
    *,
    base: tuple[str, Path] | None,
    champion: tuple[str, Path] | None,
    index_file: Path | None,
    answer: Answerer | None = None,
) -> KnowledgeReport:
    """Ask every question of the candidate, the base and the champion (each `(label, gguf)`, None:
    not asked), without retrieval and, when `index_file` can be read, with it."""
    answer = answer or _LlamaAnswerer(settings)
    commit, contexts, found = _contexts(index_file, questions, settings.index)
    plain = [[{"role": "user", "content": q.text}] for q in questions]
    grounded = [with_context(m, c) for m, c in zip(plain, contexts, strict=True)]
    asked: list[tuple[str, str, Path, list[list[dict[str, Any]]]]] = []
    for label, model, gguf in (
        ("base", base[0] if base else "", base[1] if base else None),
        ("tuned", "candidate", candidate),
        (CHAMPION, champion[0] if champion else "", champion[1] if champion else None),
    ):
        if gguf is None:
            continue
        if commit is None:
            asked.append((label, model, gguf, plain))
            continue
        if label != CHAMPION:  # the champion is only compared as it is served: with retrieval
            asked.append((label, model, gguf, plain))
        asked.append((label + RETRIEVAL, model, gguf, grounded))
    columns: dict[str, KnowledgeScores] = {}
    samples: list[dict[str, str]] = []
    for label, model, gguf, prompts in sorted(asked, key=lambda a: _ORDER.index(a[0])):
        started = time.perf_counter()
        answers = answer(gguf, prompts)
        columns[label] = _score(model, label.endswith(RETRIEVAL), questions, answers, started)
        log.info("repo knowledge, %s: %s", label, _line(columns[label]))
        if label == ("tuned" + RETRIEVAL if commit else "tuned"):
            samples = [
                {"question": q.text, "expected": q.reference if q.task == "explain" else f"{q.path}:{q.line}",
                 "answer": a}
                for q, a in list(zip(questions, answers, strict=True))[:3]
            ]  # fmt: skip
    locates = [f for q, f in zip(questions, found, strict=True) if q.task == "locate"]
    return KnowledgeReport(
        commit=commit,
        questions={
            "locate": sum(q.task == "locate" for q in questions),
            "locate_held_out": sum(q.task == "locate" and q.held_out for q in questions),
            "explain": sum(q.task == "explain" for q in questions),
        },
        recall_at_k=round(sum(locates) / len(locates), 4) if commit and locates else None,
        columns=columns,
        samples=samples,
        created_at=datetime.now(UTC).isoformat(),
    )


def render_table(report: KnowledgeReport) -> str:
    """The columns as a Markdown table that fits 80 columns (one row per model and retrieval)."""
    rows = ["| model | locate | held-out | explain | score |", "|---|---:|---:|---:|---:|"]
    rows += [f"| {label} | {' | '.join(c.cells())} |" for label, c in report.columns.items()]
    return "\n".join(rows)


def knowledge_inputs(
    export_dir: Path, name: str, settings: Settings, base_model: str, source_repo: str | None
) -> tuple[Path, tuple[str, Path] | None, tuple[str, Path] | None, Path | None]:
    """The candidate's served GGUF, the base's and the champion's (when they are other files), and
    the project's index file (None: the model has no source repository)."""
    _, candidate = served_gguf(export_dir)
    base_file = base_gguf(base_model)
    base = (base_model, base_file) if base_file is not None else None
    with Registry.from_settings(settings) as registry:
        info = registry.find(f"{name}:{CHAMPION}")
    champion = None
    if info is not None and "gguf" in info.artifacts:
        path = Path(info.artifacts["gguf"].path)
        same_as_base = base_file is not None and path.resolve() == base_file.resolve()
        if not same_as_base and info.artifacts["gguf"].sha256 not in exported_sha256s(export_dir):
            champion = (info.key, path)
    index_file = None
    if source_repo:
        try:
            index_file = index_path(settings, parse_repo_spec(source_repo, settings).project_id)
        except ForgeflowError as exc:
            log.warning("no retrieval in the repo-knowledge evaluation: %s", exc)
    return candidate, base, champion, index_file


@task(name="repo-knowledge", retries=0, cache_policy=NO_CACHE)
def knowledge_task(
    name: str,
    export_dir: str,
    data_dir: str,
    out_dir: str,
    settings: Settings,
    base_model: str,
    source_repo: str | None = None,
) -> KnowledgeReport:
    """Prefect task: repo knowledge of the export, the base and `name:champion`; knowledge.json and a
    Markdown artifact. Not retried: it reads local files."""
    candidate, base, champion, index_file = knowledge_inputs(
        Path(export_dir), name, settings, base_model, source_repo
    )
    questions = pick_questions(Path(data_dir), settings.evaluate.knowledge_questions)
    report = evaluate_knowledge(
        candidate, questions, settings, base=base, champion=champion, index_file=index_file
    )
    write_json(Path(out_dir) / KnowledgeReport.FILE, report.model_dump(mode="json"))
    at = f" at {report.commit[:12]}" if report.commit else " (no repo index: no retrieval)"
    create_markdown_artifact(
        f"# Repo knowledge of {name}{at}\n\n{render_table(report)}\n\n"
        f"Questions: {report.questions}; retrieval recall@k: {report.recall_at_k}",
        key="repo-knowledge",
        description="repo knowledge of the candidate, the base and the champion, as served",
    )
    return report


# -- helpers ---------------------------------------------------------------------------------

_ORDER = ["base", "tuned", CHAMPION, "base" + RETRIEVAL, "tuned" + RETRIEVAL, CHAMPION + RETRIEVAL]


class _LlamaAnswerer:
    """Greedy chat answers from a GGUF, in this process, through llama.cpp and the GGUF's own template."""

    def __init__(self, settings: Settings) -> None:
        self.max_tokens = settings.evaluate.knowledge_max_tokens
        self.n_ctx = settings.serve.n_ctx
        self.threads = training_threads(settings)

    def __call__(self, gguf: Path, prompts: Sequence[list[dict[str, Any]]]) -> list[str]:
        from llama_cpp import Llama

        llm = Llama(str(gguf), n_ctx=self.n_ctx, n_threads=self.threads, n_threads_batch=self.threads,
                    seed=0, verbose=False)  # fmt: skip
        try:
            out = []
            for messages in prompts:
                reply: Any = llm.create_chat_completion(
                    messages=messages,  # type: ignore[arg-type]
                    max_tokens=self.max_tokens,
                    temperature=0.0,
                )
                out.append(str(reply["choices"][0]["message"]["content"] or "").strip())
            return out
        finally:
            llm.close()


def _contexts(
    index_file: Path | None, questions: list[Question], cfg: IndexConfig
) -> tuple[str | None, list[str], list[bool]]:
    """(the index commit, each question's rendered context, whether it shows the definition asked
    about); (None, "", False) for each when there is no readable index."""
    none = [""] * len(questions), [False] * len(questions)
    if index_file is None:
        return None, *none
    try:
        with RepoIndex(index_file) as idx:
            commit, contexts, found = idx.commit, [], []
            for q in questions:
                hits = idx.search(q.text, cfg.top_k)
                text, shown = render_context(hits, commit, int(cfg.max_context_tokens * CHARS_PER_TOKEN))
                contexts.append(text)
                found.append(
                    any(h.entry.path == q.path and h.entry.start_line == q.line for h in hits[:shown])
                )
    except IndexUnavailable as exc:
        log.warning("no retrieval in the repo-knowledge evaluation: %s", exc)
        return None, *none
    return commit, contexts, found


def _score(
    model: str, retrieval: bool, questions: list[Question], answers: list[str], started: float
) -> KnowledgeScores:
    locate = [(q, a) for q, a in zip(questions, answers, strict=True) if q.task == "locate"]
    right = [locate_right(a, q.path, q.line) for q, a in locate]
    held = [r for (q, _), r in zip(locate, right, strict=True) if q.held_out]
    rouge = [
        rouge_l_f1(a, q.reference) for q, a in zip(questions, answers, strict=True) if q.task == "explain"
    ]
    loc, exp = _mean(right), _mean(rouge)
    parts = [x for x in (loc, exp) if x is not None]
    return KnowledgeScores(
        model=model,
        retrieval=retrieval,
        locate=loc,
        locate_held_out=_mean(held),
        locate_path=_mean([q.path in a for q, a in locate]),
        explain_rouge_l=exp,
        score=round(statistics.mean(parts), 4) if parts else None,
        seconds=round(time.perf_counter() - started, 2),
    )


def _question(sample: Sample, held_out: bool) -> Question:
    messages = sample.messages
    user = next(m.content for m in reversed(messages) if m.role == "user")
    reference = _CITATION.sub("", messages[-1].content) if messages[-1].role == "assistant" else ""
    return Question(
        task=sample.meta.task,
        text=user.split("\n\n```", 1)[0].strip(),
        path=sample.meta.source_path,
        line=sample.meta.lines[0],
        reference=reference,
        held_out=held_out,
    )


def _mean(values: Sequence[float | bool]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _line(c: KnowledgeScores) -> str:
    locate, held, explain, score = c.cells()
    return f"locate {locate} (held-out {held}), explain ROUGE-L {explain}, score {score} in {c.seconds:.0f} s"
