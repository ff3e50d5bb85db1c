"""Reading a dataset directory (train.jsonl, eval.jsonl) the same way in every stage that scores on it.

Evaluation and export's parity check both read the eval split through `load_eval_set`: one reader,
one error wording, one sample order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from core.chat_template import Message
from core.errors import InputError
from core.paths import display
from core.schemas import Sample, Split, sample_lines

EVAL_FILE = "eval.jsonl"


@dataclass(frozen=True, slots=True)
class EvalSet:
    samples: list[Sample]  # the split's samples, in a deterministic order independent of the file's
    sha256: str  # of eval.jsonl's bytes

    def conversations(self) -> list[list[Message]]:
        return [[m.model_dump() for m in s.messages] for s in self.samples]


def load_eval_set(data_dir: Path) -> EvalSet:
    """The eval split of a dataset directory, ordered by content hash (a stable, file-order-free mix).

    Raises:
        InputError: eval.jsonl is missing, unreadable, holds an invalid line, or no eval sample.
    """
    return load_split(data_dir, "eval")


def load_split(data_dir: Path, split: Split) -> EvalSet:
    """One split (`<split>.jsonl`, its samples of that split) in content-hash order; see `load_eval_set`.

    Raises:
        InputError: the file is missing, unreadable, holds an invalid line, or no sample of `split`.
    """
    name = f"{split}.jsonl"
    path, shown = data_dir / name, display(data_dir)
    if not path.is_file():
        raise InputError(f"dataset '{shown}' has no {name}: run the extract step first")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {name} of '{shown}': {exc.strerror or exc}") from None
    samples = []
    for number, sample in sample_lines(data):
        if isinstance(sample, ValidationError):
            first = sample.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            detail = f"{where}: {first['msg']}" if where else str(first["msg"])
            raise InputError(
                f"{name} line {number} of '{shown}' is not a sample ({detail}): run the validate step"
            ) from None
        if sample.meta.split == split:
            samples.append(sample)
    if not samples:
        hint = "extract with eval_fraction > 0" if split == "eval" else "extract it again"
        raise InputError(f"the {split} split of '{shown}' is empty: {hint}")
    samples.sort(key=lambda s: hashlib.sha256(s.model_dump_json().encode()).digest())
    return EvalSet(samples, hashlib.sha256(data).hexdigest())
