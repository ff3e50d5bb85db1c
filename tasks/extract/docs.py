"""Markdown and reStructuredText documents split into sections by heading."""

from __future__ import annotations

import re
from dataclasses import dataclass

_ATX = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_SETEXT = re.compile(r"\s{0,3}(=+|-+)\s*")
_RST_ADORN = re.compile(r"^([=\-`:'\"~^_*+#<>.])\1{2,}\s*$")


@dataclass(frozen=True, slots=True)
class Section:
    """A heading and the text under it, up to the next heading of any level."""

    title: str  # breadcrumb of enclosing headings: "Install > From source"
    body: str
    start_line: int  # 1-based line of the heading
    end_line: int


def split_markdown(text: str) -> list[Section]:
    """Sections of a Markdown document (ATX `#` and setext `===`/`---` headings; code fences respected)."""
    lines = text.replace("\r\n", "\n").split("\n")
    heads: list[tuple[int, int, str, int]] = []  # (line index, level, title, first body line index)
    in_fence = False
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        m = _ATX.match(line)
        if m:
            heads.append((i, len(m.group(1)), m.group(2).strip(), i + 1))
        elif i > 0 and lines[i - 1].strip() and _SETEXT.fullmatch(line):
            prev = lines[i - 1].strip()
            if (
                heads
                and heads[-1][0] == i - 1
                or _ATX.match(lines[i - 1])
                or prev.startswith(("-", "*", ">"))
            ):
                continue
            heads.append((i - 1, 1 if "=" in line else 2, prev, i + 1))
    return _sections(lines, heads)


def split_rst(text: str) -> list[Section]:
    """Sections of a reStructuredText document; heading levels follow the order adornments appear."""
    lines = text.replace("\r\n", "\n").split("\n")
    heads: list[tuple[int, int, str, int]] = []
    styles: list[tuple[str, bool]] = []
    i = 0
    while i < len(lines) - 1:
        over = _RST_ADORN.match(lines[i])
        title = lines[i + 1].strip() if over else lines[i].strip()
        under_idx = i + 2 if over else i + 1
        under = _RST_ADORN.match(lines[under_idx]) if under_idx < len(lines) else None
        if title and under and len(lines[under_idx].rstrip()) >= len(title) and not _RST_ADORN.match(title):
            style = (under.group(1), bool(over))
            if style not in styles:
                styles.append(style)
            heads.append((i, styles.index(style) + 1, title, under_idx + 1))
            i = under_idx + 1
            continue
        i += 1
    return _sections(lines, heads)


def _sections(lines: list[str], heads: list[tuple[int, int, str, int]]) -> list[Section]:
    out: list[Section] = []
    trail: list[tuple[int, str]] = []
    for n, (idx, level, title, body_start) in enumerate(heads):
        trail = [t for t in trail if t[0] < level] + [(level, title)]
        end = heads[n + 1][0] if n + 1 < len(heads) else len(lines)
        body = "\n".join(lines[body_start:end]).strip()
        out.append(Section(" > ".join(t for _, t in trail), body, idx + 1, max(idx + 1, end)))
    return out
