"""A benchmark run's parameters and every check made on them before a run exists.

The API checks a `POST /benchmarks/run` with `prepare` before it creates the flow run, and the
stage checks again when it runs: an unknown suite or model is a 404, a remote server not named
explicitly a 403, a bad value a 400, and none of them leaves a run behind.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from core.bench.suites import Suite, conversations, load_suite, with_overrides
from core.errors import InputError
from core.registry import Registry
from core.registry.errors import ModelNotFound
from core.registry.sources import EMBEDDED
from core.settings import Settings

FLOW = "benchmark"  # the benchmark flow, and its one deployment (served by `forgeflow runner`)
DEPLOYMENT = "benchmark"
DEPLOYMENT_PATH = f"{FLOW}/{DEPLOYMENT}"
TAG = "forgeflow-benchmark"
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
ModelRef = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$")]


class BenchParams(BaseModel):
    """What one run measures; every field but `models` has a default from settings or the suite."""

    model_config = ConfigDict(extra="forbid")

    models: list[ModelRef] = Field(min_length=1, max_length=16)
    suite: str | None = Field(None, max_length=64)
    base_url: str | None = Field(None, max_length=2048, description="an OpenAI-compatible server; None: ours")
    allow_remote: bool = False  # a non-loopback base_url must be named explicitly
    concurrency: list[Annotated[int, Field(ge=1, le=256)]] | None = Field(None, min_length=1, max_length=16)
    requests: int | None = Field(None, ge=1, le=100_000)
    max_tokens: int | None = Field(None, ge=1, le=32_768)
    temperature: float | None = Field(None, ge=0, le=2)
    rate: float | None = Field(None, gt=0, le=10_000)
    warmup: int | None = Field(None, ge=0, le=100)
    request_timeout_s: float | None = Field(None, gt=0, le=3600)
    scenarios: list[str] | None = Field(None, min_length=1, max_length=64)
    dataset: str | None = Field(None, min_length=1, max_length=1024, description="for suites drawing on eval")
    ignore_eos: bool = True
    source: Literal["api", "cli", "retrain"] = "cli"


class RemoteNotAllowed(InputError, status=403, code="REMOTE_NOT_ALLOWED"):
    """A benchmark against a non-loopback server that was not explicitly allowed."""


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(url: str, allow_remote: bool) -> str:
    """`url` without a trailing slash or `/v1`: loopback only, unless `allow_remote`.

    Raises:
        InputError: not an http(s) URL.
        RemoteNotAllowed: a non-loopback host not explicitly allowed.
    """
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise InputError(f"base URL '{url[:200]}' has an invalid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise InputError(f"base URL '{url[:200]}' is not an http(s) URL: use e.g. http://127.0.0.1:8080")
    if parts.username is not None or parts.password is not None:
        raise InputError("the base URL holds credentials: leave them out")
    if not allow_remote and not is_loopback(parts.hostname):
        raise RemoteNotAllowed(
            f"'{parts.hostname}' is not a loopback address: a benchmark loads the server it measures, so "
            "name a remote one explicitly (--allow-remote, or allow_remote: true)"
        )
    base = url.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def resolve_models(refs: list[str], settings: Settings) -> list[str]:
    """Registry refs → `name:version` keys (the embedded defaults register on first use).

    Raises:
        ModelNotFound: a ref the registry does not know.
        InputError: a model that is not a text-generation model.
    """
    keys = []
    with Registry.from_settings(settings) as registry:
        for ref in refs:
            info = registry.find(ref)
            if info is None and ref in EMBEDDED:
                info = registry.ensure_embedded(ref)
            if info is None:
                raise ModelNotFound(f"no model '{ref}' in the registry: see `forgeflow models list`")
            if info.task != "text-generation":
                raise InputError(f"'{ref}' is a {info.task} model: benchmarks measure text generation")
            keys.append(info.key)
    return keys


def prepare(params: BenchParams, settings: Settings) -> tuple[Suite, list[str]]:
    """The suite with the run's overrides, and the model names to send; every check before a run.

    Raises:
        InputError (400), SuiteNotFound / ModelNotFound (404), RemoteNotAllowed (403),
        PathNotAllowed (403, a dataset outside the allowed roots).
    """
    suite = with_overrides(
        load_suite(params.suite or settings.bench.suite),
        concurrency=params.concurrency,
        requests=params.requests,
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        rate=params.rate,
        warmup=params.warmup,
        scenarios=params.scenarios,
    )
    if params.base_url is not None:
        check_base_url(params.base_url, params.allow_remote)
        models = list(params.models)
    else:
        models = resolve_models(params.models, settings)
    if suite.needs_dataset:
        if params.dataset is None:
            raise InputError(f"suite '{suite.name}' asks a dataset's eval questions: pass a dataset (--data)")
        dataset = _allowed(Path(params.dataset), settings)
        for scenario in suite.scenarios:
            conversations(scenario, dataset)  # the split is readable and has questions
    return suite, models


def _allowed(path: Path, settings: Settings) -> Path:
    from core.errors import PathNotAllowed

    resolved = path.expanduser().resolve()
    if not any(resolved.is_relative_to(r.expanduser().resolve()) for r in settings.allowed_roots):
        raise PathNotAllowed(f"dataset '{path}' is outside the allowed roots (allowed_roots)")
    if not resolved.is_dir():
        raise DatasetNotFound(f"dataset '{path}' does not exist")
    return resolved


class DatasetNotFound(InputError, status=404, code="NOT_FOUND"):
    """The dataset a suite needs does not exist."""
