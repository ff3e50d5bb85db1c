"""The promote gate: a new model becomes the champion only when it beats the base (perplexity, a guard)
and knows the repo at least as well as the champion (as served, through llama.cpp)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.helpers.datasets import EVAL, NAMES, conversation, write_dataset
from tests.helpers.gitrepo import commit, git
from tests.helpers.stack import Stack
from tests.jobs.conftest import fine_tune


@pytest.fixture(scope="module")
def learnable(jobs_root: Path, tiny_base: Path) -> tuple[Path, Path]:
    """A fresh (unrecited) tiny base, and data whose train split holds the eval answers: learnable."""
    base = tiny_base
    # the eval answers under reworded prompts: what the tuned model learns shows on the eval split
    train = [
        [{"role": "user", "content": f"{m[0]['content']} (question {i})"}, m[1]]
        for m in EVAL
        for i in range(8)
    ] + [conversation(n) for n in NAMES]
    data = write_dataset(
        jobs_root / "learnable",
        {"train": train, "eval": EVAL},
        task="explain",
        commit="b" * 40,
        lines=(1, 2),
        source_path="{split}/{i}.py",
        stats=False,
    )
    return base, data


def _promote(stack: Stack, job: str) -> dict:
    return json.loads((stack.home / "jobs" / job / "promote.json").read_text())


def test_the_gate_promotes_a_better_model_and_keeps_the_champion_over_a_worse_one(
    stack: Stack, learnable: tuple[Path, Path]
) -> None:
    base, data = learnable
    good = fine_tune(
        stack,
        data,
        base_model=str(base),
        project_name="gate",
        max_steps=40,
        learning_rate=5e-3,
        auto_deploy=True,
    ).json()["job_id"]
    assert stack.wait(good, timeout=900)["status"] == "completed"
    first = _promote(stack, good)
    assert first["promote"], first
    assert first["tuned_perplexity"] < first["base_perplexity"]
    champion = httpx.get(f"{stack.api}/models/gate:champion", timeout=30).json()
    assert f"gate:{champion['version']}" == first["candidate"]
    # the speed gate ran the repo suite on the candidate (no champion yet) and recorded it on the version
    bench = champion["metrics"]["benchmark"]
    assert bench["suite"] == "repo" and bench["tps"] > 0
    run = httpx.get(f"{stack.api}/benchmarks/runs/{bench['run_id']}", timeout=30).json()["run"]
    assert run["source"] == "retrain" and run["status"] == "completed"
    # a model trained far less beats the base a little, but not the champion: the champion stays
    weak = fine_tune(
        stack,
        data,
        base_model=str(base),
        project_name="gate",
        max_steps=2,
        learning_rate=1e-3,
        auto_deploy=True,
    ).json()["job_id"]
    assert stack.wait(weak, timeout=900)["status"] == "completed"
    second = _promote(stack, weak)
    assert not second["promote"], second
    assert second["champion"] == first["candidate"] and second["candidate"] != first["candidate"]
    # refused on repo knowledge as served: both GGUFs answered the same questions through llama.cpp
    assert second["reference"] == "champion", second
    assert second["candidate_knowledge"] < second["reference_knowledge"], second
    assert "knows the repo less than champion" in second["reason"]
    knowledge = json.loads((stack.home / "jobs" / weak / "knowledge.json").read_text())
    assert set(knowledge["columns"]) == {"tuned", "champion"}  # no repo: no retrieval columns
    assert knowledge["columns"]["champion"]["model"] == first["candidate"]
    assert "speed gate" not in second["reason"]  # refused on quality: no benchmark was needed
    still = httpx.get(f"{stack.api}/models/gate:champion", timeout=30).json()
    assert f"gate:{still['version']}" == first["candidate"]
    answer = httpx.post(
        f"{stack.api}/v1/chat/completions",
        json={"model": "gate:champion", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        timeout=60,
    )
    assert answer.status_code == 200 and answer.json()["model"].startswith("gate")


def _module(i: int) -> str:
    return (
        f'"""Helpers number {i} for the totals of the widget inventory."""\n\n\n'
        f'def total_{i}(items):\n    """Sum the quantities of every item in inventory bucket {i}."""\n'
        f"    count = 0\n    for item in items:\n        count += item.quantity * {i}\n    return count\n"
    )


def test_retrain_from_the_command_line_ends_with_an_answer_its_sources_and_the_knowledge_table(
    stack: Stack, jobs_root: Path
) -> None:
    repo = jobs_root / "widgets"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(repo, {f"widgets/m{i}.py": _module(i) for i in range(12)}, "Add the inventory helpers")

    done = stack.cli("retrain", "--repo", str(repo), "--force", "--name", "widgets", timeout=900)

    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout
    assert "served as: widgets:champion" in text
    question = next(line for line in text.splitlines() if line.startswith("question: "))
    assert "total_" in question  # a real definition of this repository, from its index
    assert "answer: " in text
    assert "  source: widgets/m" in text  # grounded: the answer names where its context came from
    table = text[text.index("repo knowledge:") : text.index("Prefect UI: ", text.index("repo knowledge:"))]
    table = table.splitlines()
    assert any("tuned + retrieval" in line for line in table)
    assert all(len(line) <= 80 for line in table)
    job = text.split()[1]  # "job <id> started: ..."
    knowledge = json.loads((stack.home / "jobs" / job / "knowledge.json").read_text())
    assert knowledge["commit"] is not None and knowledge["recall_at_k"] is not None
    assert knowledge["questions"]["locate"] > 0
