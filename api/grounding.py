"""Grounded answers: a question to a project's model retrieves from the project's repo index first.

The top chunks go in front of the conversation (a system message; before the prompt of a raw
completion) within what the slot's context leaves, and the reply names them as `sources` with the
`index` they came from. An index behind its repository's HEAD is refreshed first (incrementally,
one refresh per project at a time) for up to `index.refresh_timeout_s`; past that the answer uses
the index as it is and says which commit it reflects. No index, an unreadable one, or a repository
gone: the answer goes on without sources, and `index.note` says why.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ForgeflowError
from core.index import Hit, IndexUnavailable, RepoIndex, index_path, render_context
from core.index.context import CHARS_PER_TOKEN
from core.registry import ModelInfo
from core.reports import IndexReport
from core.repos.spec import head_commit, parse_repo_spec
from core.settings import Settings

log = logging.getLogger(__name__)
DEFAULT_REPLY_TOKENS = 256  # room kept for the answer when the request sets no max_tokens
MIN_CONTEXT_TOKENS = 64
Indexer = Callable[[str, Settings], IndexReport]


@dataclass
class Grounding:
    """What retrieval found for one question, and what the reply says about it."""

    context: str
    sources: list[dict[str, Any]]
    index: dict[str, Any]

    def extra(self) -> dict[str, Any]:
        """The reply's extension fields."""
        return {"sources": self.sources, "index": self.index}


@dataclass
class Retriever:
    """Per API process: the indexer the CLI passes in, and one refresh per project at a time."""

    indexer: Indexer | None = None
    _refreshing: dict[str, concurrent.futures.Future[IndexReport]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pool: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="index")
    )

    def refresh(
        self, project_id: str, spec: str, settings: Settings
    ) -> concurrent.futures.Future[IndexReport]:
        assert self.indexer is not None
        with self._lock:
            running = self._refreshing.get(project_id)
            if running is not None and not running.done():
                return running
            future = self._pool.submit(self.indexer, spec, settings)
            self._refreshing[project_id] = future
            return future

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def enabled(settings: Settings, info: ModelInfo, switch: bool | None) -> bool:
    """Whether this request is grounded: its switch, else the version's `serve.retrieval`, else the
    server's `index.retrieval`, for a version trained from a repository (asked of a model without
    one, retrieval answers without sources and says why)."""
    if switch is not None:
        return switch
    if not info.source_repo:
        return False
    serve = info.config.get("serve")
    own = serve.get("retrieval") if isinstance(serve, dict) else None
    return bool(own) if isinstance(own, bool) else settings.index.retrieval


async def ground(
    retriever: Retriever, settings: Settings, info: ModelInfo, question: str, reserve_tokens: int, n_ctx: int
) -> Grounding:
    """Retrieve for `question` (in a thread: SQLite and git are blocking)."""
    return await asyncio.to_thread(_ground, retriever, settings, info, question, reserve_tokens, n_ctx)


def _ground(
    retriever: Retriever, settings: Settings, info: ModelInfo, question: str, reserve_tokens: int, n_ctx: int
) -> Grounding:
    if not info.source_repo:
        return _without(None, None, f"{info.key} has no source repository to retrieve from")
    try:
        spec = parse_repo_spec(info.source_repo, settings)
    except ForgeflowError:
        return _without(None, None, "the model's source repository is not readable here")
    path = index_path(settings, spec.project_id)
    head = head_commit(spec.local_path) if spec.local_path is not None else None
    note = None
    try:  # one read of the index when it is current, the common case
        commit, hits = _search(path, question, settings.index.top_k)
    except IndexUnavailable as exc:
        commit, hits, missing = None, [], exc
    if retriever.indexer is not None and (head is None or commit != head):
        note = _catch_up(retriever, spec.project_id, info.source_repo, settings)
        try:  # what the refresh left (or, when it did not finish in time, the index as it is)
            commit, hits = _search(path, question, settings.index.top_k)
        except IndexUnavailable as exc:
            commit, missing = None, exc
    if commit is None:
        return _without(None, head, str(missing))
    current = head is not None and commit == head
    if not current and note is None:
        note = f"the index reflects {commit[:12]}, not the repository's HEAD" if head else None
    tokens = min(settings.index.max_context_tokens, n_ctx - reserve_tokens - MIN_CONTEXT_TOKENS)
    if tokens < MIN_CONTEXT_TOKENS:
        return _without(commit, head, "no room left in the context for retrieved chunks")
    context, shown = render_context(hits, commit, int(tokens * CHARS_PER_TOKEN))
    sources = [h.source(commit) for h in hits[:shown]]
    return Grounding(context, sources, {"commit": commit, "head": head, "current": current, "note": note})


def _without(commit: str | None, head: str | None, note: str) -> Grounding:
    current = commit is not None and commit == head
    return Grounding("", [], {"commit": commit, "head": head, "current": current, "note": note})


def _catch_up(retriever: Retriever, project_id: str, spec: str, settings: Settings) -> str | None:
    """Refresh the index, waiting up to `index.refresh_timeout_s`; a note when it did not finish."""
    future = retriever.refresh(project_id, spec, settings)
    try:
        future.result(timeout=settings.index.refresh_timeout_s)
    except concurrent.futures.TimeoutError:
        return "the index is being brought up to date: this answer used it as it was"
    except ForgeflowError as exc:
        return f"the index could not be refreshed: {exc}"
    except Exception as exc:  # a bug or a broken repo: the answer goes on, the log keeps the details
        log.warning("index refresh of %s failed: %s: %s", project_id, type(exc).__name__, exc)
        return "the index could not be refreshed"
    return None


def _search(path: Path, question: str, k: int) -> tuple[str, list[Hit]]:
    """The index's commit and its `k` best hits for `question`; IndexUnavailable when it cannot be read."""
    with RepoIndex(path) as idx:
        return idx.commit, idx.search(question, k)


def reserve(messages_text: str, max_tokens: int | None) -> int:
    """Tokens a request needs besides the context: its own text, and room for the answer."""
    return int(len(messages_text) / CHARS_PER_TOKEN) + (max_tokens or DEFAULT_REPLY_TOKENS)


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """What retrieval searches for: the latest user turn."""
    return next((str(m["content"]) for m in reversed(messages) if m.get("role") == "user"), "")
