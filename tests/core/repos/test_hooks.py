"""Git hooks (core/repos/hooks.py) in real repositories: real commits, merges and pushes fire them, and a
real HTTP server on a free port records what they POST; a down or hanging API never holds git up."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from core.errors import InputError
from core.repos.hooks import (
    BEGIN,
    END,
    hook_states,
    install,
    locate_repo,
    render_post_receive,
    server_url,
    uninstall,
)
from core.settings import Settings
from tests.helpers.gitrepo import commit, git

USER_HOOK = '#!/bin/sh\n# my own hook\necho "$0 ran" >> "{log}"\nexit 0\n'


class Recorder:
    """A tiny forgeflow API stand-in: records every request (path, headers, JSON body)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                recorder.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "json": json.loads(body)}
                )
                reply = b'{"triggered": false}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def wait_for(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The first `n` requests, polled for: the hooks notify in the background."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.requests) >= n, f"{len(self.requests)} request(s) arrived, expected {n}"
        return self.requests[:n]


@pytest.fixture
def api() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.server.shutdown()
    recorder.server.server_close()


@pytest.fixture
def repo(make_repo: Callable[..., Path]) -> Path:
    return make_repo({"a.py": "x = 1\n"})


def _timed_commit(repo: Path, name: str) -> float:
    started = time.monotonic()
    commit(repo, {name: "y = 2\n"}, f"Add {name}")
    return time.monotonic() - started


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("name", "key"), [("repo", None), ("repo", "s3cret-key"), ('we"ird\\ name', 'k3y"with\\odd')]
)
def test_a_commit_notifies_the_api_with_the_repo_path_and_bearer_key(
    make_repo: Callable[..., Path],
    api: Recorder,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    key: str | None,
) -> None:
    repo = make_repo({"a.py": "x = 1\n"}, name=name)
    if key:
        monkeypatch.setenv("FORGEFLOW_API_KEY", key)
    else:
        monkeypatch.delenv("FORGEFLOW_API_KEY", raising=False)
    target = locate_repo(str(repo), settings)
    assert (target.top, target.hooks_dir, target.bare) == (repo, repo / ".git" / "hooks", False)
    changes = install(target.hooks_dir, api.url, sys.executable)
    assert [(c.hook, c.action) for c in changes] == [("post-commit", "created"), ("post-merge", "created")]
    commit(repo, {"b.py": "y = 2\n"}, "Add b")
    (request,) = api.wait_for(1)
    assert request["path"] == "/v1/retrain"
    assert request["json"] == {"project_path": str(repo), "auto_deploy": True, "trigger": "post-commit"}
    assert request["headers"].get("Authorization") == (f"Bearer {key}" if key else None)
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["User-Agent"].startswith("curl")  # curl when present


def test_a_merge_fires_post_merge(repo: Path, api: Recorder, settings: Settings) -> None:
    git(repo, "checkout", "-q", "-b", "topic")
    commit(repo, {"t.py": "t = 1\n"}, "Topic work")
    git(repo, "checkout", "-q", "main")
    commit(repo, {"m.py": "m = 1\n"}, "Main work")
    install(locate_repo(str(repo), settings).hooks_dir, api.url, sys.executable)
    git(repo, "merge", "-q", "--no-edit", "topic")
    (request,) = api.wait_for(1)
    assert request["json"] == {"project_path": str(repo), "auto_deploy": True, "trigger": "post-merge"}
    time.sleep(0.3)
    assert [r["json"]["trigger"] for r in api.requests] == ["post-merge"]  # a merge runs no post-commit


def test_a_commit_succeeds_at_once_when_no_api_listens(repo: Path, settings: Settings) -> None:
    install(locate_repo(str(repo), settings).hooks_dir, f"http://127.0.0.1:{_free_port()}", sys.executable)
    assert _timed_commit(repo, "b.py") < 5
    assert git(repo, "log", "-1", "--format=%s") == "Add b.py"


def test_a_commit_does_not_wait_for_an_api_that_never_answers(repo: Path, settings: Settings) -> None:
    with socket.socket() as listener:  # accepts connections (the kernel does) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        # a 30 s notification timeout: a hook that waited for it would hold the commit that long
        install(locate_repo(str(repo), settings).hooks_dir, url, sys.executable, timeout_s=30)
        assert _timed_commit(repo, "b.py") < 10
        listener.settimeout(10)
        conn, _ = listener.accept()  # the hook did connect, in the background
        conn.close()
    assert git(repo, "log", "-1", "--format=%s") == "Add b.py"


