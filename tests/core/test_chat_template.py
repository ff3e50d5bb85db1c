"""Assistant-only labels with the real SmolLM2 tokenizer and chat template."""

from __future__ import annotations

import pytest

from core.base_models import load_tokenizer
from core.chat_template import IGNORE_INDEX, encode, render


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return load_tokenizer("smollm2-135m", tmp_path_factory.mktemp("tok"))


def test_only_assistant_tokens_are_learned(tokenizer) -> None:
    messages = [
        {"role": "user", "content": "Where is `parse` defined?"},
        {"role": "assistant", "content": "`parse` is defined in `pkg/parser.py` at line 12."},
    ]
    enc = encode(tokenizer, messages)
    learned = [t for t in enc.labels if t != IGNORE_INDEX]
    assert tokenizer.decode(learned).strip() == "`parse` is defined in `pkg/parser.py` at line 12.<|im_end|>"
    assert len(enc.input_ids) == len(enc.labels)
    assert tokenizer.decode(enc.input_ids).startswith(render(tokenizer, messages)[:20])


def test_every_assistant_turn_is_learned_and_the_user_never(tokenizer) -> None:
    messages = [
        {"role": "system", "content": "You know this repository."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
        {"role": "assistant", "content": "second answer"},
    ]
    learned = tokenizer.decode([t for t in encode(tokenizer, messages).labels if t != IGNORE_INDEX])
    assert "first answer" in learned and "second answer" in learned
    assert "question" not in learned and "repository" not in learned


def test_truncation_keeps_ids_and_labels_aligned(tokenizer) -> None:
    messages = [{"role": "user", "content": "q " * 50}, {"role": "assistant", "content": "a " * 50}]
    enc = encode(tokenizer, messages, max_length=40)
    assert len(enc.input_ids) == len(enc.labels) == 40 and enc.assistant_tokens == 0
