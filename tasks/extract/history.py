"""Commits as (message, diff) pairs, read with one `git log` call."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

_SEP = "\x1e\x1fforgeflow-commit\x1f"
_DIFF_PATH = re.compile(r"^diff --git a/(.+?) b/(.+)$", re.M)
# Messages that say nothing about the change teach the model nothing.
_UNINFORMATIVE = re.compile(
    r"^(wip|fix(es)?|update[sd]?|changes?|misc|typo|tmp|test|initial commit|\.+)\W*$", re.I
)


@dataclass(frozen=True, slots=True)
class Commit:
    sha: str
    message: str
    diff: str
    paths: tuple[str, ...]


def list_commits(repo: Path, rev: str, limit: int) -> list[str]:
    """Non-merge commit SHAs reachable from `rev`, newest first, at most `limit`."""
    if limit <= 0:
        return []
    out = _git(repo, "rev-list", "--no-merges", f"--max-count={limit}", rev)
    return out.split()


def read_commits(repo: Path, shas: list[str]) -> list[Commit]:
    """Message and patch of each commit, in one process (`git log --no-walk --stdin`)."""
    if not shas:
        return []
    out = _git(
        repo,
        "log",
        "--no-walk=unsorted",
        "--stdin",
        "-p",
        "--no-color",
        "--no-ext-diff",
        "--no-renames",
        "--unified=3",
        f"--format={_SEP}%H%n%B{_SEP}",
        stdin="\n".join(shas) + "\n",
    )
    commits = []
    parts = out.split(_SEP)
    # layout: "", sha\nmessage, diff, sha\nmessage, diff, ...
    for i in range(1, len(parts) - 1, 2):
        head, diff = parts[i], parts[i + 1].strip("\n")
        sha, _, message = head.partition("\n")
        paths = tuple(sorted({m.group(2) for m in _DIFF_PATH.finditer(diff)}))
        commits.append(Commit(sha.strip(), message.strip(), diff, paths))
    return commits


def is_informative(message: str, min_chars: int) -> bool:
    """Whether a commit message is worth learning from."""
    subject = message.strip().split("\n", 1)[0]
    return len(message.strip()) >= min_chars and not _UNINFORMATIVE.match(subject)


def _git(repo: Path, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), *args],
        input=stdin.encode() if stdin else None,
        capture_output=True,
        check=True,
    )
    return proc.stdout.decode("utf-8", errors="replace")
