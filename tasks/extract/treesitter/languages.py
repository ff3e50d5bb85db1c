"""Definitions in JavaScript, TypeScript, Go, Rust and Java files, found with tree-sitter grammars.

One parse per file, then a walk that only visits "containers" (the file, class/impl/trait
bodies, namespaces): function bodies are never entered, since nested local functions are not
API surface and skipping them keeps the walk cheap on large files.
"""

from __future__ import annotations

import importlib

from tree_sitter import Language, Node, Parser

from tasks.extract.symbols import Symbol, SymbolKind
from tasks.extract.treesitter.walk import Handler, Scope, Walker, base_type_name, first_named

LANG_BY_SUFFIX: dict[str, str] = {
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".go": "go", ".rs": "rust", ".java": "java",
}  # fmt: skip

_GRAMMARS = {  # lang -> (grammar wheel, function returning its TSLanguage pointer)
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "java": ("tree_sitter_java", "language"),
}
_FAMILY = {"javascript": "js", "typescript": "js", "tsx": "js", "go": "go", "rust": "rust", "java": "java"}
_PARSERS: dict[str, Parser] = {}  # per process: worker processes build each one on first use


def extract_symbols(source: bytes, lang: str) -> list[Symbol]:
    """Module doc, types, functions and methods of one source file, in source order.

    `lang` is a value of LANG_BY_SUFFIX; anything else raises ValueError. Broken source never
    raises: tree-sitter recovers, and whatever definitions survive the damage are returned.
    """
    parser = _PARSERS.get(lang)
    if parser is None:
        if lang not in _GRAMMARS:
            raise ValueError(f"no tree-sitter grammar for language {lang!r}")
        module, func = _GRAMMARS[lang]
        parser = _PARSERS[lang] = Parser(Language(getattr(importlib.import_module(module), func)()))
    root = parser.parse(source).root_node
    walker = Walker(source, _FAMILY[lang])
    walker.leading_module_doc(root)
    walker.walk(root, (), _TOP[lang])
    return walker.out


# ---- language rules: each handler gets (walker, definition node, code span node, scope, pending) ----


def _body_start(node: Node, field: str = "body") -> int:
    """Where the signature ends: the body's first byte, or the node's end for a bodiless decl."""
    body = node.child_by_field_name(field)
    return body.start_byte if body is not None else node.end_byte


def _token_start(node: Node, token: str) -> int:
    """First byte of an anonymous child token (`=` of an alias, `{` of a Go interface)."""
    return next((c.start_byte for c in node.children if c.type == token), node.end_byte)


def _named(kind: SymbolKind, sig_field: str = "body", nested: dict[str, Handler] | None = None) -> Handler:
    """A handler for a definition with a `name` field; `nested` walks its body with the name in scope."""

    def handle(w: Walker, node: Node, outer: Node, scope: Scope, pending: list[Node]) -> None:
        name = node.child_by_field_name("name")
        if name is None:  # anonymous (`export default class {}`) or mangled by a syntax error
            return
        ident = w.text(name)
        sig_end = _token_start(node, "=") if sig_field == "=" else _body_start(node, sig_field)
        w.emit(kind, ident, scope, node, outer, sig_end, pending)
        body = node.child_by_field_name("body")
        if nested is not None and body is not None:
            w.walk(body, (*scope, ident), nested)

    return handle


def _namespace(nested: dict[str, Handler]) -> Handler:
    """TS `namespace X {}` / `declare module "x" {}`, Rust `mod x {}`: a scope, not a symbol."""

    def handle(w: Walker, node: Node, outer: Node, scope: Scope, pending: list[Node]) -> None:
        name, body = node.child_by_field_name("name"), node.child_by_field_name("body")
        if name is not None and body is not None:  # `mod x;` has its body in another file
            w.walk(body, (*scope, w.text(name).strip("\"'")), nested)

    return handle


def _unwrap(table: dict[str, Handler]) -> Handler:
    """`export ...`, `declare ...`, a namespace statement: hand the wrapped declaration on, keeping
    the wrapper as the code span so that `export`/decorators/`declare` stay in code and signature."""

    def handle(w: Walker, node: Node, outer: Node, scope: Scope, pending: list[Node]) -> None:
        for child in node.named_children:
            handler = table.get(child.type)
            if handler is not None:
                handler(w, child, outer, scope, pending)
                return

    return handle


_JS_FUNC_VALUES = frozenset({"arrow_function", "function_expression", "function", "generator_function"})
_DECLARATOR = "variable_declarator"
_IDENT = frozenset({"identifier", "property_identifier", "private_property_identifier"})  # no destructuring


def _js_function_value(kind: SymbolKind) -> Handler:
    """`const load = async () => {...}` at the top level, `handle = () => {...}` in a class body."""

    def handle(w: Walker, node: Node, outer: Node, scope: Scope, pending: list[Node]) -> None:
        pairs = [node] if kind == "method" else [c for c in node.named_children if c.type == _DECLARATOR]
        for decl in pairs:
            name = decl.child_by_field_name("name") or decl.child_by_field_name("property")
            value = decl.child_by_field_name("value")
            if name is None or value is None or value.type not in _JS_FUNC_VALUES or name.type not in _IDENT:
                continue
            span = outer if len(pairs) == 1 else decl  # `let a = () => 1, b = 2;`: just the declarator
            w.emit(kind, w.text(name), scope, decl, span, _body_start(value), pending)

    return handle


