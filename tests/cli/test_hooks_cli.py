"""`forgeflow hooks install | uninstall | status` as a user runs them, against a real recording API."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from core.repos.hooks import BEGIN
from tests.helpers.cli import assert_one_clean_line, run
from tests.helpers.gitrepo import commit


@pytest.fixture
def api() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A recording stand-in for the API's POST /v1/retrain: (base URL, requests received)."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append({"path": self.path, "headers": dict(self.headers), "json": json.loads(body)})
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def _wait(received: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while len(received) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(received) >= n, received
    return received


def _ok(tmp_path: Path, *args: str) -> str:
    proc = run(tmp_path, "hooks", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_install_commit_status_and_uninstall(
    make_repo: Callable[..., Path],
    api: tuple[str, list[dict[str, Any]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, received = api
    repo = make_repo({"a.py": "x = 1\n"})
    user_hook = repo / ".git" / "hooks" / "post-merge"
    user_hook.write_text("#!/bin/sh\necho merged\n")
    user_hook.chmod(0o755)
    printed = _ok(tmp_path, "install", "--repo", "repo", "--server", url)
    assert "post-commit: created (repo/.git/hooks/post-commit)" in printed
    assert "post-merge: added" in printed and f"notifies {url}/v1/retrain" in printed
    assert "post-commit: unchanged" in _ok(tmp_path, "install", "--repo", "repo", "--server", url)
    assert user_hook.read_text().count(BEGIN) == 1

    monkeypatch.setenv("FORGEFLOW_API_KEY", "cli-key")
    commit(repo, {"b.py": "y = 2\n"}, "Add b")
    (request,) = _wait(received, 1)
    assert request["json"] == {"project_path": str(repo), "auto_deploy": True, "trigger": "post-commit"}
    assert request["headers"]["Authorization"] == "Bearer cli-key"

    status = _ok(tmp_path, "status", "--repo", "repo")
    assert f"post-commit: installed, notifies {url}" in status
    assert "post-merge: installed (in your hook)" in status
    removed = _ok(tmp_path, "uninstall", "--repo", "repo")
    assert "post-commit: deleted" in removed and "post-merge: removed" in removed
    assert user_hook.read_text() == "#!/bin/sh\necho merged\n"
    assert not (repo / ".git" / "hooks" / "post-commit").exists()
    assert "post-commit: not installed (no hook)" in _ok(tmp_path, "status", "--repo", "repo")


def test_the_default_server_is_the_serve_host_and_port(
    make_repo: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo({"a.py": "x = 1\n"})
    monkeypatch.setenv("FORGEFLOW_SERVE__PORT", "8123")
    assert "notifies http://127.0.0.1:8123/v1/retrain" in _ok(tmp_path, "install", "--repo", "repo")
    assert "ff_url=http://127.0.0.1:8123/v1/retrain" in (repo / ".git" / "hooks" / "post-commit").read_text()


def test_a_bare_repository_gets_a_printed_post_receive_hook(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", "--bare", str(tmp_path / "srv.git")], check=True)
    proc = run(tmp_path, "hooks", "install", "--repo", "srv.git", "--server", "http://10.0.0.5:8000")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("#!/bin/sh\n") and "ff_trigger=post-receive" in proc.stdout
    assert "ff_url=http://10.0.0.5:8000/v1/retrain" in proc.stdout
    assert "nothing was installed" in proc.stderr
    assert not (tmp_path / "srv.git" / "hooks" / "post-receive").exists()
    hook = tmp_path / "post-receive"
    hook.write_text(proc.stdout)
    assert subprocess.run(["sh", "-n", str(hook)]).returncode == 0
    printed = run(tmp_path, "hooks", "install", "--repo", "srv.git", "--print-post-receive")
    assert printed.returncode == 0 and printed.stderr == "" and "ff_trigger=post-receive" in printed.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["install", "--repo", "missing"], "does not exist"),
        (["install", "--repo", "plain"], "is not a git repository"),
        (["uninstall", "--repo", "plain"], "is not a git repository"),
        (["status", "--repo", "repo/sub"], "is inside a git repository"),
        (["install", "--repo", "https://example.com/o/r.git"], "local repository"),
        (["install", "--repo", "/"], "outside the allowed roots"),
        (["install", "--repo", "repo", "--server", "ftp://example.com"], "is not an http(s) URL"),
        (["install", "--repo", "repo", "--server", "127.0.0.1:8000"], "is not an http(s) URL"),
        (["install", "--repo", "repo", "--server", "http://h:port"], "is not an http(s) URL"),
        (["install", "--repo", "python-hook"], "is a python3 script"),
    ],
)
def test_bad_input_is_one_clean_line_and_exit_2(
    make_repo: Callable[..., Path], tmp_path: Path, args: list[str], message: str
) -> None:
    repo = make_repo({"a.py": "x = 1\n"})
    (repo / "sub").mkdir()
    (tmp_path / "plain").mkdir()
    if "python-hook" in args:
        hooked = make_repo({"a.py": "x = 1\n"}, name="python-hook")
        (hooked / ".git" / "hooks" / "post-commit").write_text("#!/usr/bin/env python3\nprint('mine')\n")
        (hooked / ".git" / "hooks" / "post-commit").chmod(0o755)
    proc = run(tmp_path, "hooks", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert_one_clean_line(proc, args)
    assert not (repo / ".git" / "hooks" / "post-commit").exists()