def test_without_curl_the_installing_python_notifies(
    repo: Path, api: Recorder, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"  # git alone on PATH: no curl, no sed
    bin_dir.mkdir()
    git_path = subprocess.run(["which", "git"], capture_output=True, text=True, check=True).stdout.strip()
    (bin_dir / "git").symlink_to(git_path)
    install(locate_repo(str(repo), settings).hooks_dir, api.url, sys.executable)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FORGEFLOW_API_KEY", "py-key")
    commit(repo, {"b.py": "y = 2\n"}, "Add b")
    (request,) = api.wait_for(1)
    assert request["json"] == {"project_path": str(repo), "auto_deploy": True, "trigger": "post-commit"}
    assert request["headers"]["Authorization"] == "Bearer py-key"
    assert request["headers"]["User-Agent"].startswith("Python-urllib")


def test_a_users_hook_keeps_running_and_install_twice_adds_one_block(
    repo: Path, api: Recorder, settings: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "user-hook.log"
    hooks_dir = locate_repo(str(repo), settings).hooks_dir
    user_hook = hooks_dir / "post-commit"
    original = USER_HOOK.format(log=log)
    user_hook.write_text(original)
    user_hook.chmod(0o750)
    first = install(hooks_dir, api.url, sys.executable)
    second = install(hooks_dir, api.url, sys.executable)
    assert [c.action for c in first] == ["added", "created"]
    assert [c.action for c in second] == ["unchanged", "unchanged"]
    text = user_hook.read_text()
    assert text.count(BEGIN) == text.count(END) == 1
    assert text.startswith("#!/bin/sh\n" + BEGIN) and text.endswith(original.removeprefix("#!/bin/sh\n"))
    assert stat.S_IMODE(user_hook.stat().st_mode) == 0o750
    assert not [p.name for p in hooks_dir.iterdir() if p.name.endswith(".tmp")]
    commit(repo, {"b.py": "y = 2\n"}, "Add b")
    api.wait_for(1)
    assert log.read_text().count("ran") == 1
    assert [s.state for s in hook_states(hooks_dir)] == ["ours+user", "ours"]

    changes = uninstall(hooks_dir)
    assert [c.action for c in changes] == ["removed", "deleted"]
    assert user_hook.read_text() == original  # byte for byte
    assert stat.S_IMODE(user_hook.stat().st_mode) == 0o750
    assert not (hooks_dir / "post-merge").exists()
    assert [c.action for c in uninstall(hooks_dir)] == ["absent", "absent"]
    commit(repo, {"c.py": "z = 3\n"}, "Add c")
    assert log.read_text().count("ran") == 2
    time.sleep(0.3)
    assert len(api.requests) == 1


def test_reinstalling_with_another_server_replaces_the_block(repo: Path, settings: Settings) -> None:
    hooks_dir = locate_repo(str(repo), settings).hooks_dir
    install(hooks_dir, "http://127.0.0.1:8000", sys.executable)
    changes = install(hooks_dir, "https://ci.example:9000/ff", sys.executable)
    assert [c.action for c in changes] == ["updated", "updated"]
    text = (hooks_dir / "post-commit").read_text()
    assert text.count(BEGIN) == 1 and "https://ci.example:9000/ff/v1/retrain" in text and ":8000" not in text
    assert [s.server for s in hook_states(hooks_dir)] == ["https://ci.example:9000/ff"] * 2


def test_core_hooks_path_is_honoured(repo: Path, api: Recorder, settings: Settings) -> None:
    git(repo, "config", "core.hooksPath", "githooks")
    target = locate_repo(str(repo), settings)
    assert target.hooks_dir == repo / "githooks"
    install(target.hooks_dir, api.url, sys.executable)
    assert (repo / "githooks" / "post-commit").is_file() and not (
        repo / ".git" / "hooks" / "post-commit"
    ).exists()
    commit(repo, {"b.py": "y = 2\n"}, "Add b")
    assert api.wait_for(1)[0]["json"]["project_path"] == str(repo)


def test_a_worktree_shares_the_hooks_and_notifies_with_its_own_path(
    repo: Path, api: Recorder, settings: Settings, tmp_path: Path
) -> None:
    worktree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "side", str(worktree))
    target = locate_repo(str(worktree), settings)
    assert (target.top, target.hooks_dir) == (worktree, repo / ".git" / "hooks")
    install(target.hooks_dir, api.url, sys.executable)
    commit(worktree, {"w.py": "w = 1\n"}, "Worktree work")
    assert api.wait_for(1)[0]["json"]["project_path"] == str(worktree)


def test_the_post_receive_hook_notifies_with_the_pushed_bare_repo(
    repo: Path, api: Recorder, settings: Settings, tmp_path: Path
) -> None:
    bare = tmp_path / "server.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    target = locate_repo(str(bare), settings)
    assert (target.top, target.bare, target.hooks_dir) == (bare, True, bare / "hooks")
    hook = bare / "hooks" / "post-receive"
    hook.write_text(render_post_receive(api.url, sys.executable))
    hook.chmod(0o755)
    git(repo, "push", "-q", str(bare), "main")
    (request,) = api.wait_for(1)
    assert request["json"] == {"project_path": str(bare), "auto_deploy": True, "trigger": "post-receive"}


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        ("#!/usr/bin/env python3\nprint('hi')\n", 0o755, "is a python3 script"),
        ("#!/bin/sh\necho hi\n", 0o644, "is not executable"),
        (f"#!/bin/sh\n{BEGIN}\necho half\n", 0o755, "without its"),
    ],
)
def test_hooks_that_cannot_take_our_block_are_refused_and_left_alone(
    repo: Path, settings: Settings, content: str, mode: int, message: str
) -> None:
    hooks_dir = locate_repo(str(repo), settings).hooks_dir
    (hooks_dir / "post-commit").write_text(content)
    (hooks_dir / "post-commit").chmod(mode)
    with pytest.raises(InputError, match=message):
        install(hooks_dir, "http://127.0.0.1:8000", sys.executable)
    assert (hooks_dir / "post-commit").read_text() == content


