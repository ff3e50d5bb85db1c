"""Python definitions via the standard library's `ast` (no imports executed, nothing evaluated)."""

from __future__ import annotations

import ast
import inspect
import warnings
from typing import cast

from tasks.extract.symbols import Symbol

_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class _DocExpr(ast.Expr):
    """An expression statement whose value is a string constant (a docstring)."""

    value: ast.Constant


def extract_symbols(source: str) -> list[Symbol]:
    """Module docstring, classes, functions and methods of a Python file, in source order.

    Raises SyntaxError (or ValueError for NUL bytes) when the file does not parse.
    """
    text = source.replace("\r\n", "\n").replace("\r", "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences etc. are the repo's business
        tree = ast.parse(text)
    lines = text.split("\n")
    out: list[Symbol] = []
    module_doc = _docstring_node(tree)
    if module_doc is not None:
        doc = inspect.cleandoc(str(module_doc.value.value))
        code = text
        doc_end = module_doc.end_lineno or module_doc.lineno
        without = _drop_lines(lines, module_doc.lineno - 1, doc_end - 1).lstrip("\n")
        out.append(Symbol("module", "", "", "", doc, code, without, 1, max(1, len(lines))))
    _walk(tree.body, (), lines, out)
    return out


def _walk(body: list[ast.stmt], scope: tuple[str, ...], lines: list[str], out: list[Symbol]) -> None:
    in_class = bool(scope)
    for node in body:
        if not isinstance(node, _DEFS):
            continue
        qual = (*scope, node.name)
        kind = "class" if isinstance(node, ast.ClassDef) else "method" if in_class else "function"
        out.append(_symbol(node, kind, ".".join(qual), lines))
        if isinstance(node, ast.ClassDef):
            # methods and nested classes; functions nested in function bodies are not API surface
            _walk(node.body, qual, lines, out)


def _symbol(
    node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef, kind: str, qualname: str, lines: list[str]
) -> Symbol:
    start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
    end = node.end_lineno or node.lineno
    indent = node.col_offset  # a method's own indentation, removed so its code reads as top-level
    code = "\n".join(_dedent(lines[start - 1 : end], indent))
    first_body = node.body[0].lineno
    sig_lines = lines[node.lineno - 1 : max(node.lineno, first_body - 1)]
    signature = " ".join(s.strip() for s in sig_lines).strip()
    if first_body == node.lineno:  # one-liner: `def f(): return 1`
        signature = signature.split(":", 1)[0] + ":" if ":" in signature else signature
    doc_node = _docstring_node(node)
    doc = None
    without = code
    if doc_node is not None:
        doc = inspect.cleandoc(str(doc_node.value.value)) or None
        d_start, d_end = doc_node.lineno, doc_node.end_lineno or doc_node.lineno
        if d_start > node.lineno:  # docstring on its own lines: cut them, keep the body valid
            placeholder = None if len(node.body) > 1 else " " * (doc_node.col_offset - indent) + "..."
            body = _dedent(lines[start - 1 : end], indent)
            without = _drop_lines(body, d_start - start, d_end - start, placeholder)
    return Symbol(
        kind,  # type: ignore[arg-type]
        node.name,
        qualname,
        signature,
        doc,
        code,
        without,
        start,
        end,
    )


def _docstring_node(node: ast.AST) -> _DocExpr | None:
    body = getattr(node, "body", None)
    if not body:
        return None
    first = body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        return cast(_DocExpr, first)
    return None


def _dedent(lines: list[str], width: int) -> list[str]:
    """Lines without their first `width` characters where those are whitespace (cheaper than textwrap)."""
    if width == 0:
        return lines
    return [
        line[width:] if line[:width].isspace() else line.lstrip() if not line.strip() else line
        for line in lines
    ]


def _drop_lines(lines: list[str], first: int, last: int, placeholder: str | None = None) -> str:
    """`lines` joined without indices first..last (inclusive), optionally replaced by one line."""
    return "\n".join(lines[:first] + ([placeholder] if placeholder else []) + lines[last + 1 :])
