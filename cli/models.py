"""`forgeflow models list | show | register | alias | rm`: the model registry from the command line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.table import Column, Table

from cli.app import err, out, run
from cli.server_client import HostOpt, PortOpt, post_to_server, serve_settings
from core.settings import get_settings

if TYPE_CHECKING:
    from core.registry import ModelInfo, Registry

models_app = typer.Typer(help="The model registry: versions, aliases, stats.", no_args_is_help=True)

T = TypeVar("T")
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]
TaskOpt = Annotated[str, typer.Option(help="text-generation | text-embedding")]


def _with_registry(fn: Callable[[Registry], T]) -> T:
    """Run `fn` on the workspace's registry, closing it after; errors are one line (see `_run`)."""
    from core.registry import Registry

    def body() -> T:
        with Registry.from_settings(get_settings()) as registry:
            return fn(registry)

    return run(body)


@models_app.command("list")
def list_models(
    task: Annotated[str | None, typer.Option(help="only this task")] = None,
    device: Annotated[str | None, typer.Option(help="only this device")] = None,
    page: Annotated[int, typer.Option(help="page number, from 1")] = 1,
    limit: Annotated[int, typer.Option(help="versions per page (1-100)")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List registered versions: names in order, newest first within a name."""
    result = _with_registry(lambda r: r.list(task=task, device=device, page=page, limit=limit))
    if as_json:
        out.print_json(result.model_dump_json())
        return
    table = Table("task", "device", "state", "aliases", "requests", "p95 ms")
    table.columns.insert(0, Column("model", no_wrap=True))  # the one cell that must stay whole
    for m in result.models:
        p95 = f"{m.stats.p95_latency_ms:.0f}" if m.stats.p95_latency_ms is not None else "-"
        table.add_row(
            m.key, m.task, m.device, m.state, ", ".join(m.aliases), str(m.stats.requests_total), p95
        )
    out.print(table)
    out.print(f"page {result.page} of {max(result.pages, 1)} · {result.total} versions", highlight=False)


@models_app.command()
def show(
    ref: Annotated[str, typer.Argument(help="name, name:version or name:alias")], as_json: JsonOpt = False
) -> None:
    """One version in full: lineage, artifacts, metrics and usage."""
    model = _with_registry(lambda r: r.resolve(ref))
    if as_json:
        out.print_json(model.model_dump_json())
        return
    _print_model(model)


@models_app.command()
def register(
    path: Annotated[Path, typer.Argument(help="a .gguf file, an export directory, or an HF model directory")],
    name: Annotated[
        str | None, typer.Option(help="default: the GGUF's general.name, else the file name")
    ] = None,
    version: Annotated[str | None, typer.Option(help="MAJOR.MINOR.PATCH; default: next minor")] = None,
    task: TaskOpt = "text-generation",
    device: Annotated[str, typer.Option(help="where it is meant to run: cpu, cuda, mps")] = "cpu",
    as_json: JsonOpt = False,
) -> None:
    """Check a model and add it to the registry as a new version (it becomes `latest`)."""
    model = _with_registry(lambda r: r.register(path, name=name, version=version, task=task, device=device))
    if as_json:
        out.print_json(model.model_dump_json())
        return
    out.print(f"[green]registered[/] {model.key} ({model.task}, {model.device})", highlight=False)
    _print_artifacts(model)


@models_app.command()
def alias(
    name: Annotated[str, typer.Argument(help="model name")],
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="e.g. champion")],
    version: Annotated[str | None, typer.Argument(help="the version it should point at")] = None,
    remove: Annotated[bool, typer.Option("--remove", help="delete the alias")] = False,
) -> None:
    """Create or move an alias (moving `champion` back to an older version is a rollback)."""
    from core.errors import InputError

    def move(r: Registry) -> str:
        if remove:
            r.remove_alias(name, alias_name)
            return f"removed {name}:{alias_name}"
        if version is None:
            raise InputError("give the VERSION the alias should point at, or --remove to delete it")
        before = r.alias_target(name, alias_name)
        after = r.set_alias(name, alias_name, version).version
        return f"{alias_name}: {before} → {after}" if before else f"{alias_name}: → {after} (new)"

    out.print(_with_registry(move), highlight=False)


@models_app.command()
def rm(
    ref: Annotated[str, typer.Argument(help="name (all versions), name:version or name:alias")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    """Delete a version (or every version of a name), its aliases, and store files nothing else uses."""

    def delete(r: Registry) -> list[ModelInfo] | None:
        name, _, tag = ref.partition(":")
        target = r.resolve(ref)  # an unknown name or version fails here, before asking
        version = target.version if tag else None
        doomed = [m.key for m in r.list(name=name, limit=100).models] if version is None else [target.key]
        if not yes and not typer.confirm(f"delete {', '.join(doomed)}?", err=True):
            return None
        return r.delete(name, version)

    deleted = _with_registry(delete)
    if deleted is None:
        err.print("nothing deleted")
        raise typer.Exit(1)
    out.print(f"deleted {', '.join(m.key for m in deleted)}", highlight=False)


def _print_model(m: ModelInfo) -> None:
    table = Table(show_header=False, box=None)
    rows = {
        "model": m.key, "task": m.task, "device": m.device,
        "state": m.state + (f" ({m.backend})" if m.backend else ""),
        "aliases": ", ".join(m.aliases) or "-", "base model": m.base_model or "-",
        "source": f"{m.source_repo or '-'} @ {m.source_commit or '-'}", "dataset": m.dataset_hash or "-",
        "registered": m.created_at.isoformat(timespec="seconds"),
    }  # fmt: skip
    for key, value in rows.items():
        table.add_row(key, value)
    for key, value in {**m.config, **m.metrics}.items():
        table.add_row(key, str(value))
    s = m.stats
    avg = (
        f"{s.avg_latency_ms:.1f} ms avg, {s.p95_latency_ms:.1f} ms p95"
        if s.avg_latency_ms is not None
        else "-"
    )
    table.add_row("requests", f"{s.requests_total} ({s.requests_failed} failed), {avg}")
    table.add_row("tokens", f"{s.prompt_tokens} prompt, {s.completion_tokens} completion")
    out.print(table)
    _print_artifacts(m)


def _print_artifacts(m: ModelInfo) -> None:
    for role, a in m.artifacts.items():
        out.print(f"  {role}: {a.size / 2**20:.1f} MiB, sha256 {a.sha256[:16]}", highlight=False)


@models_app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[str, typer.Argument(help="the version to go back to")],
    alias: Annotated[str, typer.Option(help="the alias to move")] = "champion",
    host: HostOpt = None,
    port: PortOpt = None,
) -> None:
    """Move an alias back to VERSION and redeploy it on the running server, in one call.

    With no server running, the alias is moved in the registry; the next `forgeflow serve` resolves
    `name:alias` to VERSION.
    """
    settings = run(lambda: serve_settings(None, host, port))
    body = {"alias": alias, "version": version}
    reply = run(lambda: post_to_server(settings, f"/models/{name}/rollback", body, "rollback"))
    if reply is not None:
        out.print(f"{name}:{alias}: {reply['from']} → {reply['to']} (deployed on the running server)")
        return

    def move() -> str:
        from core.registry import Registry

        with Registry.from_settings(settings) as registry:
            before = registry.alias_target(name, alias)
            return str(registry.set_alias(name, alias, version).version) + f" (was {before})"

    out.print(f"{name}:{alias} → {run(move)}; no server running: it serves on the next start")
