"""Retrieved entries rendered as the context a model reads: the one rendering serving and training share.

A chunk is headed by what it is and where it lives, a definition in the very words of a locate answer
(`[1] `token_budget` is defined in `core/budget.py` at line 12 (function, to line 40)`), so a model
learns to answer with, and cite, the path and lines it was shown.
"""

from __future__ import annotations

from typing import Any

from core.index.store import DEFINITIONS, Entry, Hit

INSTRUCTION = (
    "Answer the question using the repository context below. When the answer comes from the context, "
    "name the file and lines it comes from as path:start-end."
)
_MIN_BODY_CHARS = 200
# a cautious estimate for code and prose, shared by serving and RAFT training so both size the
# context alike: a context never pushes a prompt past the slot's n_ctx
CHARS_PER_TOKEN = 3.0


def locator(e: Entry) -> str:
    """`path:start-end`, or the commit for a commit entry."""
    if e.kind == "commit":
        return f"commit {e.qualname[:12]}"
    return f"{e.path}:{e.start_line}-{e.end_line}"


def heading(i: int, e: Entry) -> str:
    """A definition's heading says where it is in the words a locate answer uses, so that a small
    model answers "where is X defined?" by copying it; other chunks are headed by their locator."""
    if e.kind in DEFINITIONS:
        name = e.qualname or e.name
        return (
            f"[{i}] `{name}` is defined in `{e.path}` at line {e.start_line} ({e.kind}, to line {e.end_line})"
        )
    what = f"section {e.name}" if e.kind == "section" else e.kind
    return f"[{i}] {locator(e)} ({what})"


def render_context(hits: list[Hit], commit: str, max_chars: int) -> tuple[str, int]:
    """The context block for `hits` within `max_chars` (bodies trimmed, last chunks dropped), and how
    many of the hits it shows (the first ones)."""
    head = f"{INSTRUCTION}\n\nRepository context (commit {commit[:12]}):"
    parts = [head]
    used = len(head)
    for i, hit in enumerate(hits, 1):
        e = hit.entry
        title = heading(i, e)
        body = _body(e)
        room = max_chars - used - len(title) - 2
        if room < _MIN_BODY_CHARS:
            break
        if len(body) > room:
            body = body[: room - 4].rstrip() + "\n..."
        chunk = f"{title}\n{body}"
        parts.append(chunk)
        used += len(chunk) + 2
    return "\n\n".join(parts), len(parts) - 1


def with_context(messages: list[dict[str, Any]], context: str) -> list[dict[str, Any]]:
    """The conversation with the context in front: its own system message, or before the one it has.
    Serving and training samples both put it there."""
    if not context:
        return messages
    if messages and messages[0].get("role") == "system":
        return [{**messages[0], "content": f"{context}\n\n{messages[0]['content']}"}, *messages[1:]]
    return [{"role": "system", "content": context}, *messages]


def _body(e: Entry) -> str:
    if e.kind == "commit":
        return e.body
    if e.kind in ("section", "module"):
        return "\n".join(x for x in (e.doc, e.body) if x)
    return e.body or e.signature
