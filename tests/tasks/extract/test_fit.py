"""Fitting samples to the token budget with the real SmolLM2 tokenizer: what is cut, where, what dropped."""

from __future__ import annotations

import copy
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from core.base_models import load_tokenizer
from core.budget import TokenBudget
from core.config import ExtractConfig
from tasks.extract.cache import ResultCache
from tasks.extract.fit import cached_counter, fit_to_budget

CFG = ExtractConfig()
PARAGRAPHS = [
    f"Paragraph {i} explains how the scheduler orders jobs by priority, deadline and owner." for i in range(6)
]


@pytest.fixture(scope="module")
def tokenizer(cache_dir: Path) -> Any:
    return load_tokenizer("smollm2-135m", cache_dir)


def sample(task: str, answer: str, prompt: str = "Explain what `schedule` in `jobs/queue.py` does.") -> dict:
    return {
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
        "meta": {
            "task": task,
            "source_path": "jobs/queue.py",
            "lines": [1, 9],
            "commit": "a" * 40,
            "lang": "python",
        },
    }


def tokens(tokenizer: Any, s: dict) -> int:
    return TokenBudget(tokenizer, 1, 1_000_000).count([s["messages"]])[0]


def test_a_prose_answer_is_cut_after_the_last_paragraph_that_fits(tokenizer: Any) -> None:
    whole = sample("explain", "\n\n".join(PARAGRAPHS))
    untouched = copy.deepcopy(whole)
    three = sample("explain", "\n\n".join(PARAGRAPHS[:3]))
    budget = TokenBudget(tokenizer, 8, tokens(tokenizer, three))

    fitted = fit_to_budget([whole], budget, CFG)

    assert fitted.keep == [True] and fitted.cut == [0] and fitted.over == 0
    assert fitted.samples[0]["messages"][1]["content"] == "\n\n".join(PARAGRAPHS[:3])
    assert fitted.tokens == [tokens(tokenizer, three)]
    assert whole == untouched  # cached per-file results share their messages: never mutated


def test_samples_inside_the_budget_are_left_alone(tokenizer: Any) -> None:
    samples = [sample("explain", PARAGRAPHS[0]), sample("implement", "```python\nreturn 1\n```")]
    fitted = fit_to_budget(samples, TokenBudget(tokenizer, 8, 2048), CFG)
    assert fitted.samples == samples and fitted.keep == [True, True] and fitted.cut == []


def test_code_answers_are_dropped_not_cut(tokenizer: Any) -> None:
    code = "```python\n" + "\n\n".join(f"x{i} = compute({i})" for i in range(40)) + "\n```"
    budget = TokenBudget(tokenizer, 8, tokens(tokenizer, sample("implement", code)) - 1)
    fitted = fit_to_budget([sample("implement", code)], budget, CFG)
    assert fitted.keep == [False] and fitted.over == 1 and fitted.cut == []


def test_a_cut_never_ends_inside_a_code_fence(tokenizer: Any) -> None:
    answer = (
        "Orders the jobs by priority.\n\n```python\nqueue = []\n\nqueue.sort()\n```\n\nThen it runs them."
    )
    inside_fence = sample("explain", "Orders the jobs by priority.\n\n```python\nqueue = []")
    budget = TokenBudget(tokenizer, 8, tokens(tokenizer, inside_fence))
    fitted = fit_to_budget([sample("explain", answer)], budget, CFG)
    assert fitted.samples[0]["messages"][1]["content"] == "Orders the jobs by priority."


def test_a_cut_keeps_at_least_the_first_paragraph_or_drops_the_sample(tokenizer: Any) -> None:
    prompt = "Explain this.\n\n" + " ".join(["scheduler"] * 200)
    over = sample("explain", "\n\n".join(PARAGRAPHS), prompt=prompt)
    budget = TokenBudget(tokenizer, 8, tokens(tokenizer, sample("explain", "", prompt=prompt)))
    fitted = fit_to_budget([over], budget, CFG)
    assert fitted.keep == [False] and fitted.over == 1 and fitted.cut == []


def test_a_doc_section_is_not_cut_below_min_doc_section_chars(tokenizer: Any) -> None:
    short_first = ["Jobs.", *PARAGRAPHS]  # a cut to "Jobs." alone is under 80 characters
    budget = TokenBudget(tokenizer, 8, tokens(tokenizer, sample("doc_qa", "Jobs.")))
    fitted = fit_to_budget([sample("doc_qa", "\n\n".join(short_first))], budget, CFG)
    assert fitted.keep == [False] and fitted.over == 1


def test_samples_under_min_tokens_are_dropped_and_counted(tokenizer: Any) -> None:
    samples = [sample("locate", "`schedule` is defined in `jobs/queue.py` at line 1.")]
    fitted = fit_to_budget(samples, TokenBudget(tokenizer, 10_000, 20_000), CFG)
    assert fitted.keep == [False] and fitted.under == 1 and fitted.over == 0


def test_counts_are_remembered_per_tokenizer_and_conversation(
    tmp_path: Path, tokenizer: Any, cache_dir: Path
) -> None:
    samples = [sample("explain", p) for p in PARAGRAPHS]
    budget = TokenBudget(tokenizer, 8, 2048)
    cache = ResultCache(tmp_path / "extract.sqlite")
    counted = cached_counter(budget, cache)(samples)
    assert counted == budget.count([s["messages"] for s in samples])
    assert cached_counter(budget, cache)(samples) == counted  # now from the cache
    with sqlite3.connect(tmp_path / "extract.sqlite") as db:
        assert db.execute("SELECT count(*) FROM token_counts").fetchone() == (len(samples),)

    plain = load_tokenizer("smollm2-135m", cache_dir)
    plain.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    other = TokenBudget(plain, 8, 2048)  # another base model: its own counts, never the cached ones
    assert cached_counter(other, cache)(samples) == other.count([s["messages"] for s in samples]) != counted
    cache.close()
