"""Build or refresh a project's repo index (`core.index`) at a commit, with extraction's parsers.

Files are classified exactly as extraction classifies them (languages, skipped dirs, .gitignore,
size) and parsed by the same parsers; each file's entries are cached by blob SHA in extraction's
cache, so a refresh after a one-file commit parses one file and copies the rest of the index.
"""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path

from prefect import task

from core.config import ExtractConfig
from core.index import FileEntries, IndexUnavailable, RepoIndex, index_path, write_index
from core.index.store import Entry
from core.reports import IndexReport
from core.repos.spec import resolve_repo
from core.settings import Settings
from tasks.extract import docs, python_ast
from tasks.extract.blobs import BlobReader
from tasks.extract.cache import ResultCache
from tasks.extract.files import classify, content_skip_reason, ignore_matcher, list_tree, resolve_commit
from tasks.extract.secrets import SecretScanner
from tasks.extract.treesitter import languages as treesitter

log = logging.getLogger(__name__)
INDEX_PARSER_VERSION = "2"  # bump when what a file's entries hold changes
MAX_BODY_CHARS = 4000  # a definition's code kept for context (the renderer trims further)


def build_index(
    repo: Path,
    target: Path,
    cfg: ExtractConfig,
    cache_dir: Path,
    *,
    rev: str = "HEAD",
    display: str = "repository",
    full: bool = False,
    recent_commits: int = 200,
) -> IndexReport:
    """Bring the index at `target` to commit `rev` of `repo`: incrementally unless `full` or unreadable."""
    started = time.perf_counter()
    commit = resolve_commit(repo, rev, display)
    current: dict[str, tuple[str, str]] | None = None
    indexed_commit = ""
    if not full and target.is_file():
        try:
            with RepoIndex(target) as idx:
                current, indexed_commit = idx.file_blobs(), idx.commit
        except IndexUnavailable:
            current = None  # unreadable or another format: rebuilt from scratch
    if current is not None and indexed_commit == commit:
        return _report(target, commit, "current", 0, 0, 0, started)

    want = _sources(repo, commit, cfg)
    base = current or {}
    changed = {p: v for p, v in want.items() if base.get(p) != v}
    removed = [p for p in base if p not in want]
    cache = ResultCache(cache_dir / "extract.sqlite")
    try:
        keys = {p: _key(p, sha, lang) for p, (sha, lang) in changed.items()}
        cached = cache.get_many(list(keys.values()))
        todo = [p for p in changed if keys[p] not in cached]
        fresh: dict[str, dict[str, object]] = {}
        scanner = SecretScanner(cfg.entropy_threshold) if todo else None  # ~0.1 s to build: only when needed
        with BlobReader(repo) as blobs:
            for p, data in zip(todo, blobs.read_many([changed[p][0] for p in todo]), strict=True):
                assert scanner is not None
                fresh[keys[p]] = {"entries": _file_entries(p, changed[p][1], data, scanner)}
        cache.put_many(fresh.items())
        cached.update(fresh)
    finally:
        cache.close()
    files = [
        FileEntries(p, sha, lang, [Entry(**e) for e in cached[keys[p]]["entries"]])
        for p, (sha, lang) in sorted(changed.items())
    ]
    write_index(
        target,
        commit=commit,
        repo=display,
        files=files,
        removed=removed,
        commits=_commits(repo, commit, recent_commits, cfg, set(want)),
        base=target if current is not None else None,
    )
    mode = "built" if current is None else "refreshed"
    log.info(
        "index %s at %s: %d files changed (%d parsed), %d removed",
        mode,
        commit[:12],
        len(changed),
        len(todo),
        len(removed),
    )
    return _report(target, commit, mode, len(changed), len(todo), len(removed), started)


def _report(
    target: Path, commit: str, mode: str, changed: int, parsed: int, removed: int, started: float
) -> IndexReport:
    with RepoIndex(target) as idx:
        status = idx.status()
    return IndexReport(
        commit=commit,
        mode=mode,  # type: ignore[arg-type]
        files=status.files,
        entries=status.entries,
        by_kind=status.by_kind,
        changed_files=changed,
        parsed_files=parsed,
        removed_files=removed,
        elapsed_seconds=round(time.perf_counter() - started, 3),
    )


def _sources(repo: Path, commit: str, cfg: ExtractConfig) -> dict[str, tuple[str, str]]:
    """path → (blob SHA, language) of the files extraction would read at `commit`."""
    entries = list_tree(repo, commit)
    gitignores = [e for e in entries if e.path.rsplit("/", 1)[-1] == ".gitignore" and e.mode != "120000"]
    with BlobReader(repo) as blobs:
        contents = list(blobs.read_many([e.sha for e in gitignores]))
    ignored = ignore_matcher(dict(zip([e.path for e in gitignores], contents, strict=True)))
    out: dict[str, tuple[str, str]] = {}
    for e in entries:
        lang, _reason = classify(e, cfg, ignored)
        if lang:
            out[e.path] = (e.sha, lang)
    return out


def _key(path: str, sha: str, lang: str) -> str:
    return "\0".join(("index", INDEX_PARSER_VERSION, path, lang, sha))


