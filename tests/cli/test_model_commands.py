"""`forgeflow finetune | evaluate | export` as a user runs them: bad input is one clean line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.cli import assert_one_clean_line, run


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    row = {"messages": [{"role": "user", "content": "Where?"}, {"role": "assistant", "content": "Here."}]}
    (data / "train.jsonl").write_text(json.dumps(row) + "\n")
    return data


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["finetune", "--data", "data", "--method", "qlora"], "qlora' needs a CUDA GPU"),
        (["finetune", "--data", "data", "--profile", "nope"], "unknown training profile 'nope'"),
        (["finetune", "--data", "data", "--method", "sgd"], "training profile cpu-quick.yaml is invalid"),
        (["finetune", "--data", "missing"], "has no train.jsonl"),
        (
            ["finetune", "--data", "data", "--base-model", "no/such-model"],
            "base model 'no/such-model' not found",
        ),
        (["evaluate", "--model", "data", "--data", "data"], "not a finetune output"),
        (["export", "--model", "data", "--out", "out"], "data"),
    ],
)
def test_model_commands_refuse_bad_input_in_one_line(
    tmp_path: Path, dataset: Path, args: list[str], message: str
) -> None:
    proc = run(tmp_path, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr, proc.stderr
    assert_one_clean_line(proc, args)
    assert not (tmp_path / "out").exists() and not (tmp_path / ".forgeflow").exists()
