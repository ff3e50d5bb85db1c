"""`forgeflow deploy --model smollm2-135m` with no training: the embedded GGUF served end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from tests.helpers.api_server import free_port

pytestmark = pytest.mark.integration  # a llama-server process (see tests/helpers/tiers.py)

FORGEFLOW = str(Path(sys.executable).with_name("forgeflow"))


def _env(root: Path) -> dict[str, str]:
    return os.environ | {
        "FORGEFLOW_HOME": str(root / "ws"),
        "FORGEFLOW_ALLOWED_ROOTS": json.dumps([str(root)]),
        "FORGEFLOW_SERVE__N_CTX": "1024",
    }


def _wait_up(url: str, proc: subprocess.Popen[str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "exited"
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise AssertionError("the server did not come up")


@pytest.mark.slow
def test_deploy_of_the_embedded_default_serves_smollm2_without_training(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [FORGEFLOW, "deploy", "--model", "smollm2-135m", "--port", str(port)],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(url, proc)
        models = httpx.get(f"{url}/models").json()
        assert models["active_model"] == "smollm2-135m:1.0.0"
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        reply = client.chat.completions.create(
            model="smollm2-135m",
            messages=[{"role": "user", "content": "What is 2+2?"}],
            max_tokens=16,
            temperature=0,
        )
        assert "4" in (reply.choices[0].message.content or "")  # SmolLM2-135M: "...is 4."
        assert reply.usage is not None and reply.usage.prompt_tokens > 10
        # a second `deploy` finds the running server and asks it, instead of starting another
        again = subprocess.run(
            [FORGEFLOW, "deploy", "--model", "smollm2-135m", "--port", str(port)],
            env=_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert again.returncode == 0, again.stderr
        assert "running server" in again.stdout
        servers = [p for p in psutil.Process(proc.pid).children() if p.name() == "llama-server"]
        assert len(servers) == 1  # the one llama.cpp server of the deployed model
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    psutil.wait_procs(servers, timeout=10)
    assert not [
        p for p in servers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    ]  # none outlives it


def test_deploy_of_an_unknown_model_is_one_clear_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [FORGEFLOW, "deploy", "--model", "ghost", "--port", str(free_port())],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "ghost" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_rollback_command_moves_the_alias_on_the_running_server(api_url: str, api_root: Path) -> None:
    for _ in range(2):
        r = httpx.post(
            f"{api_url}/models", json={"path": str(api_root / "tiny.gguf"), "name": "clirb"}, timeout=60
        )
        assert r.status_code == 201
    httpx.post(f"{api_url}/models/clirb/aliases", json={"alias": "champion", "version": "1.1.0"})
    port = api_url.rsplit(":", 1)[1]
    proc = subprocess.run(
        [FORGEFLOW, "models", "rollback", "clirb", "1.0.0", "--port", port],
        env=_env(api_root),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "1.1.0 → 1.0.0" in proc.stdout and "running server" in proc.stdout
    shown = httpx.get(f"{api_url}/models/clirb:champion").json()
    assert (shown["version"], shown["state"]) == ("1.0.0", "loaded")
    client = openai.OpenAI(base_url=f"{api_url}/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(
        model="clirb:champion", messages=[{"role": "user", "content": "hi"}], max_tokens=1
    )
    assert reply.model == "clirb:1.0.0"


def test_rollback_command_without_a_server_moves_the_alias_in_the_registry(
    tmp_path: Path, tiny_gguf: Path
) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(tiny_gguf.read_bytes())
    env = _env(tmp_path)
    for _ in range(2):
        subprocess.run(
            [FORGEFLOW, "models", "register", str(model), "--name", "solo"],
            env=env,
            check=True,
            capture_output=True,
        )
    subprocess.run(
        [FORGEFLOW, "models", "alias", "solo", "champion", "1.1.0"], env=env, check=True, capture_output=True
    )
    proc = subprocess.run(
        [FORGEFLOW, "models", "rollback", "solo", "1.0.0", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no server running" in proc.stdout
    shown = subprocess.run(
        [FORGEFLOW, "models", "show", "solo:champion", "--json"], env=env, capture_output=True, text=True
    )
    assert json.loads(shown.stdout)["version"] == "1.0.0"
