"""Git hooks that ask a forgeflow API to retrain: render our block, add it to hooks, take it out again.

The block notifies `POST {server}/v1/retrain` from a detached subshell with a short timeout, so a
commit or merge never waits for the API nor fails when it is down. It lives between two marker lines
in the hook file: a user's own hook keeps its content, a second install replaces the block in place,
and uninstalling removes exactly those lines (and the file, when nothing but a shebang remains).
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from core.atomic import atomic_open
from core.errors import ForgeflowError, InputError
from core.repos.spec import parse_repo_spec
from core.settings import Settings

BEGIN = "# >>> forgeflow >>>"
END = "# <<< forgeflow <<<"
Trigger = Literal["post-commit", "post-merge", "post-receive"]
HOOKS: tuple[Trigger, ...] = ("post-commit", "post-merge")
TIMEOUT_S = 5.0  # the whole notification; the connection gets at most 2 s of it
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "busybox"})
# git's own variables would point `git -C PATH` at another repository (when run from inside a hook)
_GIT_LOCATION_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_PREFIX")
_URL_CHARS = re.compile(r"[\s\"'`\\<>^{}|]")

Installed = Literal["created", "added", "updated", "unchanged"]
Uninstalled = Literal["deleted", "removed", "absent"]

# The curl-less fallback, run by the Python that installed the hook (single-quoted: no ' inside).
_PY_NOTIFY = """
import json, os, signal, sys, urllib.request
url, trigger, path, timeout = sys.argv[1:5]
signal.alarm(int(float(timeout)) + 1)
body = json.dumps({"project_path": path, "auto_deploy": True, "trigger": trigger}).encode()
headers = {"Content-Type": "application/json"}
if os.environ.get("FORGEFLOW_API_KEY"):
    headers["Authorization"] = "Bearer " + os.environ["FORGEFLOW_API_KEY"]
request = urllib.request.Request(url, body, headers, method="POST")
urllib.request.urlopen(request, timeout=float(timeout)).close()
"""


@dataclass(frozen=True)
class HookTarget:
    """Where a repository's hooks go: `top` is its top-level directory (the git dir when bare)."""

    top: Path
    hooks_dir: Path
    bare: bool
    display: str


@dataclass(frozen=True)
class HookChange:
    """What an install or uninstall did to one hook file."""

    hook: str
    path: Path
    action: Installed | Uninstalled


@dataclass(frozen=True)
class HookState:
    """One hook file as it is: ours alone, ours inside the user's hook, the user's alone, or none."""

    hook: str
    path: Path
    state: Literal["ours", "ours+user", "user", "none"]
    server: str | None  # the URL our block notifies, when there is one


def locate_repo(spec: str, settings: Settings) -> HookTarget:
    """Validate `spec` like every `--repo` (allowed roots) and find the hooks directory git uses.

    `git rev-parse --git-path hooks` honours `core.hooksPath` and, in a linked worktree, names the
    hooks shared with the main one.

    Raises:
        InputError: a URL, a path outside the allowed roots, not a git repository, or not its top level.
    """
    parsed = parse_repo_spec(spec, settings)
    path = parsed.local_path
    if path is None:
        raise InputError(f"hooks go into a local repository, not '{parsed.display}': pass its path")
    if not path.exists():
        raise InputError(f"repository path '{spec}' does not exist: pass an existing repository's directory")
    if not path.is_dir():
        raise InputError(f"repository path '{spec}' is not a directory: pass the repository's directory")
    inside = f"'{spec}' is inside a git repository, not its top level: pass the top-level directory"
    try:
        bare = _git(path, "rev-parse", "--is-bare-repository") == "true"
    except subprocess.CalledProcessError:
        raise InputError(
            f"'{spec}' is not a git repository: pass the repository's top-level directory "
            "(or run 'git init' there)"
        ) from None
    try:
        top = Path(_git(path, "rev-parse", "--absolute-git-dir" if bare else "--show-toplevel"))
    except subprocess.CalledProcessError:  # a non-bare repository's git dir
        raise InputError(inside) from None
    if top.resolve() != path:
        raise InputError(inside)
    hooks = Path(_git(path, "rev-parse", "--git-path", "hooks")).expanduser()
    return HookTarget(path, (path / hooks).resolve(), bare, parsed.display)


def server_url(server: str | None, settings: Settings) -> str:
    """The API's base URL, without a trailing slash: `--server`, else `settings.api_url`.

    Raises:
        InputError: `server` is not an http(s) URL with a host.
    """
    if server is None:
        return settings.api_url
    bad = f"--server '{server}' is not an http(s) URL: use e.g. http://127.0.0.1:8000"
    if any(ord(c) < 32 or ord(c) == 127 for c in server) or _URL_CHARS.search(server):
        raise InputError(bad)
    parts = urlsplit(server)
    try:
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise InputError(bad) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise InputError(bad)
    if parts.username is not None or parts.password is not None:
        raise InputError(f"--server '{server}' holds credentials: pass the key as FORGEFLOW_API_KEY instead")
    return server.rstrip("/")


