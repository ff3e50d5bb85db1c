"""The token budget with the real SmolLM2 tokenizer: counts as training renders them, bounds, origin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.base_models import load_tokenizer
from core.budget import TokenBudget, token_budget
from core.config import ValidateConfig
from core.errors import InputError
from core.settings import Settings

CONVERSATIONS = [
    [
        {"role": "user", "content": "Where is `parse` defined?"},
        {"role": "assistant", "content": "`parse` is defined in `pkg/parser.py` at line 12."},
    ],
    [
        {"role": "system", "content": "You know this repository."},
        {
            "role": "user",
            "content": "Explain what `restock` does.\n\n```python\nreturn max(0, target - level)\n```",
        },
        {"role": "assistant", "content": "Return how many units to order to bring level up to target."},
    ],
]
PLAIN_TEMPLATE = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"


@pytest.fixture(scope="module")
def tokenizer(cache_dir: Path) -> Any:
    return load_tokenizer("smollm2-135m", cache_dir)


def test_counts_are_the_chat_template_tokenization_in_one_batch(tokenizer: Any) -> None:
    budget = TokenBudget(tokenizer, 8, 2048)
    expected = [
        len(tokenizer.apply_chat_template(conv, tokenize=True, return_dict=True)["input_ids"])
        for conv in CONVERSATIONS
    ]
    assert budget.count(CONVERSATIONS) == expected
    assert budget.count([]) == []


def test_fits_includes_both_bounds(tokenizer: Any) -> None:
    budget = TokenBudget(tokenizer, 10, 20)
    assert [budget.fits(n) for n in (9, 10, 20, 21)] == [False, True, True, False]


def test_bounds_out_of_order_are_refused(tokenizer: Any) -> None:
    with pytest.raises(InputError, match="need 1 <= min <= max"):
        TokenBudget(tokenizer, 100, 10)


def test_a_tokenizer_without_a_chat_template_is_an_input_error(cache_dir: Path) -> None:
    bare = load_tokenizer("smollm2-135m", cache_dir)
    bare.chat_template = None
    with pytest.raises(InputError, match="no chat template"):
        TokenBudget(bare, 8, 2048).count(CONVERSATIONS)


def test_a_conversation_the_template_refuses_counts_zero_and_the_others_still_count(cache_dir: Path) -> None:
    strict = load_tokenizer("smollm2-135m", cache_dir)
    # like templates that take no system turn: one conversation fails, the batch falls back to one by one
    strict.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system turn') }}"
        "{% endif %}{{ m['content'] }}\n{% endfor %}"
    )
    counts = TokenBudget(strict, 8, 2048).count(CONVERSATIONS)
    assert counts[0] > 0 and counts[1] == 0


def test_token_budget_is_base_models_tokenizer_with_validations_bounds(
    tmp_path: Path, tokenizer: Any, cache_dir: Path
) -> None:
    base = tmp_path / "my-base"  # a new base model with its own chat template: no system prompt added
    own = load_tokenizer("smollm2-135m", cache_dir)
    own.chat_template = PLAIN_TEMPLATE
    own.save_pretrained(str(base))
    settings = Settings(
        home=tmp_path / "ws", base_model=str(base), validation=ValidateConfig(min_tokens=4, max_tokens=512)
    )
    budget = token_budget(settings)

    assert (budget.min_tokens, budget.max_tokens) == (4, 512)
    plain = [
        len(tokenizer("".join(m["content"] + "\n" for m in conv))["input_ids"]) for conv in CONVERSATIONS
    ]
    assert budget.count(CONVERSATIONS) == plain
    assert plain != TokenBudget(tokenizer, 4, 512).count(
        CONVERSATIONS
    )  # SmolLM2's template adds a system turn


def test_an_unknown_base_model_is_an_input_error_naming_it(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "ws", base_model="no-such-model")
    with pytest.raises(InputError, match="base model 'no-such-model' not found"):
        token_budget(settings)
