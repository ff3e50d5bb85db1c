"""Repo knowledge as served, and the promote gate that decides on it.

The scoring and the gate's judgement run on built reports; the evaluation itself runs real
llama.cpp on the tiny GGUF, with a real repo index of a real git repository.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.base_models import embedded_gguf
from core.config import ExtractConfig
from core.registry import CHAMPION, Registry
from core.reports import KnowledgeReport, KnowledgeScores, PromoteDecision
from core.settings import Settings
from tasks.deploy.run import _judge_knowledge, ensure_champion
from tasks.evaluate.knowledge import evaluate_knowledge, locate_right, pick_questions, render_table
from tasks.extract.index import build_index
from tests.helpers.gitrepo import commit, git

SHOP = '''"""The shop's ledger."""


class Ledger:
    """An append-only record of payments and refunds."""

    def add(self, entry):
        """Append one payment or refund."""
        self.entries.append(entry)


def settle_ledger(ledger):
    """Sum every payment of a ledger, minus its refunds."""
    return sum(e.amount for e in ledger.entries)
'''


def _row(task: str, messages: list[dict[str, str]], path: str, line: int, split: str) -> dict:
    meta = {"task": task, "source_path": path, "lines": [line, line + 3], "commit": "c" * 40,
            "lang": "python", "split": split}  # fmt: skip
    return {"messages": messages, "meta": meta}


def _dataset(folder: Path) -> Path:
    context = "Answer the question using the repository context below.\n\n[1] shop/ledger.py:12-14"
    eval_rows = [
        _row(
            "locate",
            [
                {"role": "system", "content": context},
                {"role": "user", "content": "Where is `settle_ledger` defined?"},
                {
                    "role": "assistant",
                    "content": "`settle_ledger` is defined in `shop/ledger.py` at line 12.",
                },
            ],
            "shop/ledger.py",
            12,
            "eval",
        ),
        _row(
            "explain",
            [
                {
                    "role": "user",
                    "content": "Explain `settle_ledger`.\n\n```python\ndef settle_ledger(l): ...\n```",
                },
                {
                    "role": "assistant",
                    "content": "Sum every payment of a ledger, minus its refunds.\n\n"
                    "Source: `shop/ledger.py:12-14`",
                },
            ],
            "shop/ledger.py",
            12,
            "eval",
        ),  # fmt: skip
    ]
    train_rows = [
        _row(
            "locate",
            [
                {"role": "user", "content": "Where is the class `Ledger` defined?"},
                {"role": "assistant", "content": "`Ledger` is defined in `shop/ledger.py` at line 4."},
            ],
            "shop/ledger.py",
            4,
            "train",
        ),
        _row(
            "explain",
            [
                {"role": "user", "content": "What does `Ledger.add` do?"},
                {"role": "assistant", "content": "Append one payment or refund."},
            ],
            "shop/ledger.py",
            7,
            "train",
        ),
    ]
    folder.mkdir(parents=True)
    for split, rows in (("eval", eval_rows), ("train", train_rows)):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.mark.parametrize(
    ("answer", "right"),
    [
        ("`f` is defined in `a/b.py` at line 12.", True),
        ("See a/b.py:12-20.", True),
        ("a/b.py, lines 12-20", True),
        ("`f` is defined in `a/b.py` at line 120.", False),  # another line
        ("`f` is defined in `b.py` at line 12.", False),  # not the path
        ("a/b.py:2", False),
    ],
)
def test_a_locate_answer_is_right_with_the_path_and_the_first_line(answer: str, right: bool) -> None:
    assert locate_right(answer, "a/b.py", 12) is right


def test_questions_are_asked_as_a_user_asks_them(tmp_path: Path) -> None:
    questions = pick_questions(_dataset(tmp_path / "data"), per_kind=4)

    assert [(q.task, q.held_out) for q in questions] == [
        ("locate", True), ("locate", False), ("explain", True), ("explain", False)
    ]  # fmt: skip
    held_locate, _, held_explain, _ = questions
    # no training context, no code, no citation in the reference
    assert held_locate.text == "Where is `settle_ledger` defined?"
    assert (held_locate.path, held_locate.line) == ("shop/ledger.py", 12)
    assert held_explain.text == "Explain `settle_ledger`."
    assert held_explain.reference == "Sum every payment of a ledger, minus its refunds."
    assert len(pick_questions(tmp_path / "data", per_kind=0)) == 0


def _scores(score: float | None, retrieval: bool = True) -> KnowledgeScores:
    return KnowledgeScores(model="m", retrieval=retrieval, locate=score, locate_held_out=score,
                           locate_path=score, explain_rouge_l=score, score=score, seconds=1.0)  # fmt: skip


def _report(columns: dict[str, float | None], commit: str | None = "c" * 40) -> KnowledgeReport:
    return KnowledgeReport(
        commit=commit,
        questions={"locate": 2, "locate_held_out": 1, "explain": 2},
        recall_at_k=1.0,
        columns={k: _scores(v, k.endswith("retrieval")) for k, v in columns.items()},
        samples=[],
        created_at="2026-12-07T00:00:00+00:00",
    )


def _decision() -> PromoteDecision:
    return PromoteDecision(promote=False, reason="", candidate="p:1.1.0", champion="p:1.0.0",
                           tuned_perplexity=2.0, base_perplexity=3.0, margin=0.0)  # fmt: skip


def test_the_gate_refuses_a_candidate_that_knows_the_repo_less_than_the_champion() -> None:
    report = _report({"base": 0.0, "tuned": 0.1, "base + retrieval": 0.2, "tuned + retrieval": 0.3,
                      "champion + retrieval": 0.5})  # fmt: skip
    decision = _decision()

    assert _judge_knowledge(decision, report, tolerance=0.02) == "refused"
    assert "knows the repo less than champion + retrieval" in decision.reason
    assert (decision.candidate_knowledge, decision.reference_knowledge) == (0.3, 0.5)
    # within the tolerance it is as good: promoted on knowledge, against the champion
    close = _report({"tuned + retrieval": 0.49, "champion + retrieval": 0.5})
    assert _judge_knowledge(_decision(), close, tolerance=0.02) == "champion"


def test_without_a_champion_the_base_as_served_is_the_bar() -> None:
    decision = _decision()
    report = _report({"base": 0.0, "tuned": 0.4, "base + retrieval": 0.45, "tuned + retrieval": 0.3})
    assert report.gate_columns() == ("tuned + retrieval", "base + retrieval")
    assert (
        _judge_knowledge(decision, report, tolerance=0.0) == "refused"
    )  # worse than the base with its index
    # no index: the plain columns are what is served
    plain = _report({"base": 0.1, "tuned": 0.4}, commit=None)
    assert plain.gate_columns() == ("tuned", "base")
    assert _judge_knowledge(_decision(), plain, tolerance=0.0) == "base"
    # no question of a kind the dataset has: nothing to judge by
    assert _judge_knowledge(_decision(), _report({"tuned": None, "base": None}, commit=None), 0.0) is None
    assert _judge_knowledge(_decision(), None, 0.0) is None


def test_a_project_has_the_base_as_champion_until_a_model_wins(settings: Settings, tmp_path: Path) -> None:
    first = ensure_champion("shop", "smollm2-135m", str(tmp_path), settings)
    assert first is not None and first.config.get("base") is True
    assert first.source_repo == str(tmp_path)
    # the embedded GGUF is referenced where it is, not copied
    assert Path(first.artifacts["gguf"].path) == embedded_gguf("smollm2-135m")
    again = ensure_champion("shop", "smollm2-135m", str(tmp_path), settings)
    assert again is not None and again.key == first.key  # once
    with Registry.from_settings(settings) as registry:
        assert registry.resolve(f"shop:{CHAMPION}").key == first.key
        assert registry.list(name="shop").total == 1
    # a Hugging Face base has no GGUF to serve: no champion until one is promoted
    assert ensure_champion("other", str(tmp_path), str(tmp_path), settings) is None


@pytest.mark.integration
def test_the_served_gguf_answers_with_and_without_the_repo_index(
    tiny_gguf: Path, settings: Settings, tmp_path: Path
) -> None:
    repo = tmp_path / "shop"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(repo, {"shop/ledger.py": SHOP}, "Add the ledger")
    index_file = tmp_path / "index.sqlite"
    build_index(repo, index_file, ExtractConfig(), tmp_path / "cache", display="shop")
    questions = pick_questions(_dataset(tmp_path / "data"), per_kind=4)
    settings = settings.model_copy(
        update={"evaluate": settings.evaluate.model_copy(update={"knowledge_max_tokens": 8})}
    )

    report = evaluate_knowledge(
        tiny_gguf, questions, settings, base=("tiny", tiny_gguf), champion=None, index_file=index_file
    )

    assert list(report.columns) == ["base", "tuned", "base + retrieval", "tuned + retrieval"]
    assert report.questions == {"locate": 2, "locate_held_out": 1, "explain": 2}
    assert report.commit is not None and len(report.commit) == 40
    assert report.recall_at_k == 1.0  # both definitions asked about are retrieved by name
    for label, column in report.columns.items():
        assert column.retrieval is label.endswith("retrieval")
        assert column.locate is not None and column.explain_rouge_l is not None and column.score is not None
    assert report.columns["base"] == report.columns["tuned"].model_copy(
        update={"model": "tiny", "seconds": report.columns["base"].seconds}
    )  # one GGUF, greedy: the same answers
    table = render_table(report)
    assert all(len(line) <= 80 for line in table.splitlines()) and "tuned + retrieval" in table
    # no index to read: the retrieval columns are left out, not faked
    without = evaluate_knowledge(
        tiny_gguf, questions, settings, base=None, champion=None, index_file=tmp_path / "missing.sqlite"
    )
    assert list(without.columns) == ["tuned"] and without.commit is None and without.recall_at_k is None
