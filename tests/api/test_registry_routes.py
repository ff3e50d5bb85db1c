"""The registry over HTTP: register, list with pages and filters, show, aliases, rollback, delete."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

USER = [{"role": "user", "content": "hi"}]


def _register(api_url: str, path: Path, **fields: object) -> httpx.Response:
    return httpx.post(f"{api_url}/models", json={"path": str(path), **fields}, timeout=60)


@pytest.fixture(scope="module")
def gguf_in_roots(api_root: Path) -> Path:
    return api_root / "tiny.gguf"


def test_register_answers_201_with_the_new_version(api_url: str, gguf_in_roots: Path) -> None:
    r = _register(api_url, gguf_in_roots, name="reg-new", config={"purpose": "test"})
    assert r.status_code == 201
    body = r.json()
    assert (body["name"], body["version"], body["state"]) == ("reg-new", "1.0.0", "registered")
    assert body["config"] == {"purpose": "test"}
    assert body["artifacts"]["gguf"]["file"].endswith(".gguf")
    assert "/" not in body["artifacts"]["gguf"]["file"]  # no absolute path leaves the server
    assert len(body["artifacts"]["gguf"]["sha256"]) == 64


def test_list_pages_and_filters(api_url: str, gguf_in_roots: Path) -> None:
    for _ in range(5):
        assert _register(api_url, gguf_in_roots, name="paged").status_code == 201
    first = httpx.get(f"{api_url}/models", params={"name": "paged", "limit": 2}).json()
    assert (first["total"], first["pages"], first["page"]) == (5, 3, 1)
    assert [m["version"] for m in first["models"]] == ["1.4.0", "1.3.0"]
    last = httpx.get(f"{api_url}/models", params={"name": "paged", "limit": 2, "page": 3}).json()
    assert [m["version"] for m in last["models"]] == ["1.0.0"]
    beyond = httpx.get(f"{api_url}/models", params={"name": "paged", "limit": 2, "page": 9}).json()
    assert beyond["models"] == [] and beyond["total"] == 5
    embeddings = httpx.get(f"{api_url}/models", params={"task": "text-embedding"}).json()
    assert all(m["task"] == "text-embedding" for m in embeddings["models"])
    gpu = httpx.get(f"{api_url}/models", params={"device": "cuda"}).json()
    assert gpu["total"] == 0 and gpu["models"] == []
    assert "active_model" in first


@pytest.mark.parametrize(("params", "param"), [({"limit": 0}, "limit"), ({"page": 0}, "page")])
def test_list_refuses_bad_paging(api_url: str, params: dict, param: str) -> None:
    r = httpx.get(f"{api_url}/models", params=params)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param


@pytest.mark.integration
def test_show_has_config_lineage_and_stats_that_count_requests(
    api_url: str, client: openai.OpenAI, gguf_in_roots: Path
) -> None:
    assert _register(api_url, gguf_in_roots, name="counted").status_code == 201
    for _ in range(3):
        client.chat.completions.create(model="counted", messages=USER, max_tokens=2)
    body = httpx.get(f"{api_url}/models/counted").json()
    stats = body["stats"]
    assert stats["requests_total"] == 3 and stats["requests_failed"] == 0
    assert stats["completion_tokens"] == 6 and stats["prompt_tokens"] > 0
    assert stats["avg_latency_ms"] > 0 and stats["p95_latency_ms"] >= stats["avg_latency_ms"] * 0.5
    assert body["state"] == "loaded" and body["backend"] == "llamacpp"
    assert set(body) >= {"source", "dataset_hash", "config", "metrics", "artifacts", "aliases"}


def test_unknown_model_is_404_with_the_seed_code(api_url: str) -> None:
    r = httpx.get(f"{api_url}/models/ghost")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "MODEL_NOT_FOUND"


def test_register_of_a_corrupt_gguf_is_422_and_changes_nothing(api_url: str, api_root: Path) -> None:
    before = httpx.get(f"{api_url}/models", params={"limit": 100}).json()["total"]
    bad = api_root / "corrupt.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    r = _register(api_url, bad, name="corrupt")
    assert r.status_code == 422
    assert str(api_root) not in r.text
    assert httpx.get(f"{api_url}/models", params={"limit": 100}).json()["total"] == before
    assert httpx.get(f"{api_url}/models/corrupt").status_code == 404


def test_register_outside_the_allowed_roots_is_403(
    api_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    r = _register(api_url, Path("/etc/passwd"), name="passwd")
    assert r.status_code == 403
    assert "/etc" not in r.json()["error"]["message"]


def test_register_of_a_missing_file_is_a_clear_4xx(api_url: str, api_root: Path) -> None:
    r = _register(api_url, api_root / "missing.gguf", name="missing")
    assert 400 <= r.status_code < 500
    assert "missing.gguf" in r.json()["error"]["message"]
    assert str(api_root) not in r.text


def test_duplicate_version_is_409(api_url: str, gguf_in_roots: Path) -> None:
    assert _register(api_url, gguf_in_roots, name="dupe", version="2.0.0").status_code == 201
    assert _register(api_url, gguf_in_roots, name="dupe", version="2.0.0").status_code == 409


@pytest.mark.integration
def test_rollback_moves_the_alias_and_serves_the_older_version(
    api_url: str, client: openai.OpenAI, gguf_in_roots: Path
) -> None:
    for _ in range(2):
        assert _register(api_url, gguf_in_roots, name="rolled").status_code == 201
    r = httpx.post(f"{api_url}/models/rolled/aliases", json={"alias": "champion", "version": "1.1.0"})
    assert r.status_code == 200
    assert client.chat.completions.create(model="rolled:champion", messages=USER, max_tokens=1).model == (
        "rolled:1.1.0"
    )
    r = httpx.post(
        f"{api_url}/models/rolled/rollback", json={"alias": "champion", "version": "1.0.0"}, timeout=60
    )
    assert r.status_code == 200
    assert (r.json()["from"], r.json()["to"]) == ("1.1.0", "1.0.0")
    assert r.json()["model"]["state"] == "loaded"
    assert client.chat.completions.create(model="rolled:champion", messages=USER, max_tokens=1).model == (
        "rolled:1.0.0"
    )


def test_delete_removes_every_version_and_its_aliases(api_url: str, gguf_in_roots: Path) -> None:
    for _ in range(2):
        assert _register(api_url, gguf_in_roots, name="doomed").status_code == 201
    httpx.post(f"{api_url}/models/doomed/aliases", json={"alias": "champion", "version": "1.0.0"})
    assert httpx.delete(f"{api_url}/models/doomed:1.1.0").status_code == 204
    assert httpx.get(f"{api_url}/models/doomed:1.1.0").status_code == 404
    assert httpx.get(f"{api_url}/models/doomed:champion").json()["version"] == "1.0.0"
    assert httpx.delete(f"{api_url}/models/doomed").status_code == 204
    assert httpx.get(f"{api_url}/models/doomed:champion").status_code == 404
    assert httpx.delete(f"{api_url}/models/doomed").status_code == 404


@pytest.mark.integration
def test_deploy_makes_the_model_active_and_the_default_for_requests(
    api_url: str, gguf_in_roots: Path
) -> None:
    assert _register(api_url, gguf_in_roots, name="active-one").status_code == 201
    r = httpx.post(f"{api_url}/models/active-one/deploy", json={}, timeout=60)
    assert r.status_code == 200 and r.json()["deployed"] == "active-one:1.0.0"
    assert httpx.get(f"{api_url}/models").json()["active_model"] == "active-one:1.0.0"
    reply = httpx.post(f"{api_url}/v1/query", json={"prompt": "hello", "max_tokens": 2}, timeout=60).json()
    assert reply["model"] == "active-one:1.0.0" and reply["tokens_used"] > 2
