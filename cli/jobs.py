"""`forgeflow retrain` and `forgeflow jobs ...`: jobs through the running stack's API.

`retrain --repo . --force --wait` is what `make run` does: it starts the retrain flow on the stack,
follows it (the same status the Prefect UI shows), then prints what it made and one answer from
the model it deployed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from cli.app import err, out, run
from core.errors import ForgeflowError
from core.jobs.directory import JobDir
from core.paths import display
from core.reports import KnowledgeReport
from core.settings import Settings, get_settings

jobs_app = typer.Typer(help="Training jobs (Prefect flow runs): list, status, pause, resume, cancel.")
TERMINAL = ("completed", "failed", "cancelled", "crashed")
JobId = Annotated[str, typer.Argument(help="the job id (POST /v1/fine-tune and /v1/retrain return it)")]


def retrain(
    repo: Annotated[str, typer.Option("--repo", help="local path or git URL")] = ".",
    force: Annotated[bool, typer.Option(help="train even when the monitor says nothing changed")] = False,
    wait: Annotated[bool, typer.Option(help="follow the job to its end and show what it made")] = True,
    deploy: Annotated[bool, typer.Option(help="serve the new champion when it wins")] = True,
    name: Annotated[str | None, typer.Option(help="registry name of the model; default: the repo's")] = None,
) -> None:
    """Retrain a repo's model on the running stack (`forgeflow up`): monitor → ... → promote → deploy."""

    def body() -> None:
        settings = get_settings()
        local = not any(
            repo.startswith(p) for p in ("http://", "https://", "ssh://", "git@", "file://", "git://")
        )
        payload: dict[str, Any] = {"auto_deploy": deploy, "force": force, "trigger": "cli"}
        if name:
            payload["project_name"] = name
        payload["project_path" if local else "repo_url"] = str(Path(repo).resolve()) if local else repo
        reply = _api(settings, "POST", "/v1/retrain", payload)
        if not reply["triggered"]:
            out.print(f"not retrained: {reply['reason']} (use --force to train anyway)")
            return
        job = reply["job_id"]
        minutes = reply["plan"]["estimated_duration_minutes"]
        out.print(f"job {job} started: {reply['reason']} (about {minutes:.0f} min)")
        out.print(f"Prefect UI: {settings.prefect_ui_url}/runs/flow-run/{job}", soft_wrap=True)
        if wait:
            _summary(settings, job, _follow(settings, job))

    run(body)


