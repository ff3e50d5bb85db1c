"""Dataset and report schemas shared by tasks, flows and the API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

TaskName = Literal[
    "explain",  # explain a function/class: answer is its docstring or doc comment
    "docstring",  # write the docstring for given code: answer is the docstring
    "implement",  # implement from signature (+ docstring): answer is the code
    "locate",  # where is X defined: answer is path and line
    "summarize_module",  # summarize a module: answer is the module docstring
    "doc_qa",  # answer from a doc section: answer is the section text
    "commit",  # describe a commit's change from its diff: answer is the commit message
]
Role = Literal["system", "user", "assistant"]
Split = Literal["train", "eval"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Message(Strict):
    role: Role
    content: str = Field(min_length=1)


class SampleMeta(Strict):
    task: TaskName
    source_path: str = Field(min_length=1)
    lines: tuple[int, int] = Field(description="1-based inclusive line range in source_path")
    commit: str = Field(min_length=7, max_length=64)
    lang: str
    split: Split
    context: Literal["oracle", "distractors"] | None = Field(
        None, description="retrieved repo context in the system message: with the answer's chunk, or without"
    )


class Sample(Strict):
    """One training example: OpenAI chat messages plus where it came from."""

    messages: list[Message] = Field(min_length=2, max_length=3)
    meta: SampleMeta


def sample_lines(data: bytes) -> Iterator[tuple[int, Sample | ValidationError]]:
    """(1-based line number, parsed Sample or why it is not one) for each non-blank JSONL line."""
    # b"\n" only: str.splitlines would also break on U+2028 inside JSON strings
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            yield number, Sample.model_validate_json(raw)
        except ValidationError as exc:
            yield number, exc