def test_bash_hooks_and_env_shebangs_take_the_block(repo: Path, settings: Settings) -> None:
    hooks_dir = locate_repo(str(repo), settings).hooks_dir
    (hooks_dir / "post-merge").write_text("#!/usr/bin/env bash\nset -euo pipefail\necho merged")
    (hooks_dir / "post-merge").chmod(0o755)
    install(hooks_dir, "http://127.0.0.1:8000", sys.executable)
    text = (hooks_dir / "post-merge").read_text()
    assert text.startswith(f"#!/usr/bin/env bash\n{BEGIN}\n") and text.endswith(
        "set -euo pipefail\necho merged"
    )
    assert subprocess.run(["bash", "-n", str(hooks_dir / "post-merge")]).returncode == 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("missing", "does not exist"),
        ("plain", "is not a git repository"),
        ("repo/sub", "is inside a git repository"),
        ("repo/.git", "is inside a git repository"),
        ("https://example.com/org/repo.git", "local repository"),
        ("/", "outside the allowed roots"),
    ],
)
def test_locate_repo_refuses_what_is_not_a_local_repository_top_level(
    repo: Path, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str, message: str
) -> None:
    (tmp_path / "plain").mkdir()
    (repo / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=message):
        locate_repo(spec, settings)


def test_locate_repo_ignores_git_variables_of_an_outer_hook(
    repo: Path, make_repo: Callable[..., Path], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = make_repo({"o.py": "o = 1\n"}, name="other")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    assert locate_repo(str(repo), settings).hooks_dir == repo / ".git" / "hooks"


def test_the_default_server_comes_from_the_serve_settings(tmp_path: Path) -> None:
    def url(host: str, port: int) -> str:
        return server_url(None, Settings(home=tmp_path, serve={"host": host, "port": port}))

    assert url("127.0.0.1", 8000) == "http://127.0.0.1:8000"
    assert url("0.0.0.0", 9001) == "http://127.0.0.1:9001"
    assert url("::1", 8000) == "http://[::1]:8000"
    settings = Settings(home=tmp_path)
    assert server_url("https://ci.example:9000/ff/", settings) == "https://ci.example:9000/ff"


@pytest.mark.parametrize(
    "server",
    [
        "ftp://host",
        "localhost:8000",
        "http://",
        "not a url",
        "http://h:99999",
        "http://h/?q=1",
        "http://u:p@h",
    ],
)
def test_a_server_that_is_not_an_http_url_is_refused(tmp_path: Path, server: str) -> None:
    with pytest.raises(InputError, match="--server"):
        server_url(server, Settings(home=tmp_path))


def test_the_rendered_hooks_are_valid_posix_shell(tmp_path: Path) -> None:
    hook = tmp_path / "post-receive"
    hook.write_text(render_post_receive("http://127.0.0.1:8000", "/opt/it's/python"))
    for shell in ("sh", "dash", "bash"):
        if subprocess.run(["sh", "-c", f"command -v {shell}"], capture_output=True).returncode == 0:
            assert subprocess.run([shell, "-n", str(hook)]).returncode == 0, shell
