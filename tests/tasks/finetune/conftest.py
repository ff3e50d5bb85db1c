"""A tiny base model and a small dataset, built once per session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# Short, repetitive samples: a tiny random model can visibly learn them in a few steps.
_FACTS = [
    ("Where is `load_profile` defined?", "`load_profile` is defined in tasks/finetune.py."),
    ("Where is `encode_split` defined?", "`encode_split` is defined in tasks/finetune.py."),
    ("Where is `select_backend` defined?", "`select_backend` is defined in tasks/training.py."),
    ("Where is `materialize` defined?", "`materialize` is defined in core/base_models.py."),
    ("Where is `render` defined?", "`render` is defined in core/chat_template.py."),
    ("Where is `read_run` defined?", "`read_run` is defined in core/trained.py."),
    ("What does `write_json` do?", "It writes JSON to a temp file and renames it into place."),
    ("What does `complete_checkpoints` do?", "It lists checkpoint directories, oldest first."),
]


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for split, facts in (("train", _FACTS * 2), ("eval", _FACTS[:2])):
        lines = [
            json.dumps(
                {
                    "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                    "meta": {"task": "locate", "source_path": f"f{i}.py", "split": split},
                }
            )
            for i, (q, a) in enumerate(facts)
        ]
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    (root / "stats.json").write_text(json.dumps({"commit": "a" * 40}))
    return root
