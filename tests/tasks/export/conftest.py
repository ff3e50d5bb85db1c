"""Session fixtures: a tiny model that recites a few answers, a LoRA run on it, and one full export.

Everything is built once per session in temp dirs: the tokenizer conversion, the model, the f16
GGUF and its quants are the slow parts, and most tests only read them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import ExportConfig
from tasks.export.run import export_model
from tests.helpers.recital import CONVERSATIONS
from tests.helpers.tinymodel import make_tiny_run


@contextlib.contextmanager
def single_threaded_torch() -> Iterator[None]:
    """Torch on one thread inside the block, its own thread count again after it."""
    # The models are tiny; on a busy 2-core box, OpenMP threads spin-waiting on each other made
    # training steps 10 to 30 times slower than one thread.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with single_threaded_torch():
        yield


@pytest.fixture(scope="session")
def eval_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset directory whose eval.jsonl holds CONVERSATIONS."""
    data = tmp_path_factory.mktemp("dataset")
    meta = {"task": "explain", "source_path": "src/app.py", "lines": [1, 2], "commit": "abc1234"}
    meta |= {"lang": "python", "split": "eval"}
    lines = [json.dumps({"messages": m, "meta": meta}) for m in CONVERSATIONS]
    (data / "eval.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return data


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory: pytest.TempPathFactory, reciting_base: Path) -> Path:
    with single_threaded_torch():
        return make_tiny_run(tmp_path_factory.mktemp("runs") / "lora", reciting_base, "lora")


@pytest.fixture(scope="session")
def exported(
    tmp_path_factory: pytest.TempPathFactory, lora_run: Path, eval_data: Path, cache_dir: Path
) -> tuple[Path, dict]:
    """OUT dir and manifest of the LoRA run's export with the default ExportConfig (all quants)."""
    out = tmp_path_factory.mktemp("export")
    with single_threaded_torch():
        return out, export_model(lora_run, out, ExportConfig(), cache_dir, eval_data).model_dump()
