"""Should we retrain? Compare a repository's HEAD with the commit the current model was trained on."""

from __future__ import annotations

import fnmatch
import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import git
from prefect import task
from prefect.cache_policies import NO_CACHE

from core.atomic import write_json
from core.config import MonitorConfig
from core.errors import ForgeflowError, InputError
from core.reports import MonitorMetrics, MonitorReport
from core.repos.spec import RepoHandle, resolve_repo
from core.settings import Settings

logger = logging.getLogger(__name__)

_SHA_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
# Refs and shas only: a leading '-' would be read by git as an option.
_REV_RE = re.compile(r"^[A-Za-z0-9._/@^~{}][A-Za-z0-9._/@^~{}-]*$")


def state_path(handle: RepoHandle, settings: Settings) -> Path:
    """Where the project's retraining marker lives."""
    return settings.projects_dir / handle.project_id / "state.json"


def last_trained_commit(handle: RepoHandle, settings: Settings) -> str | None:
    """The commit the current model was trained on, or None before any training."""
    return _load_state(handle, settings).get("last_trained_commit")


def mark_trained(handle: RepoHandle, commit: str, settings: Settings) -> str:
    """Record that a model was trained on `commit` (a sha or ref); returns its full sha.

    Raises:
        InputError: `commit` does not name a commit of the repository.
    """
    with git.Repo(handle.path) as repo:
        sha = _rev_parse(repo, commit, handle)
        tags = _release_tags(repo, settings.monitor.release_tag_patterns)
    write_json(
        state_path(handle, settings),
        {
            "project_id": handle.project_id,
            "repo": handle.display,
            "last_trained_commit": sha,
            "trained_at": datetime.now(UTC).isoformat(),
            "tags": tags,  # lineage: the release tags at training time and the commits they named
        },
    )
    logger.info("marked %s as trained at %s", handle.display, sha[:12])
    return sha


def check_repo(handle: RepoHandle, settings: Settings, *, now: datetime | None = None) -> MonitorReport:
    """Measure what changed since the last trained commit and decide whether to retrain."""
    checked_at = _utc(now or datetime.now(UTC))
    cfg = settings.monitor
    last = last_trained_commit(handle, settings)
    with git.Repo(handle.path) as repo:
        if not repo.head.is_valid():
            raise InputError(f"repository '{handle.display}' has no commits yet: commit something first")
        head = repo.head.commit.hexsha
        if head == last:
            metrics = MonitorMetrics(
                commits_since_last_train=0,
                files_changed=0,
                lines_changed=0,
                critical_paths_changed=False,
                head_commit=head,
                last_trained_commit=last,
            )
            return MonitorReport(
                should_retrain=False,
                reason=f"up to date: HEAD {head[:12]} is the last trained commit",
                metrics=metrics,
                checked_at=checked_at,
            )
        base, note = _window(repo, last)
        commits = int(repo.git.rev_list("--count", f"{base}..HEAD" if base else "HEAD"))
        files, lines, paths = _diffstat(repo, base)
        tags = _new_release_tags(repo, base, cfg.release_tag_patterns)
    critical = _critical(paths, cfg.critical_paths)
    metrics = MonitorMetrics(
        commits_since_last_train=commits, files_changed=files, lines_changed=lines,
        critical_paths_changed=bool(critical), critical_paths=critical, new_release_tags=tags,
        head_commit=head, last_trained_commit=last,
    )  # fmt: skip
    fired = _fired_rules(metrics, cfg)
    reason = "; ".join(fired) if fired else "no retraining needed: " + _summary(metrics, cfg)
    report = MonitorReport(
        should_retrain=bool(fired),
        reason=f"{reason}; {note}" if note else reason,
        metrics=metrics,
        checked_at=checked_at,
    )
    logger.info("%s: %s", handle.display, report.reason)
    return report


# Retries live inside resolve_repo, not on this task: only there is git's failure classified, so
# a network error is retried with backoff while "not found" or bad credentials fail at once (a
# Prefect-level retry would repeat those too, and re-run the cheap local diff for nothing).
# NO_CACHE: the answer depends on the repository's state, which the inputs do not capture.
def monitor_decision(spec: str, settings: Settings) -> MonitorReport:
    """The monitor's decision for a repo spec (path or URL): resolve it, then `check_repo`."""
    return check_repo(resolve_repo(spec, settings), settings)