def _file_entries(path: str, lang: str, data: bytes, scanner: SecretScanner) -> list[dict[str, object]]:
    """A file's entries as plain dicts (what the cache stores): its definitions, sections, module.

    An entry holding a credential is left out, as extraction leaves out such a sample: what the index
    holds reaches answers and training contexts."""
    if content_skip_reason(path, lang, data):
        return []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return []
    lines = text.count("\n") + (0 if text.endswith("\n") else 1)
    stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    try:
        if lang in ("markdown", "rst"):
            out = _doc_entries(path, lang, text, stem, lines)
        else:
            out = _code_entries(path, lang, text, data, stem, lines)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    if scanner.first_reason(text):  # only then check each entry: a clean file gives clean entries
        out = [e for e in out if not any(scanner.first_reason(t) for t in (e.signature, e.doc, e.body))]
    return [_plain(e) for e in out]


def _doc_entries(path: str, lang: str, text: str, stem: str, lines: int) -> list[Entry]:
    """One entry per section (named by its own heading), and one for the document."""
    sections = docs.split_markdown(text) if lang == "markdown" else docs.split_rst(text)
    out = [
        Entry(
            "section",
            sec.title.rsplit(" > ", 1)[-1],
            sec.title,
            path,
            sec.start_line,
            sec.end_line,
            body=sec.body[:MAX_BODY_CHARS],
        )  # fmt: skip
        for sec in sections
    ]
    first = sections[0].title if sections else stem
    return [*out, Entry("module", stem, path, path, 1, max(1, lines), doc=first)]


def _code_entries(path: str, lang: str, text: str, data: bytes, stem: str, lines: int) -> list[Entry]:
    """One entry per definition, and one for the module (its docstring and what it defines)."""
    module = path.rsplit(".", 1)[0].replace("/", ".")
    symbols = python_ast.extract_symbols(text) if lang == "python" else treesitter.extract_symbols(data, lang)
    doc = next((sym.doc or "" for sym in symbols if sym.kind == "module"), "")
    defs = [sym for sym in symbols if sym.kind != "module"]
    out = [
        Entry(
            sym.kind,
            sym.name,
            sym.qualname,
            path,
            sym.start_line,
            sym.end_line,
            sym.signature,
            sym.doc or "",
            sym.code[:MAX_BODY_CHARS],
        )  # fmt: skip
        for sym in defs
    ]
    body = f"defines: {', '.join(sym.qualname for sym in defs)}" if defs else ""
    return [*out, Entry("module", stem, module, path, 1, max(1, lines), "", doc, body[:MAX_BODY_CHARS])]


def _plain(e: Entry) -> dict[str, object]:
    return {f: getattr(e, f) for f in Entry.__slots__}  # type: ignore[attr-defined]


def _commits(repo: Path, commit: str, limit: int, cfg: ExtractConfig, sources: set[str]) -> list[Entry]:
    """The newest `limit` commits as entries: message and the indexed files they touched (vendored,
    ignored and skipped files are not named)."""
    if limit <= 0:
        return []
    out = subprocess.run(
        ["git", "-C", str(repo), "log", f"--max-count={limit}", "--no-color", "--name-only",
         "--format=%x00%H%x1f%an%x1f%ad%x1f%s%x1f%b%x1e", "--date=short", commit],
        capture_output=True, check=True,
    ).stdout.decode("utf-8", "replace")  # fmt: skip
    entries: list[Entry] = []
    scanner = SecretScanner(cfg.entropy_threshold) if out else None
    for rec in out.split("\0")[1:]:
        head, _, names = rec.partition("\x1e")
        sha, author, date, subject, body = (head.split("\x1f") + [""] * 5)[:5]
        files = [f for f in names.split("\n") if f.strip() and f in sources]
        text = f"{subject}\n\n{body.strip()}".strip()
        if scanner is not None and scanner.first_reason(text):
            continue
        shown = "\n".join(files[:20]) + (f"\n... and {len(files) - 20} more" if len(files) > 20 else "")
        entries.append(
            Entry(
                "commit",
                sha[:12],
                sha,
                files[0] if files else "",
                0,
                0,
                f"{author} {date}",
                subject,
                f"{text}\n\nfiles:\n{shown}"[:MAX_BODY_CHARS],
            )  # fmt: skip
        )
    return entries


def refresh_index(spec: str, settings: Settings) -> IndexReport:
    """Bring the index of a repo spec to its HEAD (a clone is not fetched: the monitor does that)."""
    handle = resolve_repo(spec, settings, fetch=False)
    return build_index(
        handle.path,
        index_path(settings, handle.project_id),
        settings.extract,
        settings.cache_dir,
        display=handle.display,
        recent_commits=settings.index.recent_commits,
    )


@task(name="index-repo", retries=2, retry_delay_seconds=2)
def index_task(
    repo_path: str, project_id: str, settings: Settings, display: str = "repository", rev: str = "HEAD"
) -> IndexReport:
    """Prefect task: bring the project's repo index to `rev` (incrementally). Retried: a concurrent
    refresh or a busy disk are transient, and a rerun is idempotent."""
    return build_index(
        Path(repo_path),
        index_path(settings, project_id),
        settings.extract,
        settings.cache_dir,
        rev=rev,
        display=display,
        recent_commits=settings.index.recent_commits,
    )
