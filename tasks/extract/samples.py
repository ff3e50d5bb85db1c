"""Turning symbols, doc sections and commits into chat samples whose answers come from the repo."""

from __future__ import annotations

import zlib
from typing import Any

from core.config import ExtractConfig
from tasks.extract.docs import Section
from tasks.extract.history import Commit
from tasks.extract.symbols import Symbol

FENCE = {
    "python": "python",
    "javascript": "javascript",
    "typescript": "typescript",
    "tsx": "tsx",
    "go": "go",
    "rust": "rust",
    "java": "java",
}
LANG_NAME = {
    "python": "Python",
    "javascript": "JavaScript",
    "typescript": "TypeScript",
    "tsx": "TSX",
    "go": "Go",
    "rust": "Rust",
    "java": "Java",
}

_EXPLAIN = (
    "Explain what the {kind} `{qualname}` in `{path}` does.",
    "What is the purpose of the {kind} `{qualname}` defined in `{path}`?",
    "Describe the {kind} `{qualname}` from `{path}`.",
)
_DOCSTRING = (
    "Write the docstring for this {lang} {kind} from `{path}`.",
    "Document the following {lang} {kind} (`{qualname}` in `{path}`).",
)
_LOCATE = ("Where is the {kind} `{qualname}` defined?", "In which file and line is `{qualname}` defined?")
Sample = dict[str, Any]


def _pick(options: tuple[str, ...], key: str) -> str:
    # deterministic variety: the same symbol always gets the same phrasing
    return options[zlib.crc32(key.encode()) % len(options)]


def _sample(
    task: str, user: str, answer: str, path: str, lines: tuple[int, int], commit: str, lang: str
) -> Sample:
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
        "meta": {"task": task, "source_path": path, "lines": list(lines), "commit": commit, "lang": lang},
    }


def _useful_doc(doc: str | None) -> bool:
    return doc is not None and len(doc) >= 12 and len(doc.split()) >= 3


def symbol_samples(
    symbols: list[Symbol], path: str, lang: str, commit: str, cfg: ExtractConfig
) -> list[Sample]:
    """Samples for every symbol of one file; undocumented symbols only give code/location answers."""
    out: list[Sample] = []
    fence = FENCE.get(lang, lang)
    for s in symbols:
        span = (s.start_line, s.end_line)
        key = f"{path}:{s.qualname}"
        if s.kind == "module":
            if _useful_doc(s.doc) and s.doc is not None and len(s.doc) >= 40:
                names = [x.qualname for x in symbols if x.kind != "module" and "." not in x.qualname][:12]
                listing = f" It defines: {', '.join(f'`{n}`' for n in names)}." if names else ""
                out.append(
                    _sample(
                        "summarize_module",
                        f"Summarize the module `{path}`.{listing}",
                        s.doc,
                        path,
                        span,
                        commit,
                        lang,
                    )
                )
            continue
        n_lines = s.end_line - s.start_line + 1
        fmt = {"kind": s.kind, "qualname": s.qualname, "path": path, "lang": LANG_NAME.get(lang, lang)}
        out.append(
            _sample(
                "locate",
                # phrasing keyed by name alone: one name, one question, so that names
                # defined in several places are recognised as ambiguous
                _pick(_LOCATE, s.qualname).format(**fmt),
                f"`{s.qualname}` is defined in `{path}` at line {s.start_line}.",
                path,
                span,
                commit,
                lang,
            )
        )
        if n_lines > cfg.max_symbol_lines:
            continue
        code_block = f"```{fence}\n{s.code_without_doc}\n```"
        documented = _useful_doc(s.doc)
        if documented and s.doc is not None:
            out.append(
                _sample(
                    "explain",
                    f"{_pick(_EXPLAIN, key).format(**fmt)}\n\n{code_block}",
                    s.doc,
                    path,
                    span,
                    commit,
                    lang,
                )
            )
            out.append(
                _sample(
                    "docstring",
                    f"{_pick(_DOCSTRING, key).format(**fmt)}\n\n{code_block}",
                    s.doc,
                    path,
                    span,
                    commit,
                    lang,
                )
            )
        if s.kind in ("function", "method") and n_lines - 1 >= cfg.min_body_lines:
            spec = f"\n\nIt should do the following:\n{s.doc}" if documented else ""
            user = (
                f"Implement the {s.kind} `{s.qualname}` in `{path}` with this signature:\n\n"
                f"```{fence}\n{s.signature}\n```{spec}"
            )
            out.append(_sample("implement", user, f"```{fence}\n{s.code}\n```", path, span, commit, lang))
    return out


def section_samples(
    sections: list[Section], path: str, lang: str, commit: str, cfg: ExtractConfig
) -> list[Sample]:
    """One question per documentation section long enough to answer from."""
    out = []
    for sec in sections:
        body = sec.body
        if len(body) < cfg.min_doc_section_chars:
            continue
        if len(body) > cfg.max_doc_section_chars:  # cut at a paragraph boundary: still verbatim text
            cut = body.rfind("\n\n", 0, cfg.max_doc_section_chars)
            body = body[: cut if cut > cfg.min_doc_section_chars else cfg.max_doc_section_chars].rstrip()
        user = f'What does the documentation in `{path}` say about "{sec.title}"?'
        out.append(_sample("doc_qa", user, body, path, (sec.start_line, sec.end_line), commit, lang))
    return out


def commit_sample(c: Commit, primary_path: str) -> Sample:
    """Describe-the-change sample: the diff in, the commit message out."""
    user = f"Write a commit message describing this change:\n\n```diff\n{c.diff}\n```"
    return _sample("commit", user, c.message, primary_path, (1, 1), c.sha, "diff")
