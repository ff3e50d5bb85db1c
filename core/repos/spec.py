"""Turn a user's `--repo PATH_OR_URL` into a local git repository, refusing anything unsafe."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import git

from core.errors import ForgeflowError, InputError, PathNotAllowed
from core.paths import display as display_path
from core.settings import Settings

logger = logging.getLogger(__name__)

# `transport::address` hands the URL to a remote helper (`ext::` runs any command): never allowed.
_HELPER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+.-]*::")
_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# git's rule: a colon before the first slash makes `[user@]host:path` an scp-like ssh address.
_SCP_RE = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>[^@/:]+):(?P<path>.*)$")
_SHELL_CHARS = frozenset(";&|`$<>(){}'\"\\!*?")
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9._-]*|[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*)$")  # name or IPv6
_SCHEME_ALIASES = {"git+ssh": "ssh", "ssh+git": "ssh"}
_DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22, "git": 9418}
_HTTP_STATUS_RE = re.compile(r"(?:returned error:|\bhttp)\s*(\d{3})\b", re.IGNORECASE)
# Phrases in git's stderr that tell a lasting failure (never retried) from a passing one (retried).
_NOT_FOUND_RE = re.compile(
    r"not found|does not appear to be a git repository|does not exist|not exported", re.I
)
_AUTH_RE = re.compile(
    r"authentication failed|permission denied|could not read (?:username|password)|terminal prompts "
    r"disabled|access denied|host key verification failed",
    re.I,
)
_NETWORK_RE = re.compile(
    r"connection refused|connection reset|timed out|could not resolve host|temporary failure in name "
    r"resolution|early eof|unexpected disconnect|hung up|failed to connect|couldn't connect|network is "
    r"unreachable|no route to host|operation too slow|transfer closed|recv failure|broken pipe|"
    r"did not complete in|ssl_read|gnutls",
    re.I,
)


@dataclass(frozen=True)
class RepoHandle:
    """A repository ready to read: a local working copy (for URLs, our clone in the workspace)."""

    path: Path
    project_id: str
    display: str
    is_remote: bool


@dataclass(frozen=True)
class RepoSpec:
    """A validated `--repo` value, before anything touches the disk or network."""

    project_id: str
    display: str
    url: str | None  # what git is given; None for a local path
    local_path: Path | None  # the resolved directory; None for a URL
    scheme: str | None


def parse_repo_spec(spec: str, settings: Settings) -> RepoSpec:
    """Validate `spec` as a local path or an allowed git URL; no disk or network access besides resolving.

    Raises:
        InputError: the spec is unsafe, uses a scheme not allowed, or lies outside the allowed roots.
    """
    if not spec or spec != spec.strip() or any(ord(c) < 32 or ord(c) == 127 for c in spec):
        raise InputError(f"repository {spec!r} has surrounding whitespace or control characters: remove them")
    if spec.startswith("-"):
        raise InputError(f"repository '{spec}' starts with '-': pass a path (./{spec}) or a URL")
    if _HELPER_RE.match(spec):
        raise InputError(
            f"repository '{spec}' uses a git remote helper (transport::address): "
            f"use a {_allowed(settings)} URL"
        )
    if not _URL_RE.match(spec) and not _SCP_RE.match(spec):
        path = _confined_path(Path(spec).expanduser(), spec, settings)
        return RepoSpec(
            _project_id(path.name, str(path)), display_path(path, fallback=spec), None, path, None
        )
    if any(c.isspace() or c in _SHELL_CHARS for c in spec):
        raise InputError(f"repository URL '{spec}' contains whitespace or shell characters: check the URL")
    url_match = _URL_RE.match(spec)
    if url_match is None:  # scp-like `git@host:org/repo.git`
        scp = _SCP_RE.match(spec)
        assert scp is not None
        user, host, repo_path, port = scp["user"], scp["host"], scp["path"], None
        scheme, display = "ssh", spec
    else:
        scheme = url_match[1].lower()
        scheme = _SCHEME_ALIASES.get(scheme, scheme)
        parts = urlsplit(spec)
        try:
            user, host, port = parts.username, parts.hostname or "", parts.port
        except ValueError:
            raise InputError(f"repository URL '{spec}' has an invalid port: check the URL") from None
        repo_path = unquote(parts.path)
        # Tokens in https URLs must never reach logs or messages: show the URL without userinfo.
        keep_user = f"{user}@" if user and scheme == "ssh" else ""
        display = parts._replace(netloc=keep_user + parts.netloc.rpartition("@")[2]).geturl()
    if scheme not in settings.allowed_url_schemes:
        raise InputError(f"repository URL scheme '{scheme}' is not allowed: use {_allowed(settings)}")
    if scheme == "file":
        if host not in ("", "localhost"):
            raise InputError(f"file URL '{spec}' names a host: use file:///path/to/repo")
        path = _confined_path(Path(repo_path), spec, settings)
        return RepoSpec(_project_id(path.name, str(path)), display, path.as_uri(), None, scheme)
    if (
        (user or "").startswith("-")
        or not _HOST_RE.match(host or "-")
        or repo_path.lstrip("/").startswith("-")
    ):
        raise InputError(f"repository URL '{spec}' has an invalid host, user or path: check the URL")
    name_path = repo_path.strip("/").removesuffix(".git").strip("/")
    port_part = f":{port}" if port and port != _DEFAULT_PORTS.get(scheme) else ""
    # Keyed on host+path, not scheme: the same repo over https or ssh is the same project.
    key = f"{host.lower()}{port_part}/{name_path}"
    return RepoSpec(_project_id(name_path.rpartition("/")[2] or host, key), display, spec, None, scheme)


def resolve_repo(
    spec: str, settings: Settings, *, fetch: bool = True, sleep: Callable[[float], None] = time.sleep
) -> RepoHandle:
    """Validate `spec` and return a local repository: the directory itself, or a clone for URLs.

    Args:
        fetch: for a URL already cloned, fetch and update the clone (a first clone always happens).
        sleep: how to wait between retries of network failures (tests pass a recorder).

    Raises:
        InputError: bad path, URL, scheme, missing or empty repository, authentication failure.
        ForgeflowError: the network stayed unreachable after `settings.monitor.fetch_retries` retries.
    """
    parsed = parse_repo_spec(spec, settings)
    if parsed.local_path is not None:
        _open_local(parsed.local_path, spec)
        return RepoHandle(parsed.local_path, parsed.project_id, parsed.display, is_remote=False)
    assert parsed.url is not None
    dest = settings.home / "repos" / parsed.project_id
    if _is_repo(dest):
        if fetch:
            _with_retries(
                lambda: _update_clone(dest, parsed, settings), "fetch", parsed.display, settings, sleep
            )
    else:
        if dest.exists():  # a broken leftover of ours (the dir is named by our own id): start over
            shutil.rmtree(dest)
        _with_retries(lambda: _clone(dest, parsed, settings), "clone", parsed.display, settings, sleep)
    return RepoHandle(dest, parsed.project_id, parsed.display, is_remote=True)


def git_options(settings: Settings) -> dict[str, list[str]]:
    """`-c` options that let git itself use only the allowed transports (pass as `repo.git(**opts)`)."""
    allow = [f"protocol.{s}.allow=always" for s in settings.allowed_url_schemes]
    # A stalled https transfer (< 1 KB/s for a minute) fails instead of hanging the worker.
    return {"c": ["protocol.allow=never", *allow, "http.lowSpeedLimit=1000", "http.lowSpeedTime=60"]}


_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0"}  # never wait for a password nobody will type


def _clone(dest: Path, parsed: RepoSpec, settings: Settings) -> None:
    """Clone into a temp dir beside `dest`, then rename: a failed clone leaves nothing half-written."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{parsed.project_id}.", suffix=".tmp", dir=dest.parent))
    try:
        git.Git(str(dest.parent))(**git_options(settings)).clone(
            "--no-recurse-submodules",
            "--",
            parsed.url,
            str(tmp),
            env=_GIT_ENV,
            kill_after_timeout=settings.monitor.fetch_timeout_seconds,
        )
        with git.Repo(tmp) as repo:
            if not repo.head.is_valid():
                raise InputError(
                    f"repository '{parsed.display}' has no commits yet: push a commit, then retry"
                )
        try:
            os.rename(tmp, dest)
        except OSError:
            if not _is_repo(dest):  # only a concurrent clone that won the race is acceptable
                raise
            logger.info("another process cloned %s first; using its clone", parsed.display)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _update_clone(dest: Path, parsed: RepoSpec, settings: Settings) -> None:
    """Fetch branches and tags (moved tags included) and move the work tree to the remote's HEAD."""
    timeout = settings.monitor.fetch_timeout_seconds
    with git.Repo(dest) as repo:
        repo.git(**git_options(settings)).fetch(
            "--prune", "--tags", "--force", "origin", env=_GIT_ENV, kill_after_timeout=timeout
        )
        try:
            repo.git.rev_parse("--verify", "--quiet", "refs/remotes/origin/HEAD")
        except git.GitCommandError:  # the remote's default branch was renamed or deleted
            repo.git(**git_options(settings)).remote(
                "set-head", "origin", "--auto", env=_GIT_ENV, kill_after_timeout=timeout
            )
        # The clone is ours alone, so discarding local state is safe.
        repo.git.reset("--hard", "--quiet", "refs/remotes/origin/HEAD")


