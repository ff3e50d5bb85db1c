"""Grounded answers over HTTP: a project's model retrieves from its repo index and cites sources."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from core.index import index_path
from core.registry import Registry
from core.repos.spec import parse_repo_spec
from core.settings import Settings
from tasks.extract.index import refresh_index
from tests.helpers.api_server import api_settings, running_api
from tests.helpers.gitrepo import commit, git

pytestmark = pytest.mark.integration  # a llama-server process (see tests/helpers/tiers.py)

CODE = '''"""Data processing."""


class DataProcessor:
    """Cleans raw records and turns them into feature rows."""

    def run(self, rows):
        return [r for r in rows if r]
'''
QUESTION = "What does the DataProcessor class do?"


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path
) -> Iterator[tuple[str, Path, Settings]]:
    """An API serving `demo` (trained from a real repo) and `tiny` (a base model, no repo)."""
    root = tmp_path_factory.mktemp("grounded")
    repo = root / "demo-repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(repo, {"demo/processing.py": CODE}, "Add the data processor")
    settings = api_settings(root)
    model = root / "tiny.gguf"
    model.write_bytes(tiny_gguf.read_bytes())
    with Registry.from_settings(settings) as registry:
        registry.register(model, name="demo", source_repo=str(repo))
        registry.register(model, name="tiny")
    with running_api(settings, indexer=refresh_index) as url:
        yield url, repo, settings


def chat(url: str, model: str, **extra: object) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8, **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)


def test_a_project_model_answers_with_sources_from_its_index(project: tuple[str, Path, Settings]) -> None:
    url, repo, _ = project
    reply = chat(url, "demo:1.0.0")

    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["choices"][0]["message"]["content"] is not None
    first = body["sources"][0]
    head = git(repo, "rev-parse", "HEAD")
    assert (first["path"], first["start_line"], first["end_line"], first["kind"]) == (
        "demo/processing.py",
        4,
        8,
        "class",
    )
    assert first["commit"] == head and body["index"] == {
        "commit": head,
        "head": head,
        "current": True,
        "note": None,
    }


def test_a_commit_moves_the_cited_lines_without_a_retrain(project: tuple[str, Path, Settings]) -> None:
    url, repo, _ = project
    head = commit(
        repo,
        {"demo/processing.py": CODE.replace('"""Data processing."""\n', '"""Data."""\n\nLIMIT = 3\n\n')},
        "Add a limit",
    )

    body = chat(url, "demo:1.0.0").json()

    assert (body["sources"][0]["start_line"], body["sources"][0]["end_line"]) == (7, 11)
    assert body["sources"][0]["commit"] == head and body["index"]["current"]


def test_retrieval_off_or_a_base_model_gives_no_sources(project: tuple[str, Path, Settings]) -> None:
    url, _, _ = project
    off = chat(url, "demo:1.0.0", retrieval=False).json()
    base = chat(url, "tiny:1.0.0").json()
    assert "sources" not in off and "index" not in off
    assert "sources" not in base


def test_a_bad_switch_is_a_400_and_retrieval_from_a_base_model_says_why(
    project: tuple[str, Path, Settings],
) -> None:
    url, _, _ = project
    not_bool = chat(url, "demo:1.0.0", retrieval="yes")
    no_repo = chat(url, "tiny:1.0.0", retrieval=True)
    assert (not_bool.status_code, not_bool.json()["error"]["param"]) == (400, "retrieval")
    assert no_repo.status_code == 200 and no_repo.json()["sources"] == []
    assert "no source repository" in no_repo.json()["index"]["note"]


def test_the_openai_sdk_reads_the_sources_plain_and_streamed(project: tuple[str, Path, Settings]) -> None:
    url, _, _ = project
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    messages = [{"role": "user", "content": QUESTION}]
    reply = client.chat.completions.create(model="demo:1.0.0", messages=messages, max_tokens=8)  # type: ignore[arg-type]
    chunks = list(
        client.chat.completions.create(model="demo:1.0.0", messages=messages, max_tokens=8, stream=True)
    )  # type: ignore[arg-type,call-overload]

    assert (reply.model_extra or {})["sources"][0]["path"] == "demo/processing.py"
    last = chunks[-1]
    assert last.choices == [] and (last.model_extra or {})["sources"][0]["path"] == "demo/processing.py"
    assert any(c.choices and c.choices[0].delta.content for c in chunks[:-1]) or len(chunks) > 1


def test_query_infer_and_completions_are_grounded_too(project: tuple[str, Path, Settings]) -> None:
    url, _, _ = project
    query = httpx.post(
        f"{url}/v1/query", json={"prompt": QUESTION, "model": "demo", "max_tokens": 8}, timeout=120
    )
    infer = httpx.post(
        f"{url}/infer/demo", json={"text": QUESTION, "options": {"max_tokens": 8}}, timeout=120
    )
    raw = httpx.post(
        f"{url}/v1/completions", json={"prompt": QUESTION, "model": "demo", "max_tokens": 8}, timeout=120
    )
    for reply in (query, infer, raw):
        assert reply.status_code == 200, reply.text
        assert reply.json()["sources"][0]["path"] == "demo/processing.py"


def test_a_corrupt_or_missing_index_answers_without_sources(
    project: tuple[str, Path, Settings], tmp_path: Path
) -> None:
    url, repo, settings = project
    target = index_path(settings, parse_repo_spec(str(repo), settings).project_id)
    saved = target.read_bytes()
    try:
        with running_api(settings) as plain:  # no indexer: nothing repairs the index
            target.write_bytes(b"garbage" * 1000)
            corrupt = chat(plain, "demo:1.0.0")
            target.unlink()
            missing = chat(plain, "demo:1.0.0")
    finally:
        target.write_bytes(saved)
    for reply in (corrupt, missing):
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["sources"] == [] and body["index"]["commit"] is None
    assert "unreadable" in corrupt.json()["index"]["note"]
    assert "no index yet" in missing.json()["index"]["note"]
    assert json.dumps(missing.json()).find(str(tmp_path)) == -1  # no absolute path in the reply
