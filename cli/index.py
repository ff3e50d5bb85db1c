"""`forgeflow index build | status | search`: a project's repo index, without Prefect."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from cli.app import RepoOpt, out, run
from core.settings import get_settings

index_app = typer.Typer(
    help="The repo index grounded answers retrieve from (refreshed on every commit the hooks report).",
    no_args_is_help=True,
)
JsonOpt = Annotated[bool, typer.Option("--json", help="print the report as JSON")]


@index_app.command("build")
def build(
    repo: RepoOpt = ".",
    full: Annotated[bool, typer.Option("--full", help="rebuild from scratch, not incrementally")] = False,
    rev: Annotated[str, typer.Option(help="the commit to index")] = "HEAD",
    as_json: JsonOpt = False,
) -> None:
    """Bring the repository's index to a commit: only the files that changed are read again."""
    from core.index import index_path
    from core.repos.spec import resolve_repo
    from tasks.extract.index import build_index

    def body() -> None:
        settings = get_settings()
        handle = resolve_repo(repo, settings)
        report = build_index(
            handle.path,
            index_path(settings, handle.project_id),
            settings.extract,
            settings.cache_dir,
            rev=rev,
            display=handle.display,
            full=full,
            recent_commits=settings.index.recent_commits,
        )
        if as_json:
            out.print_json(report.model_dump_json())
            return
        out.print(
            f"index {report.mode} at {report.commit[:12]}: {report.entries} entries in {report.files} files "
            f"({report.changed_files} changed, {report.parsed_files} parsed) "
            f"in {report.elapsed_seconds:.2f} s"
        )

    run(body)


@index_app.command("status")
def status(repo: RepoOpt = ".", as_json: JsonOpt = False) -> None:
    """Which commit the repository's index reflects, and whether that is its HEAD."""
    import json

    from core.index import RepoIndex, index_path
    from core.paths import display
    from core.repos.spec import head_commit, resolve_repo

    def body() -> None:
        settings = get_settings()
        handle = resolve_repo(repo, settings)
        with RepoIndex(index_path(settings, handle.project_id)) as idx:
            st = idx.status()
        head = head_commit(handle.path)
        info = {
            "repo": handle.display,
            "commit": st.commit,
            "head": head or None,
            "current": st.commit == head,
            "files": st.files,
            "entries": st.entries,
            "by_kind": st.by_kind,
            "built_at": datetime.fromtimestamp(st.built_at, UTC).isoformat(timespec="seconds"),
            "file": display(st.path),
        }
        if as_json:
            out.print_json(json.dumps(info))
            return
        table = Table(show_header=False, box=None)
        for key in ("repo", "commit", "head", "current", "files", "entries", "built_at", "file"):
            table.add_row(key, str(info[key]))
        table.add_row("by kind", ", ".join(f"{k} {v}" for k, v in st.by_kind.items()))
        out.print(table)
        if not info["current"]:
            out.print("[yellow]behind HEAD[/]: `forgeflow index build` brings it up to date")

    run(body)


@index_app.command("search")
def search(
    question: Annotated[str, typer.Argument(help="what to look for")],
    repo: RepoOpt = ".",
    k: Annotated[int, typer.Option("-k", min=1, max=50, help="how many entries")] = 5,
) -> None:
    """What retrieval finds for a question: path, lines, kind, name and score."""
    from core.index import RepoIndex, index_path
    from core.index.context import locator
    from core.repos.spec import resolve_repo

    def body() -> None:
        settings = get_settings()
        handle = resolve_repo(repo, settings)
        with RepoIndex(index_path(settings, handle.project_id)) as idx:
            started = time.perf_counter()
            hits = idx.search(question, k)
            took = (time.perf_counter() - started) * 1000
            commit = idx.commit
        table = Table()
        table.add_column("where", overflow="fold")
        table.add_column("what", overflow="fold")
        table.add_column("score", justify="right")
        for h in hits:
            e = h.entry
            table.add_row(locator(e), f"{e.kind} {e.qualname or e.name}", f"{h.score:.3f}")
        out.print(table)
        out.print(f"{len(hits)} hits at {commit[:12]} in {took:.1f} ms")

    run(body)
