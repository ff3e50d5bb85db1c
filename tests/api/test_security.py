"""Auth on and off, CORS allow-list, and error bodies that never leak a traceback or a path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from core.config import ServeConfig
from tests.helpers.api_server import api_settings, running_api

KEY = "s3cret-key-for-tests"
ORIGIN = "https://ide.example.com"


@pytest.fixture(scope="module")
def secured_url(api_root: Path) -> Iterator[str]:
    serve = ServeConfig(n_ctx=512, cors_origins=[ORIGIN])
    with running_api(api_settings(api_root, api_key=KEY, serve=serve)) as url:
        yield url


def test_health_is_open_when_a_key_is_set(secured_url: str) -> None:
    assert httpx.get(f"{secured_url}/health").status_code == 200


@pytest.mark.parametrize(
    "path", ["/models", "/v1/models", "/metrics", "/docs", "/openapi.json", "/no-such-route"]
)
def test_every_other_route_needs_the_key(secured_url: str, path: str) -> None:
    r = httpx.get(f"{secured_url}{path}")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["type"] == "authentication_error"


def test_a_wrong_key_is_401_and_the_right_one_passes(secured_url: str) -> None:
    wrong = httpx.get(f"{secured_url}/models", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    right = httpx.get(f"{secured_url}/models", headers={"Authorization": f"Bearer {KEY}"})
    assert right.status_code == 200


def test_the_openai_sdk_raises_authentication_error_with_a_wrong_key(secured_url: str) -> None:
    client = openai.OpenAI(base_url=f"{secured_url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    good = openai.OpenAI(base_url=f"{secured_url}/v1", api_key=KEY, max_retries=0)
    assert any(m.id == "tiny:1.0.0" for m in good.models.list())


def test_without_a_key_configured_no_auth_is_needed(api_url: str) -> None:
    assert httpx.get(f"{api_url}/models").status_code == 200


def test_cors_allows_only_listed_origins(secured_url: str) -> None:
    pre = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    ok = httpx.options(f"{secured_url}/v1/chat/completions", headers=pre)
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ORIGIN
    assert "access-control-allow-credentials" not in ok.headers
    other = httpx.options(
        f"{secured_url}/v1/chat/completions", headers=pre | {"Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in other.headers


def test_star_origin_is_refused_in_settings() -> None:
    with pytest.raises(ValueError, match="refused"):
        api_settings(Path("/tmp"), serve=ServeConfig(cors_origins=["*"]))


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/chat/completions", {"model": "tiny", "messages": "not a list"}),
        ("POST", "/v1/chat/completions", b"{not json"),
        ("POST", "/models", {"path": "/root/secret/model.gguf"}),
        ("POST", "/models", {"path": "/tmp/../etc/shadow", "name": "x"}),
        ("GET", "/models/..%2F..%2Fetc%2Fpasswd", None),
        ("POST", "/infer/ghost", {"text": "x"}),
        ("DELETE", "/models/ghost", None),
    ],
)
def test_error_bodies_have_one_shape_and_no_trace_or_path(
    api_url: str, api_root: Path, method: str, path: str, body: object
) -> None:
    kwargs: dict[str, object] = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = httpx.request(method, f"{api_url}{path}", timeout=30, **kwargs)  # type: ignore[arg-type]
    assert 400 <= r.status_code < 500
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    text = r.text
    assert "Traceback" not in text and 'File "' not in text
    assert str(api_root) not in text and "/root/" not in text and "/tmp/" not in text