def render_block(trigger: Trigger, server: str, python: str, timeout_s: float = TIMEOUT_S) -> str:
    """Our lines for one hook, markers included: a detached notification that never fails the hook.

    The hook notifies with the directory git runs it in (the top level; the git dir for pushes),
    `FORGEFLOW_API_KEY` from the environment as a bearer token (given to curl on stdin, never in
    its arguments), with curl when present, else `python` (urllib).
    """
    url = f"{server}/v1/retrain"
    connect = min(2.0, timeout_s)
    escape = r"""sed 's/\\/\\\\/g; s/"/\\"/g'"""  # a JSON (and curl config) string's two special characters
    lines = [
        BEGIN,
        "# Added by `forgeflow hooks install`; `forgeflow hooks uninstall` removes this block.",
        "# Asks the forgeflow API to retrain this repository, detached: never blocks nor fails git.",
        "(",
        f"  ff_url={shlex.quote(url)}",
        f"  ff_trigger={shlex.quote(trigger)}",
        f"  ff_python={shlex.quote(python)}",
        "  ff_path=$(pwd -P)",
        "  if command -v curl >/dev/null 2>&1; then",
        f'    ff_json=$(printf "%s" "$ff_path" | {escape})',
        '    ff_body="{\\"project_path\\": \\"$ff_json\\", \\"auto_deploy\\": true, \\"trigger\\": '
        '\\"$ff_trigger\\"}"',
        '    if [ -n "${FORGEFLOW_API_KEY:-}" ]; then',
        f'      ff_key=$(printf "%s" "$FORGEFLOW_API_KEY" | {escape})',
        '      printf \'header = "Authorization: Bearer %s"\\n\' "$ff_key"',
        "    fi | curl -q -s -o /dev/null -K - -X POST -H 'Content-Type: application/json' \\",
        f'      --connect-timeout {connect:g} --max-time {timeout_s:g} --data-binary "$ff_body" "$ff_url"',
        '  elif [ -x "$ff_python" ]; then',
        # -I: isolated, so nothing in the repository (a json/ or urllib/ of its own) shadows the stdlib
        f'    "$ff_python" -I -c \'{_PY_NOTIFY}\' "$ff_url" "$ff_trigger" "$ff_path" {timeout_s:g}',
        "  fi",
        ") </dev/null >/dev/null 2>&1 &",
        END,
    ]
    return "\n".join(lines) + "\n"


def render_post_receive(server: str, python: str, timeout_s: float = TIMEOUT_S) -> str:
    """A whole `post-receive` hook for a bare server repository: notifies with the pushed repo's path."""
    return "#!/bin/sh\n" + render_block("post-receive", server, python, timeout_s)


def install(
    hooks_dir: Path,
    server: str,
    python: str,
    hooks: tuple[Trigger, ...] = HOOKS,
    timeout_s: float = TIMEOUT_S,
) -> list[HookChange]:
    """Add (or refresh) our block in each hook, keeping whatever else the file holds.

    Raises:
        InputError: a hook that is not a shell script, not executable, or has a broken block.
        ForgeflowError: a hook file could not be written.
    """
    changes = []
    for hook in hooks:
        path = hooks_dir / hook
        block = render_block(hook, server, python, timeout_s)
        old = _read(path, hook)
        action: Installed
        if old is None:
            new, action, mode = "#!/bin/sh\n" + block, "created", 0o755
        else:
            _check_can_host(path, hook, old)
            lines = old.splitlines(keepends=True)
            spans = _blocks(lines, hook)
            at = spans[0][0] if spans else 1 if lines[0].startswith("#!") else 0
            lines = _without(lines, spans)
            if at and not lines[at - 1].endswith("\n"):
                lines[at - 1] += "\n"
            new = "".join(lines[:at]) + block + "".join(lines[at:])
            action = "added" if not spans else "unchanged" if new == old else "updated"
            mode = stat.S_IMODE(path.stat().st_mode)
        if new != old:
            _write(path, new, mode, hook)
        changes.append(HookChange(hook, path, action))
    return changes


