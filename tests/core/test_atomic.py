"""Atomic writes: a failure mid-write leaves the old file intact and no temp file behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import atomic


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "train.jsonl"
    atomic.write_jsonl(target, [{"a": 1}])

    def rows():
        yield {"a": 2}
        raise RuntimeError("disk went away")

    with pytest.raises(RuntimeError):
        atomic.write_jsonl(target, rows())
    assert [json.loads(x) for x in target.read_text().splitlines()] == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["train.jsonl"]


def test_write_json_is_sorted_and_complete(tmp_path: Path) -> None:
    atomic.write_json(tmp_path / "deep" / "stats.json", {"b": 1, "a": [1, 2]})
    text = (tmp_path / "deep" / "stats.json").read_text()
    assert text.index('"a"') < text.index('"b"') and text.endswith("\n")