def _with_retries(
    op: Callable[[], None], what: str, display: str, settings: Settings, sleep: Callable[[float], None]
) -> None:
    """Run `op`, retrying with exponential backoff only when git's failure looks like the network."""
    attempts = settings.monitor.fetch_retries + 1
    for attempt in range(1, attempts + 1):
        try:
            op()
            return
        except git.GitCommandError as exc:
            stderr = str(exc.stderr or "")
            # Only a matched phrase is shown, never git's raw line: it may hold paths or a token URL.
            network = _network_failure(stderr)
            if network is None:
                raise _permanent_error(stderr, what, display, exc.status) from exc
            if attempt == attempts:
                raise ForgeflowError(
                    f"could not {what} '{display}' after {attempts} attempt(s): {network}; "
                    "check the connection and the URL, then retry"
                ) from exc
            delay = settings.monitor.fetch_backoff_seconds * 2 ** (attempt - 1)
            logger.warning(
                "%s of %s failed (%s); retry %d/%d in %.1fs",
                what,
                display,
                network,
                attempt,
                attempts - 1,
                delay,
            )
            sleep(delay)


def _network_failure(stderr: str) -> str | None:
    """What went wrong when git's failure looks transient (worth a retry); None when it does not."""
    status = _HTTP_STATUS_RE.search(stderr)
    if status:  # 5xx is the server's trouble and may pass; 4xx will not
        return f"HTTP {status[1]}" if status[1].startswith("5") else None
    if _NOT_FOUND_RE.search(stderr) or _AUTH_RE.search(stderr):  # first: these also print "hung up"
        return None
    network = _NETWORK_RE.search(stderr)
    return network[0].lower() if network else None