def uninstall(hooks_dir: Path, hooks: tuple[Trigger, ...] = HOOKS) -> list[HookChange]:
    """Take our block out of each hook; delete a file that then holds nothing but a shebang.

    Raises:
        InputError: a hook with a begin marker but no end marker.
        ForgeflowError: a hook file could not be written or removed.
    """
    changes = []
    for hook in hooks:
        path = hooks_dir / hook
        old = _read(path, hook)
        spans = _blocks(old.splitlines(keepends=True), hook) if old is not None else []
        if old is None or not spans:
            changes.append(HookChange(hook, path, "absent"))
            continue
        rest = "".join(_without(old.splitlines(keepends=True), spans))
        if _only_shebang(rest) and not path.is_symlink():
            try:
                path.unlink()
            except OSError as exc:
                raise ForgeflowError(f"could not remove hook {hook}: {exc.strerror}") from None
            changes.append(HookChange(hook, path, "deleted"))
        else:
            _write(path, rest, stat.S_IMODE(path.stat().st_mode), hook)
            changes.append(HookChange(hook, path, "removed"))
    return changes


def hook_states(hooks_dir: Path, hooks: tuple[Trigger, ...] = HOOKS) -> list[HookState]:
    """What each hook holds now."""
    states = []
    for hook in hooks:
        path = hooks_dir / hook
        text = _read(path, hook)
        if text is None:
            states.append(HookState(hook, path, "none", None))
            continue
        lines = text.splitlines(keepends=True)
        spans = _blocks(lines, hook)
        if not spans:
            states.append(HookState(hook, path, "user", None))
            continue
        ours = "".join(lines[spans[0][0] : spans[0][1]])
        found = re.search(r"^\s*ff_url=(.*)$", ours, re.MULTILINE)
        url = shlex.split(found[1])[0].removesuffix("/v1/retrain") if found else None
        rest = "".join(_without(lines, spans))
        states.append(HookState(hook, path, "ours" if _only_shebang(rest) else "ours+user", url))
    return states


def _git(cwd: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION_ENV}
    try:
        proc = subprocess.run(
            ["git", "-C", str(cwd), *args], capture_output=True, text=True, env=env, check=True, timeout=30
        )
    except FileNotFoundError:
        raise ForgeflowError("git is not installed (or not on PATH): install git, then retry") from None
    return proc.stdout.strip()


def _read(path: Path, hook: str) -> str | None:
    """The hook's text; None when there is no hook (or an empty file)."""
    if path.is_symlink() and not path.exists():
        raise InputError(f"hook {hook} is a dangling symlink: remove it or point it at a file")
    if not path.exists():
        return None
    if not path.is_file():
        raise InputError(f"hook {hook} is not a regular file: remove it, then retry")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"hook {hook} is not a text file: leave it be, or remove it") from None
    except OSError as exc:
        raise ForgeflowError(f"could not read hook {hook}: {exc.strerror}") from None
    return text or None


def _check_can_host(path: Path, hook: str, text: str) -> None:
    """A user's hook takes our shell lines only when it is an executable shell script."""
    first = text.splitlines()[0] if text else ""
    if first.startswith("#!"):
        words = first[2:].split()
        interpreter = Path(words[0]).name if words else ""
        if interpreter == "env":
            interpreter = next((Path(w).name for w in words[1:] if not w.startswith("-")), "")
        if interpreter not in _SHELLS:
            raise InputError(
                f"hook {hook} is a {interpreter or 'non-shell'} script: make it a shell script "
                "(or have it notify the forgeflow API itself)"
            )
    if not os.access(path, os.X_OK):
        raise InputError(f"hook {hook} exists but is not executable (git skips it): chmod +x it or remove it")


def _blocks(lines: list[str], hook: str) -> list[tuple[int, int]]:
    """(start, end) line ranges of our blocks, markers included (end exclusive)."""
    spans, start = [], None
    for i, line in enumerate(lines):
        if line.strip() == BEGIN and start is None:
            start = i
        elif line.strip() == END and start is not None:
            spans.append((start, i + 1))
            start = None
    if start is not None:
        raise InputError(f"hook {hook} has a '{BEGIN}' line without its '{END}': fix or remove it")
    return spans


def _without(lines: list[str], spans: list[tuple[int, int]]) -> list[str]:
    drop = {i for start, end in spans for i in range(start, end)}
    return [line for i, line in enumerate(lines) if i not in drop]


def _only_shebang(text: str) -> bool:
    rest = [line for line in text.splitlines() if line.strip()]
    return not rest or (len(rest) == 1 and rest[0].startswith("#!"))


def _write(path: Path, text: str, mode: int, hook: str) -> None:
    """Atomically replace the hook (through a symlink: its target), keeping `mode`."""
    target = path.resolve() if path.is_symlink() else path
    try:
        with atomic_open(target) as fh:
            fh.write(text)
            os.fchmod(fh.fileno(), mode)
    except OSError as exc:
        raise ForgeflowError(f"could not write hook {hook}: {exc.strerror}") from None
