"""resolve_repo: local paths confined to allowed roots, URLs limited to safe schemes, clones retried."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import git as gitpython
import pytest

from core.config import MonitorConfig
from core.errors import ForgeflowError, InputError
from core.repos.spec import _network_failure, git_options, parse_repo_spec, resolve_repo
from core.settings import Settings
from tests.helpers.gitrepo import commit, git


def _no_absolute_path(message: str, tmp_path: Path) -> None:
    assert str(tmp_path) not in message
    assert "\n" not in message


def test_local_repo_resolves_to_itself_with_a_stable_id(
    make_repo: Callable[..., Path], settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo({"a.py": "x = 1\n"}, name="My Repo")
    (tmp_path / "link").symlink_to(repo)
    monkeypatch.chdir(tmp_path)

    handle = resolve_repo(str(repo), settings)

    assert handle.path == repo.resolve()
    assert not handle.is_remote
    assert handle.display == "My Repo"  # relative to cwd, never absolute
    assert re.fullmatch(r"my-repo-[0-9a-f]{12}", handle.project_id)
    # The id follows the repository, not how its path was typed.
    assert resolve_repo("link", settings).project_id == handle.project_id
    assert resolve_repo("./My Repo/", settings).project_id == handle.project_id


def test_local_repo_outside_allowed_roots_is_refused(make_repo: Callable[..., Path], tmp_path: Path) -> None:
    repo = make_repo({"a.py": "x = 1\n"}, name="outside")
    settings = Settings(home=tmp_path / "ws", allowed_roots=[tmp_path / "allowed"])

    with pytest.raises(InputError, match="outside the allowed roots") as err:
        resolve_repo(str(repo), settings)
    _no_absolute_path(str(err.value).replace(str(repo), "<spec>"), tmp_path)


def test_symlink_out_of_allowed_root_is_refused(make_repo: Callable[..., Path], tmp_path: Path) -> None:
    repo = make_repo({"a.py": "x = 1\n"}, name="outside")
    (tmp_path / "allowed").mkdir()
    (tmp_path / "allowed" / "sneaky").symlink_to(repo)
    settings = Settings(home=tmp_path / "ws", allowed_roots=[tmp_path / "allowed"])

    with pytest.raises(InputError, match="outside the allowed roots"):
        resolve_repo(str(tmp_path / "allowed" / "sneaky"), settings)


def test_missing_path_is_refused(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="repository path 'nope' does not exist"):
        resolve_repo("nope", settings)


def test_plain_directory_is_not_a_git_repo(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="is not a git repository") as err:
        resolve_repo(str(tmp_path / "plain"), settings)
    assert str(err.value).startswith(f"'{tmp_path / 'plain'}'")  # the spec as typed, nothing more


def test_empty_repository_is_refused(make_repo: Callable[..., Path], settings: Settings) -> None:
    repo = make_repo(None, name="empty")
    with pytest.raises(InputError, match=r"repository '.*empty' has no commits yet"):
        resolve_repo(str(repo), settings)


def test_bare_repository_is_accepted(
    make_repo: Callable[..., Path], settings: Settings, tmp_path: Path
) -> None:
    repo = make_repo({"a.py": "x = 1\n"})
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(tmp_path / "bare.git"))
    handle = resolve_repo(str(tmp_path / "bare.git"), settings)
    assert handle.path == (tmp_path / "bare.git").resolve()
    assert handle.project_id.startswith("bare-")


def test_file_url_is_cloned_then_fetched(
    make_repo: Callable[..., Path], settings: Settings, tmp_path: Path
) -> None:
    origin = make_repo({"a.py": "x = 1\n"}, name="origin")
    url = (tmp_path / "origin").as_uri()

    first = resolve_repo(url, settings)

    assert first.is_remote and first.display == url
    assert first.path == settings.home / "repos" / first.project_id
    assert (first.path / "a.py").read_text() == "x = 1\n"
    assert [p.name for p in first.path.parent.iterdir()] == [first.project_id]  # no temp dir left

    second_sha = commit(origin, {"b.py": "y = 2\n"}, "Add b")
    git(origin, "tag", "v1.0.0")
    assert resolve_repo(url, settings, fetch=False).path == first.path  # no fetch: old state
    assert not (first.path / "b.py").exists()

    again = resolve_repo(url, settings)

    assert again == first
    assert git(again.path, "rev-parse", "HEAD") == second_sha
    assert (again.path / "b.py").exists()
    assert git(again.path, "tag", "--list") == "v1.0.0"


def test_file_url_outside_allowed_roots_is_refused(make_repo: Callable[..., Path], tmp_path: Path) -> None:
    make_repo({"a.py": "x = 1\n"}, name="origin")
    settings = Settings(home=tmp_path / "ws", allowed_roots=[tmp_path / "allowed"])
    with pytest.raises(InputError, match="outside the allowed roots"):
        resolve_repo((tmp_path / "origin").as_uri(), settings)
    assert not (tmp_path / "ws").exists()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ext::sh -c touch% /tmp/pwned", "remote helper"),
        ("fd::0", "remote helper"),
        ("-uhttps://example.com/x.git", "starts with '-'"),
        ("--upload-pack=touch pwned", "starts with '-'"),
        ("http://example.com/x.git", "scheme 'http' is not allowed"),
        ("ftp://example.com/x.git", "scheme 'ftp' is not allowed"),
        ("ext://example.com/x.git", "scheme 'ext' is not allowed"),
        ("https://example.com/x.git;touch pwned", "whitespace or shell characters"),
        ("https://example.com/$(id).git", "whitespace or shell characters"),
        ("https://example.com/x.git\n", "control characters"),
        ("ssh://-oProxyCommand=touch%20pwned/x.git", "invalid host"),
        ("git@-oProxyCommand=x:org/repo.git", "invalid host"),
        ("file://otherhost/srv/x.git", "names a host"),
    ],
)
def test_unsafe_or_disallowed_specs_are_refused_and_create_nothing(
    settings: Settings, tmp_path: Path, spec: str, message: str
) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        resolve_repo(spec, settings)
    assert not settings.home.exists()
    assert not (tmp_path / "pwned").exists()


def test_scp_like_address_counts_as_ssh(tmp_path: Path) -> None:
    https_only = Settings(home=tmp_path / "ws", allowed_roots=[tmp_path], allowed_url_schemes=["https"])
    with pytest.raises(InputError, match="scheme 'ssh' is not allowed"):
        resolve_repo("git@github.com:org/repo.git", https_only)

    settings = Settings(home=tmp_path / "ws", allowed_roots=[tmp_path])
    ids = {
        parse_repo_spec(spec, settings).project_id
        for spec in (
            "git@github.com:org/repo.git",
            "ssh://git@github.com/org/repo",
            "https://github.com/org/repo.git/",
            "https://token@GitHub.com:443/org/repo",
        )
    }
    assert len(ids) == 1 and ids.pop().startswith("repo-")


def test_credentials_never_reach_the_display(settings: Settings) -> None:
    parsed = parse_repo_spec("https://user:s3cret@example.com/org/repo.git", settings)
    assert parsed.display == "https://example.com/org/repo.git"
    assert parsed.url == "https://user:s3cret@example.com/org/repo.git"  # git still needs it


def test_network_failure_is_retried_with_exponential_backoff(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path / "ws",
        allowed_roots=[tmp_path],
        monitor=MonitorConfig(fetch_retries=2, fetch_backoff_seconds=0.5),
    )
    sleeps: list[float] = []

    with pytest.raises(ForgeflowError, match="after 3 attempt") as err:
        resolve_repo("https://127.0.0.1:1/x.git", settings, sleep=sleeps.append)

    assert not isinstance(err.value, InputError)  # the URL may be fine; the network was not
    assert sleeps == [0.5, 1.0]
    assert list((settings.home / "repos").iterdir()) == []  # failed clones leave nothing behind


def test_missing_repository_is_not_retried(settings: Settings, tmp_path: Path) -> None:
    sleeps: list[float] = []
    url = (tmp_path / "nonexistent-under-allowed-root").as_uri()

    with pytest.raises(InputError, match="was not found") as err:
        resolve_repo(url, settings, sleep=sleeps.append)

    assert sleeps == []
    assert list((settings.home / "repos").iterdir()) == []
    assert str(tmp_path) not in str(err.value).replace(url, "<url>")


def test_empty_remote_repository_is_refused_and_not_kept(
    make_repo: Callable[..., Path], settings: Settings, tmp_path: Path
) -> None:
    make_repo(None, name="empty-origin")
    with pytest.raises(InputError, match="has no commits yet"):
        resolve_repo((tmp_path / "empty-origin").as_uri(), settings)
    assert list((settings.home / "repos").iterdir()) == []


def test_git_itself_refuses_transports_not_allowed(make_repo: Callable[..., Path], tmp_path: Path) -> None:
    """Defence in depth: even a URL that slipped past parsing meets git's own protocol.allow."""
    make_repo({"a.py": "x = 1\n"}, name="origin")
    https_only = Settings(home=tmp_path / "ws", allowed_roots=[tmp_path], allowed_url_schemes=["https"])
    with pytest.raises(gitpython.GitCommandError, match="transport 'file' not allowed"):
        gitpython.Git(str(tmp_path))(**git_options(https_only)).clone(
            "--", (tmp_path / "origin").as_uri(), str(tmp_path / "copy")
        )


@pytest.mark.parametrize(
    ("stderr", "retried"),
    [
        ("fatal: unable to access 'https://h/x/': Could not resolve host: h", True),
        ("error: RPC failed; HTTP 503 curl 22 The requested URL returned error: 503", True),
        ("fetch-pack: unexpected disconnect while reading sideband packet\nfatal: early EOF", True),
        ("ssh: connect to host h port 22: Connection timed out", True),
        ("remote: Repository not found.\nfatal: repository 'https://h/x/' not found", False),
        ("fatal: Authentication failed for 'https://h/x/'", False),
        ("git@h: Permission denied (publickey).\nfatal: Could not read from remote repository.", False),
        ("fatal: unable to access 'https://h/x/': The requested URL returned error: 403", False),
        ("fatal: transport 'ftp' not allowed", False),
    ],
)
def test_only_network_like_failures_are_retried(stderr: str, retried: bool) -> None:
    assert (_network_failure(stderr) is not None) == retried