@jobs_app.command("list")
def list_jobs(
    status: Annotated[str | None, typer.Option(help="only jobs in this status")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
) -> None:
    """Jobs, newest first."""

    def body() -> None:
        query = f"?limit={limit}" + (f"&status={status}" if status else "")
        page = _api(get_settings(), "GET", f"/jobs{query}")
        for job in page["jobs"]:
            out.print(f"{job['job_id']}  {job['status']:<10} {job['progress']:5.1f}%  {job['name']}")
        out.print(f"{page['total']} job(s)")

    run(body)


@jobs_app.command("status")
def job_status(job_id: JobId) -> None:
    """One job, as the Prefect UI shows it."""
    run(lambda: out.print_json(data=_api(get_settings(), "GET", f"/status/{job_id}")))


@jobs_app.command("pause")
def pause(job_id: JobId) -> None:
    """Pause at the next task boundary (training: the next step, after a checkpoint)."""
    run(lambda: _show(_api(get_settings(), "POST", f"/v1/retrain/{job_id}/pause")))


@jobs_app.command("resume")
def resume(job_id: JobId) -> None:
    """Resume a paused or crashed job from its last checkpoint."""
    run(lambda: _show(_api(get_settings(), "POST", f"/v1/retrain/{job_id}/resume")))


@jobs_app.command("cancel")
def cancel(job_id: JobId) -> None:
    """Stop a job; nothing half-written stays behind."""
    run(lambda: _show(_api(get_settings(), "POST", f"/v1/retrain/{job_id}/cancel")))


def _show(job: dict[str, Any]) -> None:
    out.print(f"{job['job_id']}: {job['status']} ({job['state']})")


def _api(settings: Settings, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    base = settings.api_url
    headers = {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"} if settings.api_key else {}
    try:
        reply = httpx.request(method, f"{base}{path}", json=body, headers=headers, timeout=120)
    except httpx.HTTPError:
        raise ForgeflowError(
            f"no forgeflow API answers at {base}: start the stack with `forgeflow up`"
        ) from None
    if reply.status_code >= 400:
        try:
            message = reply.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = reply.text[:200]
        raise ForgeflowError(f"{method} {path}: {reply.status_code} {message}")
    return dict(reply.json())


def _follow(settings: Settings, job: str) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal,
    ) as bar:  # fmt: skip
        task = bar.add_task("queued", total=100)
        last = ""
        while True:
            status = _api(settings, "GET", f"/status/{job}")
            what = status["status"]
            if status.get("current_step") is not None and what == "training":
                loss = "-" if status["loss"] is None else f"{status['loss']:.4f}"
                what += f" step {status['current_step']}/{status['total_steps']} loss {loss}"
            elif status.get("stage"):
                what += f" ({status['stage']})"
            bar.update(task, completed=status["progress"], description=what)
            if not err.is_terminal and what != last:
                err.print(f"{status['progress']:5.1f}%  {what}", highlight=False)
                last = what
            if status["status"] in TERMINAL:
                return status
            time.sleep(2)


def _ask(settings: Settings, model: str, folder: JobDir) -> None:
    """One real question about the repository, answered by the served model with its sources."""
    from core.index import IndexUnavailable, RepoIndex, index_path
    from core.repos.spec import parse_repo_spec

    plan = folder.plan()
    question = "What does this repository do?"
    try:
        if plan.repo:
            with RepoIndex(index_path(settings, parse_repo_spec(plan.repo, settings).project_id)) as idx:
                question = idx.example_question() or question
    except (IndexUnavailable, ForgeflowError):
        pass
    body = {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 96,
        "temperature": 0,
    }
    answer = _api(settings, "POST", "/v1/chat/completions", body)
    out.print(f"question: {question}")
    out.print(f"answer: {answer['choices'][0]['message']['content'].strip()}")
    sources = answer.get("sources") or []
    for s in sources:
        where = (
            f"{s['path']}:{s['start_line']}-{s['end_line']}"
            if s["kind"] != "commit"
            else f"commit {s['name']}"
        )
        out.print(f"  source: {where} ({s['kind']} {s['name']}, score {s['score']:.3f})", soft_wrap=True)
    note = (answer.get("index") or {}).get("note")
    if note or not sources:
        out.print(
            f"  (no sources: {note or 'retrieval is off for this model'})" if not sources else f"  ({note})"
        )


def _knowledge_table(report: KnowledgeReport) -> Table:
    """Repo knowledge as served, one row per model and retrieval: fits 80 columns."""
    asked = report.questions
    title = (
        f"repo knowledge: {asked['locate']} locate ({asked['locate_held_out']} held-out), "
        f"{asked['explain']} explain"
    )
    table = Table("model", title=title)
    for column in ("locate", "held-out", "explain", "score"):
        table.add_column(column, justify="right")
    for label, c in report.columns.items():
        table.add_row(label, *c.cells())
    if report.recall_at_k is not None:
        table.caption = f"retrieval recall@k on locate questions: {report.recall_at_k:.0%}"
    return table


def _summary(settings: Settings, job: str, status: dict[str, Any]) -> None:
    if status["status"] != "completed":
        raise ForgeflowError(f"job {job} {status['status']}: {status.get('error') or status.get('message')}")
    folder = JobDir.of(settings, job)
    stats, evaluation = folder.stats(), folder.evaluation()
    export, promote = folder.exported(), folder.promotion()
    if stats is not None:
        out.print(f"dataset: {stats.samples.train} train + {stats.samples.eval} eval samples")
    if evaluation is not None:
        base, tuned = evaluation.base.perplexity, evaluation.metrics.perplexity
        out.print(f"perplexity: base {base:.3f} → tuned {tuned:.3f}")
    for quant, gguf in (export.ggufs if export is not None else {}).items():
        out.print(f"GGUF {quant}: {display(folder.export / gguf.file)}  sha256 {gguf.sha256}")
    if promote is not None:
        out.print(f"promote: {promote.reason}", soft_wrap=True)
        name = promote.candidate.split(":")[0] + ":champion"
        if promote.promote or promote.champion:
            champion = _api(settings, "GET", f"/models/{name}")
            what = ", the base model answering from the repo index" if champion["config"].get("base") else ""
            out.print(f"served as: {name} (= {champion['name']}:{champion['version']}{what})")
            _ask(settings, name, folder)
        else:  # refused, and no champion before it (a Hugging Face base has no GGUF to serve)
            out.print(f"served as: nothing yet: {promote.candidate} is registered, not promoted")
    knowledge = folder.knowledge()
    if knowledge is not None:
        out.print(_knowledge_table(knowledge))
    out.print(f"Prefect UI: {settings.prefect_ui_url}/runs/flow-run/{job}", soft_wrap=True)
    out.print("stop the stack with `forgeflow down`")
