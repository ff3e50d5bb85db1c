"""The generic half of the tree-sitter extractor: container walk, doc comment lookup, Symbol building.

Language rules (which node types are definitions, what their names and bodies are) live in
`treesitter.py`; they call `Walker.emit` and `Walker.walk` with the pieces they picked out.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from tree_sitter import Node

from tasks.extract.symbols import Symbol, SymbolKind
from tasks.extract.treesitter.text import clean_comments, cut_spans, is_go_directive, tidy_signature

_COMMENTS = frozenset({"comment", "line_comment", "block_comment"})
_SIG_NOISE = _COMMENTS | {"decorator", "marker_annotation", "annotation"}  # kept in code, not in signature
_PRELUDE = frozenset({"attribute_item", "decorator"})  # Rust `#[...]`; TS puts member decorators here
_FILE_TAG = re.compile(rb"@(?:file|fileoverview|overview|module)\b")

Scope = tuple[str, ...]
Handler = Callable[["Walker", Node, Node, Scope, list[Node]], None]


def _is_jsdoc(text: bytes) -> bool:
    return text[:3] == b"/**" and text[3:4] not in (b"*", b"/")  # not `/**/` nor a `/*****` banner


def _is_rust_outer_doc(text: bytes) -> bool:
    return (text[:3] == b"///" and text[3:4] != b"/") or _is_jsdoc(text)


class Walker:
    """Per-file state: the source bytes, the language family and the symbols found so far."""

    __slots__ = ("src", "family", "out", "crlf", "taken")

    def __init__(self, src: bytes, family: str) -> None:
        self.src = src
        self.family = family
        self.out: list[Symbol] = []
        self.crlf = b"\r\n" in src
        self.taken = -1  # start byte of the comment used as module doc: no definition may claim it

    def text(self, node: Node) -> str:
        """The node's source text."""
        return self.dec(self.src[node.start_byte : node.end_byte])

    def dec(self, raw: bytes) -> str:
        """Source bytes as text: invalid UTF-8 replaced, CRLF turned into LF."""
        text = raw.decode("utf-8", "replace")
        return text.replace("\r\n", "\n") if self.crlf else text  # same newlines as the Python side

    def walk(self, container: Node, scope: Scope, table: dict[str, Handler]) -> None:
        """Dispatch the container's children; comments and attributes queue up for the next one."""
        pending: list[Node] = []
        prev_row = -1
        for child in container.named_children:
            ctype = child.type
            if ctype in _COMMENTS:
                if child.start_point[0] != prev_row:  # else it trails the previous statement
                    pending.append(child)
                continue
            if ctype in _PRELUDE:  # belongs to the definition after it
                pending.append(child)
                continue
            handler = table.get(ctype)
            if handler is not None:
                handler(self, child, child, scope, pending)
            elif ctype == "ERROR":  # recovered garbage may still wrap intact definitions
                self.walk(child, scope, table)
            pending = []
            prev_row = child.end_point[0]

    def leading_module_doc(self, root: Node) -> None:
        """Rust `//!` / `/*!` at the top, or a JSDoc `@file` block before any JS/TS code."""
        docs: list[Node] = []
        for child in root.named_children:
            ctype = child.type
            raw = self.src[child.start_byte : child.end_byte] if ctype in _COMMENTS else b""
            if self.family == "rust":
                if raw[:3] in (b"//!", b"/*!"):
                    docs.append(child)
                elif ctype not in _COMMENTS and ctype != "inner_attribute_item":
                    break
            elif self.family == "js":
                if raw and _is_jsdoc(raw) and _FILE_TAG.search(raw):
                    docs.append(child)
                    self.taken = child.start_byte
                    break
                directive = ctype == "expression_statement" and first_named(child, "string") is not None
                if not raw and ctype != "hash_bang_line" and not directive:  # `'use strict'` may come first
                    break
        self.module(docs)

    def module(self, docs: list[Node]) -> None:
        """Record the file-level symbol for these doc comments (nothing when they clean to empty)."""
        src = self.src
        doc = clean_comments([src[c.start_byte : c.end_byte] for c in docs]) if docs else None
        if doc is None:
            return
        without = cut_spans(src, 0, len(src), [(c.start_byte, c.end_byte) for c in docs])
        lines = src.count(b"\n") + (not src.endswith(b"\n"))
        self.out.append(
            Symbol("module", "", "", "", doc, self.dec(src), self.dec(without).lstrip("\n"), 1, max(1, lines))
        )

    def docs(self, node: Node, outer: Node, sig_raw: bytes, pending: list[Node]) -> list[Node]:
        """The doc comment nodes of a definition, by the convention of its language.

        `sig_raw` is the source from the start of `outer` to the end of the signature."""
        src = self.src
        if self.family == "go":  # the unbroken run of comment lines ending right above
            run: list[Node] = []
            row = outer.start_point[0]
            for c in reversed(pending):
                if c.end_point[0] != row - 1:
                    break
                run.append(c)
                row = c.start_point[0]
            return [c for c in reversed(run) if not is_go_directive(src[c.start_byte : c.end_byte])]
        if self.family == "rust":  # rustc attaches every outer doc comment, wherever the attributes are
            return [c for c in pending if _is_rust_outer_doc(src[c.start_byte : c.end_byte])]
        # JS/TS/Java: the nearest /** */; one inside the node (after a decorator) beats one before it
        found = None
        if b"/**" in sig_raw:
            for c in leading_children(node, outer, outer.start_byte + len(sig_raw)):
                if c.type in _COMMENTS and _is_jsdoc(src[c.start_byte : c.end_byte]):
                    found = c
        if found is None:
            for c in pending:
                if c.start_byte != self.taken and _is_jsdoc(src[c.start_byte : c.end_byte]):
                    found = c
        return [found] if found is not None else []

    def emit(
        self,
        kind: SymbolKind,
        name: str,
        scope: Scope,
        node: Node,
        outer: Node,
        sig_end: int,
        pending: list[Node],
        sig_prefix: str = "",
    ) -> None:
        """Record one definition: `node` is the definition proper, `outer` the span of its code
        (an export/declaration wrapper, or the node itself), the signature ends at `sig_end`."""
        src = self.src
        o_start = outer.start_byte
        sig_raw = src[o_start:sig_end]
        docs = self.docs(node, outer, sig_raw, pending)
        first = outer
        for c in pending:  # sibling attributes / decorators belong to the code, as child ones do
            if c.type in _PRELUDE:
                first = c
                break
        start, end = first.start_byte, outer.end_byte
        if self.family != "go" and self.family != "rust" and (b"@" in sig_raw or b"/" in sig_raw):
            noise = [(c.start_byte, c.end_byte) for c in leading_children(node, outer, sig_end)
                     if c.type in _SIG_NOISE]  # fmt: skip
            sig_raw = cut_spans(src, o_start, sig_end, noise)
        code = self.dec(src[start:end])
        without = code
        if docs and docs[-1].start_byte >= start:  # a doc between attributes/decorators and the name
            without = self.dec(cut_spans(src, start, end, [(c.start_byte, c.end_byte) for c in docs]))
        first_row = first.start_point[0]
        end_row, end_col = outer.end_point
        if end_col == 0 and end_row > first_row:  # a node that swallowed its final newline
            end_row -= 1
        self.out.append(Symbol(
            kind, name, ".".join((*scope, name)) if scope else name,
            sig_prefix + tidy_signature(self.dec(sig_raw)),
            clean_comments([src[c.start_byte : c.end_byte] for c in docs]) if docs else None,
            code, without, first_row + 1, end_row + 1,
        ))  # fmt: skip


def leading_children(node: Node, outer: Node, sig_end: int) -> list[Node]:
    """Direct children of the wrapper and the definition (and Java `modifiers`) before `sig_end`."""
    found: list[Node] = []
    for parent in (outer, node) if outer is not node else (node,):
        for c in parent.children:
            if c.start_byte >= sig_end:
                break
            found.extend(c.children if c.type == "modifiers" else (c,))
    return found


def first_named(node: Node, ntype: str | None = None) -> Node | None:
    """The first named child (of type `ntype` when given), or None: node.named_child raises past the end."""
    if not node.named_child_count:
        return None
    child = node.named_children[0]
    return child if ntype is None or child.type == ntype else None


def base_type_name(w: Walker, node: Node | None) -> str:
    """`Server` out of `*Server`, `Stack[T]`, `&'a mut Vec<T>`, `fmt::Display`; "" when lost."""
    for _ in range(8):
        if node is None:
            return ""
        if node.type in ("type_identifier", "identifier"):
            return w.text(node)
        inner = node.child_by_field_name("type") or node.child_by_field_name("name")
        if inner is None:
            named = node.named_children
            inner = named[-1] if named else None  # `*T`, `&'a T`: the type comes last
        node = inner
    return ""
