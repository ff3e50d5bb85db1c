"""Text helpers for the tree-sitter extractor: comment cleaning, signature tidying, span cutting."""

from __future__ import annotations

import re
import textwrap

_STAR_PREFIX = re.compile(r"^[ \t]*\*(?!/) ?")  # the ` * ` gutter of a /** */ block, javadoc-style
_TRAILING_COMMA = re.compile(r",[ \t]*\n\s*([)\]>])")
_GO_DIRECTIVE = re.compile(rb"^//(?:line |extern |export |[a-z0-9]+:[a-z0-9])")


def is_go_directive(comment: bytes) -> bool:
    """`//go:generate`, `//line x.go:1` and friends: Go's doc tool drops them from doc comments."""
    return _GO_DIRECTIVE.match(comment) is not None


def clean_comments(comments: list[bytes]) -> str | None:
    """The text of consecutive comments (`//`, `///`, `//!`, `/* */`, `/** */`) without markers.

    Line comments are dedented together so indented examples keep their shape; a block comment
    follows the docstring convention (first line stripped, later lines dedented on their own).
    Returns None when nothing but whitespace remains.
    """
    if len(comments) == 1 and b"\n" not in comments[0].rstrip():  # the common one-liner, fast
        text = comments[0].decode("utf-8", "replace").strip()
        if text.startswith("/*"):
            text = text[:-2] if text.endswith("*/") and len(text) >= 4 else text
            text = text[3:] if text.startswith(("/**", "/*!")) else text[2:]
        else:
            text = text[3:] if text.startswith(("///", "//!")) else text[2:]
        return text.strip() or None
    parts: list[str] = []
    run: list[str] = []  # consecutive line comments, dedented as one block
    for raw in comments:
        text = raw.decode("utf-8", "replace").replace("\r\n", "\n").rstrip("\n")
        if text.startswith("/*"):
            if run:
                parts.append(textwrap.dedent("\n".join(run)))
                run = []
            parts.append("\n".join(_block_lines(text)))
        else:  # a line comment: exactly one line per node in every grammar used here
            run.append((text[3:] if text.startswith(("///", "//!")) else text[2:]).rstrip())
    if run:
        parts.append(textwrap.dedent("\n".join(run)))
    doc = "\n".join(parts).strip()
    return doc or None


def _block_lines(text: str) -> list[str]:
    if text.endswith("*/") and len(text) >= 4:  # an unterminated comment in a broken file has no closer
        text = text[:-2]
    body = text[3:] if text.startswith(("/**", "/*!")) else text[2:]
    first, *rest = body.split("\n")
    rest = [_STAR_PREFIX.sub("", line, count=1) for line in rest]
    # the opener's line is stripped on its own, like a docstring's first line, so that
    # `/** Summary` does not pin the common indentation of the lines below it to zero
    rest_text = textwrap.dedent("\n".join(line.rstrip() for line in rest))
    return [first.strip(), *rest_text.split("\n")] if rest else [first.strip()]


def tidy_signature(raw: str) -> str:
    """One line, single spaces, no padding inside brackets; a trailing `;` (bodiless decl) dropped."""
    if "\n" in raw:  # a trailing comma before a closer on its own line is layout, not meaning
        raw = _TRAILING_COMMA.sub(r"\1", raw)
    sig = " ".join(raw.split())
    if "( " in sig or " )" in sig or "[ " in sig or " ]" in sig:
        sig = sig.replace("( ", "(").replace(" )", ")").replace("[ ", "[").replace(" ]", "]")
    return sig.rstrip(";").rstrip()


def cut_spans(src: bytes, start: int, end: int, spans: list[tuple[int, int]]) -> bytes:
    """src[start:end] with each (s, e) span removed; a span that fills its lines takes them along.

    Used for doc comments that sit inside a definition's code (between attributes or decorators),
    and for the module doc of a file, so that no blank husk of the comment is left behind.
    """
    parts: list[bytes] = []
    pos = start
    for s, e in sorted(spans):
        if s < pos or e > end:
            continue
        line_start = src.rfind(b"\n", start, s) + 1 or start
        if line_start >= pos and not src[line_start:s].strip():
            if src[e - 1 : e] == b"\n":  # Rust line comments end with their newline
                tail_end = e
            else:
                nl = src.find(b"\n", e, end)
                tail_end = end if nl < 0 else nl + 1
            if not src[e:tail_end].strip():  # the comment owns its lines: drop them whole
                s, e = line_start, tail_end
        parts.append(src[pos:s])
        pos = e
    parts.append(src[pos:end])
    return b"".join(parts)
