"""One real stack for the control-plane tests: `forgeflow up` (Prefect server, runner, API) in a temp dir.

Jobs train a tiny model (built from a config, with SmolLM2's tokenizer) on a small dataset, so a
whole retrain (train → evaluate → export f16 → parity → promote → deploy) takes seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.datasets import EVAL, NAMES, conversation, write_dataset
from tests.helpers.stack import Stack, running_stack


@pytest.fixture(scope="session")
def jobs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jobs")


@pytest.fixture(scope="session")
def job_base(reciting_base: Path) -> Path:
    """The session's tiny base that recites the eval answers (clear top-1 winners for parity)."""
    return reciting_base


@pytest.fixture(scope="session")
def job_dataset(jobs_root: Path) -> Path:
    return write_dataset(jobs_root / "dataset", {"train": [conversation(n) for n in NAMES], "eval": EVAL})


@pytest.fixture(scope="session")
def stack(jobs_root: Path, job_base: Path) -> Iterator[Stack]:
    extra = {
        "base_model": str(job_base),
        "validation": {"min_samples": 5},
        # repo knowledge: enough explain questions for the gate to tell models apart, answers whole
        "evaluate": {
            "generation_samples": 2,
            "max_new_tokens": 8,
            "knowledge_questions": 4,
            "knowledge_max_tokens": 24,
        },  # fmt: skip
    }
    with running_stack(jobs_root, extra) as stack:
        yield stack


def fine_tune(stack: Stack, dataset: Path, key: str | None = None, **params: Any) -> httpx.Response:
    body = {"dataset": str(dataset), "max_steps": 6, "rank": 4, "learning_rate": 5e-3, **params}
    headers = {"Idempotency-Key": key} if key else {}
    return httpx.post(f"{stack.api}/v1/fine-tune", json=body, headers=headers, timeout=60)
