"""Benchmark suites: `configs/benchmarks/<name>.yaml`, scenarios of prompts and load, checked strictly.

A suite is a list of scenarios (prompts, `max_tokens`, temperature, requests per concurrency level,
concurrency levels, an optional Poisson rate) and the run's warm-up and bounds. A suite whose
scenario says `source: eval` draws its prompts from a dataset's eval split instead (the `repo`
suite): a base model and its tuned version are then compared on the project's own questions.

Suite names are checked against a pattern before they are looked up, so a name never becomes a
path; unknown keys are refused at every level.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.dataset import load_eval_set
from core.errors import InputError
from core.settings import config_file, config_names

SUITES = "benchmarks"
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
Level = Annotated[int, Field(ge=1, le=256)]


class SuiteNotFound(InputError, status=404, code="SUITE_NOT_FOUND"):
    """No suite of that name in configs/benchmarks/."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Scenario(_Strict):
    """One kind of request and the load it is sent at."""

    name: str = Field(pattern=NAME.pattern)
    description: str = ""
    source: Literal["prompts", "eval"] = Field("prompts", description="eval: the dataset's eval questions")
    system: str | None = None
    prompts: list[Annotated[str, Field(min_length=1, max_length=200_000)]] = Field(default_factory=list)
    max_tokens: int = Field(64, ge=1, le=32_768)
    temperature: float = Field(0.0, ge=0, le=2)  # sent as given: 0 stays 0 (greedy)
    requests: int = Field(16, ge=1, le=100_000, description="measured requests per concurrency level")
    concurrency: list[Level] = Field(default_factory=lambda: [1], min_length=1, max_length=16)
    rate: float | None = Field(
        None, gt=0, le=10_000, description="Poisson arrivals per second; None: closed loop"
    )
    samples: int = Field(16, ge=1, le=10_000, description="eval questions drawn (source: eval)")

    @model_validator(mode="after")
    def _has_prompts(self) -> Scenario:
        if self.source == "prompts" and not self.prompts:
            raise ValueError(f"scenario '{self.name}' has no prompts (or set source: eval)")
        return self


class Suite(_Strict):
    """A named list of scenarios with the run's warm-up and bounds."""

    name: str = Field(pattern=NAME.pattern)
    description: str = ""
    warmup: int = Field(2, ge=0, le=100, description="requests per model sent first and not measured")
    scenarios: list[Scenario] = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _unique(self) -> Suite:
        names = [s.name for s in self.scenarios]
        if len(set(names)) != len(names):
            raise ValueError("scenario names must be unique")
        return self

    @property
    def needs_dataset(self) -> bool:
        return any(s.source == "eval" for s in self.scenarios)


def suite_names() -> list[str]:
    """The suites configs/benchmarks/ knows (the project's own first, then the shipped ones)."""
    return [n for n in config_names(SUITES) if NAME.match(n)]


def load_suite(name: str) -> Suite:
    """The suite `name` from configs/benchmarks/.

    Raises:
        InputError: the name is not a suite name (letters, digits, `-`, `_`), or the file is invalid.
        SuiteNotFound: no such suite.
    """
    if not NAME.match(name):
        raise InputError(f"'{name[:80]}' is not a suite name: use lowercase letters, digits, '-' and '_'")
    path = config_file(f"{SUITES}/{name}.yaml")
    if path is None:
        raise SuiteNotFound(f"unknown benchmark suite '{name}'; known: {', '.join(suite_names()) or 'none'}")
    return parse_suite(name, path)


def parse_suite(name: str, path: Path) -> Suite:
    """Validate one suite file; the file's stem is its name."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise InputError(f"benchmark suite '{name}' is not a mapping")
        return Suite.model_validate({"name": name, **data})
    except yaml.YAMLError as exc:
        raise InputError(f"benchmark suite '{name}' is not valid YAML: {str(exc).splitlines()[0]}") from None
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"benchmark suite '{name}' is invalid: {where}: {first['msg']}") from None


def with_overrides(
    suite: Suite,
    *,
    concurrency: list[int] | None = None,
    requests: int | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    rate: float | None = None,
    warmup: int | None = None,
    scenarios: list[str] | None = None,
) -> Suite:
    """The suite with a run's overrides applied to every scenario (validated like the file)."""
    chosen = suite.scenarios
    if scenarios:
        unknown = sorted(set(scenarios) - {s.name for s in chosen})
        if unknown:
            raise InputError(f"suite '{suite.name}' has no scenario {', '.join(unknown)}")
        chosen = [s for s in chosen if s.name in scenarios]
    update = {
        k: v
        for k, v in {
            "concurrency": concurrency,
            "requests": requests,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "rate": rate,
        }.items()
        if v is not None
    }
    data = suite.model_dump()
    data["scenarios"] = [{**s.model_dump(), **update} for s in chosen]
    if warmup is not None:
        data["warmup"] = warmup
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"][-2:])
        raise InputError(f"benchmark config is invalid: {where}: {first['msg']}") from None


def conversations(scenario: Scenario, dataset: Path | None) -> list[list[dict[str, str]]]:
    """The chats one scenario sends, in order (requests cycle through them).

    Raises:
        InputError: `source: eval` without a dataset, or a dataset without an eval split.
    """
    system = [{"role": "system", "content": scenario.system}] if scenario.system else []
    if scenario.source == "prompts":
        return [[*system, {"role": "user", "content": p}] for p in scenario.prompts]
    if dataset is None:
        raise InputError(f"scenario '{scenario.name}' asks the eval split's questions: pass a dataset")
    chats = []
    for conversation in load_eval_set(dataset).conversations()[: scenario.samples]:
        # the question: every turn up to (not including) the reference answer
        upto = max(
            (i for i, m in enumerate(conversation) if m["role"] == "assistant"), default=len(conversation)
        )
        turns = [{"role": m["role"], "content": m["content"]} for m in conversation[:upto]]
        if turns and not any(m["role"] == "system" for m in turns):
            turns = [*system, *turns]
        if turns:
            chats.append(turns)
    if not chats:
        raise InputError(f"the eval split of the dataset has no questions for scenario '{scenario.name}'")
    return chats