def _permanent_error(stderr: str, what: str, display: str, status: object) -> ForgeflowError:
    http = _HTTP_STATUS_RE.search(stderr)
    if _AUTH_RE.search(stderr) or (http and http[1] in ("401", "403")):
        return InputError(
            f"authentication to '{display}' failed: set up a git credential helper or SSH key "
            "for it (prompts are disabled)"
        )
    if _NOT_FOUND_RE.search(stderr) or (http and http[1] == "404"):
        return InputError(f"repository '{display}' was not found (or you lack access): check the URL")
    if http:
        return InputError(f"'{display}' refused the request (HTTP {http[1]}): check the URL and your access")
    if re.search(r"not allowed|unsupported|remote helper", stderr, re.I):
        return InputError(f"git refused the transport of '{display}': check the URL")
    logger.error("git %s of %s failed: %s", what, display, stderr.strip())
    return ForgeflowError(f"git {what} of '{display}' failed (exit {status}): see the log for git's message")


def _confined_path(path: Path, spec: str, settings: Settings) -> Path:
    """Resolve symlinks, then require the result under an allowed root (checked before existence)."""
    resolved = path.resolve()
    if not any(resolved.is_relative_to(root) for root in settings.allowed_roots):
        raise PathNotAllowed(
            f"repository '{spec}' is outside the allowed roots: move it under one, or add "
            "its parent to allowed_roots (FORGEFLOW_ALLOWED_ROOTS)"
        )
    return resolved


def _open_local(path: Path, spec: str) -> None:
    if not path.exists():
        raise InputError(f"repository path '{spec}' does not exist: pass an existing directory or a git URL")
    if not path.is_dir():
        raise InputError(f"repository path '{spec}' is not a directory: pass the repository's directory")
    try:
        repo = git.Repo(path)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise InputError(
            f"'{spec}' is not a git repository: pass the repository's top-level directory "
            "(or run 'git init' and commit there)"
        ) from None
    with repo:
        if not repo.head.is_valid():
            raise InputError(f"repository '{spec}' has no commits yet: commit something first, then retry")


def _is_repo(path: Path) -> bool:
    if not path.is_dir():
        return False
    with contextlib.suppress(git.InvalidGitRepositoryError, git.NoSuchPathError), git.Repo(path) as repo:
        return repo.head.is_valid()
    return False


def _project_id(name: str, key: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower().removesuffix(".git")).strip("-.")[:40] or "repo"
    return f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _allowed(settings: Settings) -> str:
    return " or ".join(settings.allowed_url_schemes) or "no"


def head_commit(repo: Path) -> str | None:
    """The SHA `HEAD` of a local repository names; None when git cannot tell (no commit, not a repo)."""
    proc = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None
