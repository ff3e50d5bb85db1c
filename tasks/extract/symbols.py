"""What a source parser yields: one record per documented (or undocumented) definition."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SymbolKind = Literal["module", "function", "method", "class", "struct", "interface", "trait", "enum", "type"]


@dataclass(frozen=True, slots=True)
class Symbol:
    """A definition found in a source file.

    Attributes:
        kind: what it is; "module" carries the file-level docstring/doc comment only.
        name: the bare name (`parse`).
        qualname: the name qualified by enclosing classes/impls (`Parser.parse`).
        signature: the declaration up to (not including) the body, as written in the source.
        doc: the docstring or doc comment, cleaned of comment markers and common indentation;
            None when the definition has none.
        code: the full source text of the definition, doc comment included when it sits inside it.
        code_without_doc: `code` with the docstring / doc comment removed.
        start_line: 1-based first line of the definition (its doc comment excluded when outside).
        end_line: 1-based last line, inclusive.
    """

    kind: SymbolKind
    name: str
    qualname: str
    signature: str
    doc: str | None
    code: str
    code_without_doc: str
    start_line: int
    end_line: int
