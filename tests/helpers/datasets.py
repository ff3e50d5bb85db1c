"""The small "where is X defined?" dataset the flow and control-plane tests train on, and its writer."""

from __future__ import annotations

import json
from pathlib import Path

Conversation = list[dict[str, str]]

NAMES = [
    "load",
    "save",
    "parse",
    "render",
    "merge",
    "split",
    "count",
    "check",
    "build",
    "write",
    "read",
    "scan",
]

EVAL: list[Conversation] = [
    [
        {"role": "user", "content": "What does the inventory module compute?"},
        {"role": "assistant", "content": "It sums the quantity of every item in a bucket."},
    ],
    [
        {"role": "user", "content": "Which file defines the command line?"},
        {"role": "assistant", "content": "cli/main.py builds the typer app."},
    ],
]


def conversation(name: str) -> Conversation:
    """A train conversation locating `<name>_config`."""
    return [
        {"role": "user", "content": f"Where is `{name}_config` defined?"},
        {"role": "assistant", "content": f"`{name}_config` is defined in core/{name}.py."},
    ]


def write_dataset(
    target: Path,
    splits: dict[str, list[Conversation]],
    *,
    task: str = "locate",
    commit: str = "a" * 40,
    lines: tuple[int, int] = (1, 3),
    source_path: str = "{split}/m{i}.py",
    stats: bool = True,
) -> Path:
    """Write `<split>.jsonl` per split (and `stats.json` naming the commit) into a new `target`."""
    target.mkdir()
    for split, conversations in splits.items():
        rows = [
            {
                "messages": messages,
                "meta": {
                    "task": task,
                    "source_path": source_path.format(split=split, i=i),
                    "lines": list(lines),
                    "commit": commit,
                    "lang": "python",
                    "split": split,
                },
            }
            for i, messages in enumerate(conversations)
        ]
        (target / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if stats:
        (target / "stats.json").write_text(json.dumps({"commit": commit}))
    return target
