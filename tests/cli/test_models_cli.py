"""`forgeflow models ...` as a user runs it: register, list, show, alias, rm; errors in one clean line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.cli import FORGEFLOW, assert_one_clean_line, run


@pytest.fixture
def gguf(tiny_gguf: Path, tmp_path: Path) -> Path:
    target = tmp_path / "tiny.gguf"
    shutil.copyfile(tiny_gguf, target)
    return target


def _ok(tmp_path: Path, *args: str) -> str:
    proc = run(tmp_path, "models", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_register_list_alias_rollback_and_remove(tmp_path: Path, gguf: Path) -> None:
    first = json.loads(_ok(tmp_path, "register", "tiny.gguf", "--name", "demo", "--json"))
    assert (first["key"], first["aliases"], first["task"]) == ("demo:1.0.0", ["latest"], "text-generation")
    assert "registered demo:1.1.0" in _ok(tmp_path, "register", "tiny.gguf", "--name", "demo")
    listed = _ok(tmp_path, "list")
    assert "demo:1.1.0" in listed and "demo:1.0.0" in listed and "2 versions" in listed
    assert "champion: → 1.1.0 (new)" in _ok(tmp_path, "alias", "demo", "champion", "1.1.0")
    assert "champion: 1.1.0 → 1.0.0" in _ok(tmp_path, "alias", "demo", "champion", "1.0.0")
    shown = json.loads(_ok(tmp_path, "show", "demo:champion", "--json"))
    assert (shown["version"], shown["aliases"]) == ("1.0.0", ["champion"])
    assert "demo:1.0.0" in _ok(tmp_path, "show", "demo:champion")
    assert "removed demo:champion" in _ok(tmp_path, "alias", "demo", "champion", "--remove")
    assert "deleted demo:1.1.0" in _ok(tmp_path, "rm", "demo:1.1.0", "--yes")
    assert "deleted demo:1.0.0" in _ok(tmp_path, "rm", "demo", "--yes")
    page = json.loads(_ok(tmp_path, "list", "--json"))
    assert (page["models"], page["total"]) == ([], 0)


def test_list_filters_and_pages_as_json(tmp_path: Path, gguf: Path) -> None:
    _ok(tmp_path, "register", "tiny.gguf", "--name", "chat")
    _ok(tmp_path, "register", "tiny.gguf", "--name", "embed", "--task", "text-embedding", "--device", "cuda")
    page = json.loads(_ok(tmp_path, "list", "--task", "text-embedding", "--json"))
    assert [m["key"] for m in page["models"]] == ["embed:1.0.0"]
    page = json.loads(_ok(tmp_path, "list", "--limit", "1", "--page", "2", "--json"))
    assert ([m["key"] for m in page["models"]], page["total"], page["pages"]) == (["embed:1.0.0"], 2, 2)
    assert json.loads(_ok(tmp_path, "list", "--device", "cpu", "--json"))["total"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "nope"], "model 'nope' not found"),
        (["register", "bad.gguf"], "not a valid GGUF"),
        (["register", "/etc/hostname"], "outside the allowed roots"),
        (["register", "tiny.gguf", "--name", "demo", "--version", "1.0"], "invalid version '1.0'"),
        (["alias", "demo", "latest", "1.0.0"], "'latest' always follows the newest registration"),
        (["alias", "demo", "champion"], "give the VERSION"),
        (["rm", "demo:2.0.0", "--yes"], "model 'demo:2.0.0' not found"),
        (["list", "--limit", "500"], "limit must be 1 to 100"),
    ],
)
def test_bad_input_is_one_clean_line_and_exit_2(
    tmp_path: Path, gguf: Path, args: list[str], message: str
) -> None:
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf at all, just some bytes")
    proc = run(tmp_path, "models", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr, proc.stderr
    assert_one_clean_line(proc, args)


def test_rm_without_yes_asks_and_keeps_the_model_when_refused(tmp_path: Path, gguf: Path) -> None:
    _ok(tmp_path, "register", "tiny.gguf", "--name", "demo")
    env = {**os.environ, "FORGEFLOW_HOME": str(tmp_path / "ws")}
    proc = subprocess.run(
        [FORGEFLOW, "models", "rm", "demo"],
        input="n\n",
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 1 and "delete demo:1.0.0?" in proc.stderr
    assert "demo:1.0.0" in _ok(tmp_path, "show", "demo")