@task(name="resolve-repo", retries=0, cache_policy=NO_CACHE)
def resolve_repo_task(spec: str, settings: Settings) -> RepoHandle:
    """Clone or fetch `spec` into the workspace (network retries live inside resolve_repo)."""
    return resolve_repo(spec, settings)


@task(name="check-repo", retries=0, cache_policy=NO_CACHE)
def check_repo_task(handle: RepoHandle, settings: Settings) -> MonitorReport:
    """Report whether the repository changed enough since the last training to retrain."""
    return check_repo(handle, settings)


@task(name="monitor-repo", retries=0, cache_policy=NO_CACHE)
def monitor_repo_task(spec: str, settings: Settings) -> MonitorReport:
    """Resolve (clone or fetch) the repository `spec` and report whether to retrain."""
    return check_repo(resolve_repo(spec, settings), settings)


def _window(repo: git.Repo, last: str | None) -> tuple[str | None, str | None]:
    """The base to compare HEAD with (None: the empty tree) and a note for the reason, if any."""
    if last is None:
        return None, None
    if not _commit_exists(repo, last):
        gone = f"last trained commit {last[:12]} no longer exists (history rewritten?)"
        return None, f"{gone}: compared since the beginning"
    try:
        repo.git.merge_base("--is-ancestor", last, "HEAD")
    except git.GitCommandError:
        # Still present but off HEAD's history (force-push, branch switch): its content remains the
        # fairest baseline, so compare against it and say so.
        return last, f"HEAD does not descend from last trained commit {last[:12]} (history rewritten?)"
    return last, None


def _diffstat(repo: git.Repo, base: str | None) -> tuple[int, int, list[str]]:
    """Files and lines changed from `base` (or the empty tree) to HEAD, and every path touched."""
    base = base or repo.git.hash_object("-t", "tree", "/dev/null")  # the empty tree in this repo's hash
    out = repo.git.diff("--numstat", "-z", "-M", "--no-textconv", "--no-ext-diff", base, "HEAD", "--")
    tokens = out.split("\0")
    files = lines = 0
    paths: list[str] = []
    i = 0
    while i < len(tokens):
        record, i = tokens[i], i + 1
        if not record:
            continue
        added, deleted, path = record.split("\t", 2)
        if not path:  # a rename: "A\tD\t\0old\0new"; both names count as touched
            paths += tokens[i : i + 2]
            i += 2
        else:
            paths.append(path)
        files += 1
        # Binary files show "-": they count as a changed file with no lines.
        lines += sum(int(n) for n in (added, deleted) if n != "-")
    return files, lines, paths


def _new_release_tags(repo: git.Repo, base: str | None, patterns: list[str]) -> list[str]:
    """Release tags whose commit is reachable from HEAD but not from the last trained commit."""
    args = ["--merged", "HEAD", *(["--no-merged", base] if base else []), "--sort=v:refname"]
    names = repo.git.tag("--list", *args, "--format=%(refname:strip=2)").splitlines()
    # Tag patterns match whole names, '*' crossing '/', like `git tag --list`.
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def _release_tags(repo: git.Repo, patterns: list[str]) -> dict[str, str]:
    fmt = "%(refname:strip=2)\t%(if)%(*objectname)%(then)%(*objectname)%(else)%(objectname)%(end)"
    out = repo.git.for_each_ref("refs/tags", f"--format={fmt}")
    pairs = (line.split("\t", 1) for line in out.splitlines() if "\t" in line)
    return {name: sha for name, sha in pairs if any(fnmatch.fnmatchcase(name, p) for p in patterns)}


def _critical(paths: list[str], patterns: list[str]) -> list[str]:
    compiled = [_compile_glob(p) for p in patterns]
    return sorted({p for p in paths if any(rx.fullmatch(p) for rx in compiled)})


