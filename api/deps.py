"""Dependency aliases the routes declare (`HubDep`, `RegistryDep`, ...): one place builds each."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from api.grounding import Retriever
from api.telemetry import Metrics, StatsBook
from core.registry import Registry
from core.reports import MonitorReport
from core.serving.hub import Hub
from core.settings import Settings


@dataclass
class AppState:
    settings: Settings
    registry: Registry
    hub: Hub
    metrics: Metrics
    stats: StatsBook
    # the monitor's decision for a repo spec: a stage function the CLI passes in (api/ imports core only)
    monitor: Callable[[str, Settings], MonitorReport] | None = None
    # grounded answers: the repo indexes, refreshed with a stage function the CLI passes in
    retriever: Retriever = field(default_factory=Retriever)
    started: float = field(default_factory=time.monotonic)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.forgeflow
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_hub(request: Request) -> Hub:
    return get_state(request).hub


def get_registry(request: Request) -> Registry:
    return get_state(request).registry


HubDep = Annotated[Hub, Depends(get_hub)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
