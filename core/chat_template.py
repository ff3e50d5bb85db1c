"""The one place that knows the chat template: rendering, and which tokens are the assistant's.

Training computes loss on assistant tokens only; export, Ollama's Modelfile and serving must render
exactly what training rendered. Everything goes through the base tokenizer's own chat template.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import InputError

IGNORE_INDEX = -100  # label value the loss skips (PyTorch's cross-entropy default)
Message = dict[str, str]


@dataclass(frozen=True, slots=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX except on assistant tokens

    @property
    def assistant_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def render(tokenizer: Any, messages: Sequence[Message], *, generation_prompt: bool = False) -> str:
    """The conversation as text, exactly as the model sees it."""
    if not getattr(tokenizer, "chat_template", None):
        raise InputError("the base model's tokenizer has no chat template: use an instruct/chat model")
    return str(
        tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)
    )


def encode(tokenizer: Any, messages: Sequence[Message], max_length: int | None = None) -> Encoded:
    """Token ids and labels: each assistant turn (with its end-of-turn token) is learned, nothing else.

    Assistant spans are found by rendering growing prefixes of the conversation, which works for
    any template whose rendering of a prefix is a prefix of the whole (ChatML, Llama 3, ...).
    """
    ids = _ids(tokenizer, messages, generation_prompt=False)
    labels = [IGNORE_INDEX] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_ids(tokenizer, messages[:i], generation_prompt=True))
        upto = _ids(tokenizer, messages[: i + 1], generation_prompt=False)
        end = len(upto)
        if ids[:end] != upto or start > end:
            raise InputError("this chat template is not prefix-stable: assistant tokens cannot be located")
        labels[start:end] = ids[start:end]
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return Encoded(ids, labels)


def _ids(tokenizer: Any, messages: Sequence[Message], *, generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(
        list(messages), tokenize=True, add_generation_prompt=generation_prompt
    )
    if hasattr(out, "keys"):  # transformers 5 returns a BatchEncoding
        out = out["input_ids"]
    return list(out)
