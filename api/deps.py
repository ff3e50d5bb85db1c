"""Dependency aliases the routes declare (`HubDep`, `RegistryDep`, ...): one place builds each."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from api.telemetry import Metrics, StatsBook
from core.registry import Registry
from core.serving.hub import Hub
from core.settings import Settings


@dataclass
class AppState:
    settings: Settings
    registry: Registry
    hub: Hub
    metrics: Metrics
    stats: StatsBook
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