_JS_CLASS: dict[str, Handler] = {
    "method_definition": _named("method"),
    "abstract_method_signature": _named("method"),
    "field_definition": _js_function_value("method"),
    "public_field_definition": _js_function_value("method"),
}
_JS_TOP: dict[str, Handler] = {
    "function_declaration": _named("function"),
    "generator_function_declaration": _named("function"),
    "class_declaration": _named("class", nested=_JS_CLASS),
    "abstract_class_declaration": _named("class", nested=_JS_CLASS),
    "lexical_declaration": _js_function_value("function"),
    "variable_declaration": _js_function_value("function"),
    "interface_declaration": _named("interface"),
    "type_alias_declaration": _named("type", sig_field="="),
    "enum_declaration": _named("enum"),
}
# bodiless `function f(): T;` is an overload next to its implementation, except under `declare`
# (a .d.ts has nothing else): only the ambient table, used inside `declare ...`, takes it
_JS_AMBIENT: dict[str, Handler] = {**_JS_TOP, "function_signature": _named("function")}
for _table in (_JS_TOP, _JS_AMBIENT):
    _table["internal_module"] = _table["module"] = _namespace(_table)
    _table["export_statement"] = _table["expression_statement"] = _unwrap(_table)
    _table["ambient_declaration"] = _unwrap(_JS_AMBIENT)


def _go_function(w: Walker, node: Node, outer: Node, scope: Scope, pending: list[Node]) -> None:
    name = node.child_by_field_name("name")
    if name is None:
        return
    receiver = node.child_by_field_name("receiver")
    if receiver is not None:  # `func (s *Server[T]) Start()` -> Server.Start
        param = first_named(receiver)
        owner = base_type_name(w, param.child_by_field_name("type") if param is not None else None)
        w.emit("method", w.text(name), (owner,) if owner else (), node, outer, _body_start(node), pending)
    else:
        w.emit("function", w.text(name), scope, node, outer, _body_start(node), pending)


def _go_type_spec(w: Walker, node: Node, outer: Node, scope: Scope, pending: list[Node]) -> None:
    name, typ = node.child_by_field_name("name"), node.child_by_field_name("type")
    if name is None:
        return
    kind: SymbolKind = "type"
    sig_end = node.end_byte  # `type ID string`: the whole declaration is its signature
    if node.type == "type_spec" and typ is not None and typ.type in ("struct_type", "interface_type"):
        kind = "struct" if typ.type == "struct_type" else "interface"
        fields = first_named(typ) if kind == "struct" else None  # the field_declaration_list
        sig_end = fields.start_byte if fields is not None else _token_start(typ, "{")
    # inside `type ( ... )` the spec has no `type` keyword of its own: give the signature one
    prefix = "type " if outer is node else ""
    w.emit(kind, w.text(name), scope, node, outer, sig_end, pending, sig_prefix=prefix)


_GO_GROUP: dict[str, Handler] = {"type_spec": _go_type_spec, "type_alias": _go_type_spec}
_GO_SINGLE = _unwrap(_GO_GROUP)  # `type X struct {...}`: the declaration, `type` and all, is the code


def _go_type_declaration(w: Walker, node: Node, outer: Node, scope: Scope, pending: list[Node]) -> None:
    if any(c.type == "(" for c in node.children):  # grouped: each spec carries its own doc comment
        w.walk(node, scope, _GO_GROUP)
    else:
        _GO_SINGLE(w, node, outer, scope, pending)


def _go_package(w: Walker, node: Node, outer: Node, scope: Scope, pending: list[Node]) -> None:
    w.module(w.docs(node, node, b"", pending))  # the package comment is the module doc


_GO: dict[str, Handler] = {
    "function_declaration": _go_function,
    "method_declaration": _go_function,
    "type_declaration": _go_type_declaration,
    "package_clause": _go_package,
}


def _rust_impl(w: Walker, node: Node, outer: Node, scope: Scope, pending: list[Node]) -> None:
    body = node.child_by_field_name("body")
    owner = base_type_name(w, node.child_by_field_name("type"))  # `impl Display for Foo<T>` -> Foo
    if body is not None:
        w.walk(body, (*scope, owner) if owner else scope, _RUST_IMPL)


_RUST_IMPL: dict[str, Handler] = {
    "function_item": _named("method"),
    "function_signature_item": _named("method"),
}
_RUST: dict[str, Handler] = {
    "function_item": _named("function"),
    "struct_item": _named("struct"),
    "union_item": _named("struct"),
    "enum_item": _named("enum"),
    "trait_item": _named("trait", nested=_RUST_IMPL),
    "type_item": _named("type", sig_field="="),
    "impl_item": _rust_impl,
}
_RUST["mod_item"] = _namespace(_RUST)

_JAVA_BODY: dict[str, Handler] = {
    "method_declaration": _named("method"),
    "constructor_declaration": _named("method"),
    "compact_constructor_declaration": _named("method"),
}
_JAVA_BODY.update({
    "class_declaration": _named("class", nested=_JAVA_BODY),
    "record_declaration": _named("class", nested=_JAVA_BODY),
    "interface_declaration": _named("interface", nested=_JAVA_BODY),
    "annotation_type_declaration": _named("interface", nested=_JAVA_BODY),
    "enum_declaration": _named("enum", nested=_JAVA_BODY),
    # an enum's methods sit after its constants, in `enum_body_declarations`
    "enum_body_declarations": lambda w, node, outer, scope, pending: w.walk(node, scope, _JAVA_BODY),
})  # fmt: skip

_TOP: dict[str, dict[str, Handler]] = {
    "javascript": _JS_TOP, "typescript": _JS_TOP, "tsx": _JS_TOP,
    "go": _GO, "rust": _RUST, "java": _JAVA_BODY,
}  # fmt: skip
