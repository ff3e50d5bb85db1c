"""The test tiers: what `make unit` may run, and a guard that keeps a unit run honest.

- unit (`make unit`): no Prefect server, no llama-server process, no training run; minutes.
- integration (`@pytest.mark.integration`, or a whole folder in `INTEGRATION_DIRS`): any of those,
  or a child process that imports the model stack (torch, transformers, Prefect: 5 to 15 s before
  it does anything): the installed `forgeflow` command run as a user runs it (tests/cli/), the GGUF
  converter, a fresh Python applying the training budget.
- slow (`@pytest.mark.slow`): the real SmolLM2, DVC in a fresh clone, a wheel install.

`make test` (CI) runs all three. `make unit` sets FORGEFLOW_TEST_TIER=unit, and then starting a
llama-server, a Prefect server or a training run in the test process fails the test that did it,
saying which marker it needs, so a slow test cannot creep into the fast tier unnoticed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

TIER_ENV = "FORGEFLOW_TEST_TIER"
TESTS = Path(__file__).resolve().parents[1]
# every test in these folders runs the embedded stack, a Prefect server, or `forgeflow` as a child process
INTEGRATION_DIRS = ("jobs", "flows", "cli")


class NeedsIntegrationTier(Exception):
    """A test of the unit tier started something only the integration tier may start."""


def unit_run() -> bool:
    return os.environ.get(TIER_ENV) == "unit"


def mark_folders(items: list[pytest.Item]) -> None:
    """Mark every test in `INTEGRATION_DIRS` as integration."""
    for item in items:
        parts = Path(str(item.path)).resolve().relative_to(TESTS).parts
        if parts and parts[0] in INTEGRATION_DIRS:
            item.add_marker(pytest.mark.integration)


def refuse(what: str) -> Callable[..., Any]:
    def refused(*_: Any, **__: Any) -> Any:
        raise NeedsIntegrationTier(
            f"this test {what}: mark it @pytest.mark.integration (make unit runs only the unit tier)"
        )

    return refused


def guard_unit_tier() -> None:
    """In a unit run, make the three expensive things fail loudly (in this process)."""
    from prefect.server.api.server import SubprocessASGIServer

    from core.serving.process import ServerProcess
    from tasks.finetune.trainer import ForgeflowTrainer

    ServerProcess.spawn = refuse("starts a llama-server process")  # type: ignore[method-assign]
    SubprocessASGIServer.start = refuse("starts a Prefect server")  # type: ignore[method-assign]
    ForgeflowTrainer.train = refuse("runs a training run")  # type: ignore[method-assign]
