"""The seeds' routes: /health, /v1/query, /infer/{model} with timing, and /metrics."""

from __future__ import annotations

import httpx
import pytest


def test_health_has_the_seed_fields(api_url: str) -> None:
    body = httpx.get(f"{api_url}/health").json()
    assert body["status"] == "healthy"
    assert body["version"]
    assert body["uptime_seconds"] >= 0
    assert isinstance(body["models_loaded"], int)
    assert set(body["workers"]) == {"active", "idle"}
    assert body["backends"]["llamacpp"] is True and body["backends"]["embedder"] is True
    assert body["ollama_available"] is False  # nothing listens on OLLAMA_HOST in this test
    assert body["timestamp"].endswith("Z")


@pytest.mark.integration
def test_query_answers_in_the_seed_shape(api_url: str) -> None:
    r = httpx.post(
        f"{api_url}/v1/query", json={"prompt": "What is git?", "model": "tiny", "max_tokens": 3}, timeout=60
    )
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"response", "model", "tokens_used"}
    assert body["model"] == "tiny:1.1.0" and body["tokens_used"] > 3


@pytest.mark.integration
def test_infer_on_a_generation_model_reports_timing(api_url: str) -> None:
    r = httpx.post(
        f"{api_url}/infer/tiny:1.0.0", json={"text": "hello", "options": {"max_tokens": 2}}, timeout=60
    )
    assert r.status_code == 200
    body = r.json()
    assert isinstance(body["result"]["text"], str)
    assert body["metadata"] == {"model": "tiny", "version": "1.0.0", "device": "cpu"}
    t = body["timing"]
    assert t["inference_time_ms"] > 0 and t["queue_time_ms"] >= 0
    assert abs(t["total_time_ms"] - t["queue_time_ms"] - t["inference_time_ms"]) < 0.01
    server = t["server"]  # llama-server's own account: 2 tokens decoded, well inside the request's time
    assert server["predicted_tokens"] == 2 and server["predicted_per_second"] > 0
    assert server["prompt_tokens"] + server["cached_tokens"] > 5
    assert 0 < server["prompt_ms"] + server["predicted_ms"] < t["inference_time_ms"]


def test_infer_on_the_embedding_model_returns_a_vector(api_url: str) -> None:
    r = httpx.post(f"{api_url}/infer/all-minilm-l6-v2", json={"text": "ModelMora is awesome"}, timeout=60)
    assert r.status_code == 200
    assert len(r.json()["result"]["embeddings"]) == 384
    assert r.json()["metadata"]["model"] == "all-minilm-l6-v2"


def test_infer_on_an_unknown_model_is_404(api_url: str) -> None:
    r = httpx.post(f"{api_url}/infer/ghost", json={"text": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "MODEL_NOT_FOUND"


@pytest.mark.integration
def test_metrics_count_requests_tokens_and_latency(api_url: str) -> None:
    httpx.post(
        f"{api_url}/v1/query", json={"prompt": "count me", "model": "tiny:1.0.0", "max_tokens": 2}, timeout=60
    )
    text = httpx.get(f"{api_url}/metrics").text
    assert 'forgeflow_requests_total{model="tiny:1.0.0",route="query",status="200"}' in text
    assert 'forgeflow_tokens_total{kind="completion",model="tiny:1.0.0"}' in text
    assert "forgeflow_request_latency_seconds_bucket" in text
    assert "forgeflow_time_to_first_token_seconds" in text
    assert "forgeflow_models_loaded" in text


def test_docs_redoc_and_a_stable_openapi_document(api_url: str) -> None:
    assert httpx.get(f"{api_url}/docs").status_code == 200
    assert httpx.get(f"{api_url}/redoc").status_code == 200
    spec = httpx.get(f"{api_url}/openapi.json").json()
    ids = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert {"create_chat_completion", "list_models", "register_model", "rollback", "infer", "health"} <= ids
