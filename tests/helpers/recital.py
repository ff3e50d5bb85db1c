"""The answers the tiny export model learns to recite, paired with the built-in parity prompts."""

from __future__ import annotations

from core.chat_template import Message
from tasks.export.parity import BUILTIN_PROMPTS

ANSWERS = (
    "def add(a, b):\n    return a + b",
    "It replays your commits on top of another branch, so the history stays linear.",
    'def test_slugify():\n    assert slugify("Hello World") == "hello-world"',
    "Use slicing: text[::-1] returns the reversed string.",
)
# The eval split's conversations are the built-in parity prompts with their answers, so parity sees
# the same (recited) prompts whether it reads the eval split or falls back to the built-ins.
CONVERSATIONS: list[list[Message]] = [
    [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    for q, a in zip(BUILTIN_PROMPTS, ANSWERS, strict=True)
]
