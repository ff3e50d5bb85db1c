"""The OpenAPI document tells the truth: schemathesis sends what it allows and what it forbids.

Every operation gets schemathesis's coverage phase (each constraint's boundaries, both sides) and a
few fuzzed cases, against the real API serving the tiny GGUF, with every built-in check: no 5xx,
schema-valid requests accepted, invalid ones refused, replies, statuses and headers as declared.

Only one refusal is let through: a valid request the model cannot serve (an embedding asked of a
chat model, a prompt longer than its context), which depends on the model and no schema can state.
Generations are capped at a few tokens, so the run takes a minute or two on two cores.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.errors import FailureGroup
from schemathesis.openapi.checks import RejectedPositiveData

from api.app import create_app
from api.schemas.requests import MAX_TOKENS as TOKEN_BOUND
from tests.helpers.api_server import api_settings, running_api, tiny_workspace

pytestmark = pytest.mark.integration  # a llama-server process (see tests/helpers/tiers.py)

# what a fuzzed registry command may change: it runs last, after the reads and the inference
REGISTRY_COMMANDS = {
    ("POST", "/models"),
    ("DELETE", "/models/{ref}"),
    ("POST", "/models/{name}/aliases"),
    ("DELETE", "/models/{name}/aliases/{alias}"),
    ("POST", "/models/{name}/rollback"),
    ("POST", "/models/{name}/deploy"),
    ("DELETE", "/models/{name}/deploy"),
}
JOB_ROUTES = {
    "/v1/fine-tune",
    "/status/{job_id}",
    "/jobs",
    "/deploy/{job_id}",
    "/validate/{job_id}",
    "/v1/retrain",
    "/v1/retrain/monitor",
    "/v1/retrain/{job_id}/pause",
    "/v1/retrain/{job_id}/resume",
    "/v1/retrain/{job_id}/cancel",
    # benchmark runs are flow runs too: tests/jobs/test_benchmarks.py drives them on the real stack
    "/benchmarks/run",
    "/benchmarks/runs/{run_id}/logs",
}
GENERATING = {"/v1/chat/completions", "/v1/completions", "/v1/query", "/infer/{model_name}"}
LONE = "\ud800"  # a lone surrogate: JSON can spell it, UTF-8 cannot carry it
SHORT = 4  # per generation: schema-valid either way, and a long one costs seconds on the tiny model
# valid requests the model, not the schema, refuses (llama.cpp and the embedder word them so)
MODEL_REFUSALS = re.compile(
    r"is a text-(generation|embedding) model|one prompt per request for a text-generation model"
    r"|context (length|size)"
)
CONFIG = {
    "seed": 20250101,  # the same cases every run: a failure here is a change, not luck
    "generation": {"max-examples": 8, "database": "none"},  # none: no .hypothesis/ in the checkout
    "phases": {"stateful": {"enabled": False}},
    "request-timeout": 60,
    "output": {"sanitization": {"enabled": False}},  # `max_tokens` looks like a secret's name to it
}


@pytest.fixture(scope="module")
def conformance_root(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path) -> Path:
    """A workspace of its own (the fuzzing deletes and moves things): tiny 1.0.0 and 1.1.0, champion."""
    return tiny_workspace(tmp_path_factory.mktemp("conformance"), tiny_gguf)


@pytest.fixture(scope="module")
def conformance_url(conformance_root: Path) -> Iterator[str]:
    """Its own API; tiny is deployed and active, so `model` may be left out of a request."""
    with running_api(api_settings(conformance_root), preload=["tiny"]) as url:
        yield url


# built from the app, not fetched: `parametrize` needs the document when pytest collects the tests
# (`schemathesis.pytest.from_fixture` would fetch it from a running API, but it breaks on pytest 9.2)
DOCUMENT = create_app(api_settings(Path("unused"))).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=schemathesis.Config.from_dict(CONFIG))


def test_the_api_serves_the_document_tested_here(conformance_url: str) -> None:
    assert httpx.get(f"{conformance_url}/openapi.json").json() == DOCUMENT


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"prompt": ""}),  # llama_cpp.server failed on nothing to continue: a 502
        ("/v1/completions", {"prompt": "a", "seed": 2**70}),  # past int64 orjson could not send it: a 500
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": LONE}]}),  # orjson refused it
        ("/v1/embeddings", {"input": ["a", LONE]}),  # so did the tokenizer
        ("/models", {"path": "model\x00.gguf"}),  # the OS refuses a NUL in a path
        ("/models", {"path": "~nobody-here/tiny.gguf"}),  # no such user: Path.expanduser raised
    ],
)
def test_what_once_failed_the_server_is_refused_as_the_clients_mistake(
    conformance_url: str, path: str, body: dict[str, Any]
) -> None:
    sent = json.dumps(body)  # ASCII, so a lone surrogate goes as JSON spells it: `\ud800`
    r = httpx.post(f"{conformance_url}{path}", content=sent, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_a_file_name_too_long_for_the_file_system_is_a_400(
    conformance_url: str, conformance_root: Path
) -> None:
    r = httpx.post(
        f"{conformance_url}/models", json={"path": str(conformance_root / ("a" * 300))}, timeout=60
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "path"


def test_a_wrong_method_is_answered_with_every_method_the_path_has(conformance_url: str) -> None:
    r = httpx.request("PUT", f"{conformance_url}/models/tiny")
    assert r.status_code == 405
    assert {"GET", "DELETE"} <= {m.strip() for m in r.headers["allow"].split(",")}


def short_generation(case: schemathesis.Case) -> None:
    """Cap `max_tokens` where a request generates, leaving a value the schema refuses as it is."""
    if case.path not in GENERATING or not isinstance(case.body, dict):
        return
    holder: Any = case.body.setdefault("options", {}) if case.path.startswith("/infer/") else case.body
    if not isinstance(holder, dict):
        return
    value = holder.get("max_tokens")
    if value is None:
        holder["max_tokens"] = SHORT
    elif type(value) in (int, float) and float(value).is_integer() and 1 <= value <= TOKEN_BOUND:
        holder["max_tokens"] = min(value, SHORT)


def call_and_check(case: schemathesis.Case, conformance_url: str) -> None:
    """Send the case and run every check, forgiving only a model's refusal of a valid request."""
    short_generation(case)
    response = case.call(base_url=conformance_url)
    try:
        case.validate_response(response)
    except FailureGroup as group:
        message = response.json().get("error", {}).get("message", "") if response.status_code == 400 else ""
        refused_by_model = bool(MODEL_REFUSALS.search(message))
        if not all(isinstance(f, RejectedPositiveData) and refused_by_model for f in group.exceptions):
            raise


def is_registry_command(ctx: Any) -> bool:
    return (ctx.operation.method.upper(), ctx.operation.path) in REGISTRY_COMMANDS


def is_job_route(ctx: Any) -> bool:
    """Jobs need a Prefect server and a runner: tests/jobs drives them over HTTP on the real stack."""
    return ctx.operation.path in JOB_ROUTES


@schema.exclude(is_registry_command).exclude(is_job_route).parametrize()
def test_reads_and_inference_answer_as_the_document_says(
    case: schemathesis.Case, conformance_url: str
) -> None:
    call_and_check(case, conformance_url)


@schema.include(is_registry_command).parametrize()
def test_registry_commands_answer_as_the_document_says(case: schemathesis.Case, conformance_url: str) -> None:
    call_and_check(case, conformance_url)