def _compile_glob(pattern: str) -> re.Pattern[str]:
    """fnmatch-style glob over repo-relative paths, anchored at the root.

    `*`, `?` and `[...]` stay within one directory; `**` crosses directories (`src/**/*.py` matches
    `src/a.py` and `src/a/b.py`); a bare name (`pyproject.toml`) matches at the root only; a trailing
    `/` means everything under that directory.
    """
    pat = pattern.strip().lstrip("/")
    pat = pat + "**" if pat.endswith("/") else pat
    out: list[str] = []
    i = 0
    while i < len(pat):
        if pat.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pat.startswith("**", i):
            out.append(".*")
            i += 2
        elif pat[i] in "*?":
            out.append("[^/]*" if pat[i] == "*" else "[^/]")
            i += 1
        elif pat[i] == "[" and (end := pat.find("]", i + 2)) != -1:
            body = pat[i + 1 : end].replace("\\", "\\\\")
            out.append("[^/" + body[1:] + "]" if body.startswith("!") else "[" + body + "]")
            i = end + 1
        else:
            out.append(re.escape(pat[i]))
            i += 1
    return re.compile("".join(out))


def _fired_rules(m: MonitorMetrics, cfg: MonitorConfig) -> list[str]:
    fired = []
    if m.commits_since_last_train >= cfg.min_commits:
        fired.append(
            f"{_n(m.commits_since_last_train, 'commit')} since the last training "
            f"(threshold: {cfg.min_commits})"
        )
    if m.files_changed >= cfg.min_files_changed:
        fired.append(f"{_n(m.files_changed, 'file')} changed (threshold: {cfg.min_files_changed})")
    if m.lines_changed >= cfg.min_lines_changed:
        fired.append(f"{_n(m.lines_changed, 'line')} changed (threshold: {cfg.min_lines_changed})")
    if m.critical_paths:
        shown = ", ".join(m.critical_paths[:5]) + (
            f" (+{len(m.critical_paths) - 5} more)" if len(m.critical_paths) > 5 else ""
        )
        fired.append(f"critical path changed: {shown}")
    if m.new_release_tags:
        many = len(m.new_release_tags) > 1
        fired.append(
            f"release tag{'s' if many else ''} {', '.join(m.new_release_tags)} "
            f"point{'' if many else 's'} at {'new commits' if many else 'a new commit'}"
        )
    return fired


def _summary(m: MonitorMetrics, cfg: MonitorConfig) -> str:
    return (
        f"{_n(m.commits_since_last_train, 'commit')} (threshold: {cfg.min_commits}), "
        f"{_n(m.files_changed, 'file')} (threshold: {cfg.min_files_changed}), "
        f"{_n(m.lines_changed, 'line')} (threshold: {cfg.min_lines_changed})"
    )


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _rev_parse(repo: git.Repo, rev: str, handle: RepoHandle) -> str:
    hint = f"commit '{rev}' was not found in repository '{handle.display}': pass a sha or ref that exists"
    if not _REV_RE.match(rev):
        raise InputError(hint)
    try:
        return str(repo.git.rev_parse("--verify", "--quiet", f"{rev}^{{commit}}"))
    except git.GitCommandError:
        raise InputError(hint) from None


def _commit_exists(repo: git.Repo, sha: str) -> bool:
    try:
        repo.git.cat_file("-e", f"{sha}^{{commit}}")
    except git.GitCommandError:
        return False
    return True


def _load_state(handle: RepoHandle, settings: Settings) -> dict[str, Any]:
    path = state_path(handle, settings)
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ForgeflowError(
            f"state of project {handle.project_id} is unreadable ({type(exc).__name__}): "
            f"delete projects/{handle.project_id}/state.json in the workspace to start over"
        ) from exc
    last = state.get("last_trained_commit") if isinstance(state, dict) else None
    if last is not None and not (isinstance(last, str) and _SHA_RE.match(last)):
        raise ForgeflowError(
            f"state of project {handle.project_id} holds an invalid commit: delete "
            f"projects/{handle.project_id}/state.json in the workspace to start over"
        )
    return state if isinstance(state, dict) else {}


def _utc(moment: datetime) -> datetime:
    # A naive time is taken as UTC rather than the host's zone: reports must compare across hosts.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
