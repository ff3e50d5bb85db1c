"""tree-sitter extraction: names, qualnames, kinds, docs, signatures and spans for each language."""

from __future__ import annotations

import textwrap

import pytest

from tasks.extract.symbols import Symbol
from tasks.extract.treesitter.languages import LANG_BY_SUFFIX, extract_symbols


def parse(source: str, lang: str) -> list[Symbol]:
    return extract_symbols(textwrap.dedent(source).lstrip("\n").encode(), lang)


def by_qualname(symbols: list[Symbol]) -> dict[str, Symbol]:
    return {s.qualname: s for s in symbols if s.kind != "module"}


JS = """
/**
 * @fileoverview Small math helpers.
 */
'use strict';

// Adds two numbers (a plain comment, not a doc).
function add(a, b) {
  function helper() {}
  return a + b;
}

/** Multiplies `a` by `b`. */
export const mul = (a, b) => a * b;

/**
 * Counts upwards.
 *   indented line
 */
function* count(n) {
  yield n;
}

setTimeout(function () {}, 10);

class Counter extends Base {
  /** Makes one. */
  constructor(start) {
    super();
  }

  /** The value. */
  get value() { return 1; }

  reset = () => {};
}
"""


def test_javascript_functions_classes_and_docs() -> None:
    symbols = parse(JS, "javascript")
    assert [(s.kind, s.qualname) for s in symbols] == [
        ("module", ""),
        ("function", "add"),
        ("function", "mul"),
        ("function", "count"),
        ("class", "Counter"),
        ("method", "Counter.constructor"),
        ("method", "Counter.value"),
        ("method", "Counter.reset"),
    ]  # no `helper` (local to a body) and no anonymous callback
    s = by_qualname(symbols)
    assert s["add"].doc is None  # a `//` comment is not a JSDoc
    assert s["add"].signature == "function add(a, b)"
    assert (s["add"].start_line, s["add"].end_line) == (7, 10)
    assert s["add"].code.startswith("function add(a, b) {\n") and s["add"].code.endswith("return a + b;\n}")
    assert s["mul"].doc == "Multiplies `a` by `b`."
    assert s["mul"].signature == "export const mul = (a, b) =>"
    assert s["mul"].code == "export const mul = (a, b) => a * b;"
    assert s["mul"].code_without_doc == s["mul"].code  # the doc sits outside the code
    assert s["count"].doc == "Counts upwards.\n  indented line"
    assert s["count"].signature == "function* count(n)"
    assert s["Counter"].signature == "class Counter extends Base"
    assert s["Counter.constructor"].doc == "Makes one."
    assert s["Counter.value"].signature == "get value()"
    assert s["Counter.reset"].doc is None


def test_javascript_module_doc_needs_a_file_tag() -> None:
    module = parse(JS, "javascript")[0]
    assert module.kind == "module" and (module.name, module.qualname, module.signature) == ("", "", "")
    assert module.doc == "@fileoverview Small math helpers."
    assert module.code == textwrap.dedent(JS).lstrip("\n")
    assert module.code_without_doc.startswith("'use strict';\n")
    assert (module.start_line, module.end_line) == (1, 35)
    plain = parse("/** Adds. */\nfunction add(a, b) { return a + b; }\n", "javascript")
    assert [(s.kind, s.doc) for s in plain] == [("function", "Adds.")]
    # the file comment is not also the doc of the function right under it; `/* */` is no JSDoc
    source = "/** @module m */\nfunction f() {}\n/* A block. */\nfunction g() {}\n"
    assert [(s.kind, s.qualname, s.doc) for s in parse(source, "javascript")] == [
        ("module", "", "@module m"),
        ("function", "f", None),
        ("function", "g", None),
    ]


TS = """
import { Component } from "core";

/**
 * Loads the configuration.
 *
 * @param path - file to read
 */
export async function load(
  path: string,
): Promise<Config> {
  return parse(await read(path));
}

/** A configuration. */
export interface Config extends Base {
  name: string;
}

/** Identifier of a node. */
export type NodeId = string | number;

export enum Color { Red, Green }

/** The widget. */
@Component({ selector: "w" })
export class Widget implements OnInit {
  /** Runs on init. */
  @HostListener("init")
  ngOnInit(): void {}

  abstract render(): string;
}

namespace Geometry {
  export function area(r: number): number { return r * r; }
}
"""


def test_typescript_declarations() -> None:
    s = by_qualname(parse(TS, "typescript"))
    assert list(s) == ["load", "Config", "NodeId", "Color", "Widget", "Widget.ngOnInit", "Widget.render",
                       "Geometry.area"]  # fmt: skip
    load = s["load"]
    assert load.kind == "function"
    assert load.signature == "export async function load(path: string): Promise<Config>"
    assert load.doc == "Loads the configuration.\n\n@param path - file to read"
    assert (load.start_line, load.end_line) == (8, 12)
    assert (s["Config"].kind, s["Config"].signature, s["Config"].doc) == (
        "interface", "export interface Config extends Base", "A configuration."
    )  # fmt: skip
    assert (s["NodeId"].kind, s["NodeId"].signature) == ("type", "export type NodeId")
    assert (s["Color"].kind, s["Color"].doc) == ("enum", None)


def test_typescript_decorators_are_code_but_not_signature() -> None:
    s = by_qualname(parse(TS, "typescript"))
    widget = s["Widget"]
    assert widget.kind == "class" and widget.doc == "The widget."
    assert widget.signature == "export class Widget implements OnInit"
    assert widget.code.startswith('@Component({ selector: "w" })\nexport class Widget')
    assert widget.start_line == 25  # the decorator's line, not the doc comment's
    init = s["Widget.ngOnInit"]
    assert init.doc == "Runs on init."
    assert init.signature == "ngOnInit(): void"
    assert init.code == '@HostListener("init")\n  ngOnInit(): void {}'
    assert (init.start_line, init.end_line) == (28, 29)
    assert s["Widget.render"].signature == "abstract render(): string"


def test_tsx_component() -> None:
    source = """
    import React from "react";

    /** Shows a title. */
    export const Title = ({ text }: Props) => <h1 className="t">{text}</h1>;

    /** The page. */
    export default function Page(props: Props): JSX.Element {
      const Inner = () => <span />;
      return <main><Title text={props.title} /></main>;
    }
    """
    symbols = parse(source, "tsx")
    assert [(s.kind, s.qualname, s.doc) for s in symbols] == [
        ("function", "Title", "Shows a title."),
        ("function", "Page", "The page."),
    ]
    assert symbols[1].signature == "export default function Page(props: Props): JSX.Element"
    assert symbols[1].code.endswith("</main>;\n}")


GO = """
//go:build linux

// Package server runs the HTTP API.
//
// It has two lines of doc.
package server

import "context"

// Server answers requests.
type Server struct {
	addr string
}

type (
	// Handler handles.
	Handler interface {
		Serve(ctx context.Context) error
	}
	ID string
)

// Start listens.
//
//go:noinline
func (s *Server) Start(ctx context.Context) error {
	return nil
}

// Detached comment.

func Map[T any](xs []T, f func(T) T) []T {
	return xs
}
"""


def test_go_package_comment_is_the_module_doc() -> None:
    module = parse(GO, "go")[0]
    assert module.kind == "module"
    assert module.doc == "Package server runs the HTTP API.\n\nIt has two lines of doc."
    assert module.code_without_doc.startswith("//go:build linux\n\npackage server\n")
    assert "Package server" not in module.code_without_doc
    no_doc = parse("//go:build linux\n\npackage server\n\nfunc F() {}\n", "go")
    assert [s.kind for s in no_doc] == ["function"]  # a directive split off by a blank line is no doc


def test_go_types_methods_and_docs() -> None:
    s = by_qualname(parse(GO, "go"))
    assert list(s) == ["Server", "Handler", "ID", "Server.Start", "Map"]
    assert (s["Server"].kind, s["Server"].signature, s["Server"].doc) == (
        "struct", "type Server struct", "Server answers requests."
    )  # fmt: skip
    assert (s["Server"].start_line, s["Server"].end_line) == (11, 13)
    assert (s["Handler"].kind, s["Handler"].signature, s["Handler"].doc) == (
        "interface", "type Handler interface", "Handler handles."
    )  # fmt: skip
    assert (s["ID"].kind, s["ID"].doc) == ("type", None)
    start = s["Server.Start"]
    assert (start.kind, start.name) == ("method", "Start")
    assert start.signature == "func (s *Server) Start(ctx context.Context) error"
    assert start.doc == "Start listens."  # the //go: directive is not part of the doc
    assert start.code == "func (s *Server) Start(ctx context.Context) error {\n\treturn nil\n}"
    assert (start.start_line, start.end_line) == (26, 28)
    assert s["Map"].doc is None  # a blank line detaches the comment above
    assert s["Map"].signature == "func Map[T any](xs []T, f func(T) T) []T"


def test_go_generic_receiver() -> None:
    symbols = parse("package p\n\nfunc (s *Stack[T]) Push(v T) {}\n", "go")
    assert [(s.kind, s.qualname) for s in symbols] == [("method", "Stack.Push")]


RUST = """
//! Parsing utilities.
//!
//! Second paragraph.
#![allow(dead_code)]

use std::fmt;

/// A parsed document.
#[derive(Debug, Clone)]
/// Cheap to clone.
pub struct Doc<'a> {
    text: &'a str,
}

/// Parses the input.
///
/// # Errors
///     Fails on empty input.
pub fn parse(input: &str) -> Result<Ast, Error> {
    todo!()
}

impl<'a> fmt::Display for Doc<'a> {
    /// Writes the text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.text)
    }
}

/// Things that render.
pub trait Render {
    /// Renders.
    fn render(&self) -> String;
    fn name(&self) -> &str { "x" }
}

pub enum Kind { A, B(u8) }

mod tests {
    #[test]
    fn works() {}
}
"""


def test_rust_module_doc() -> None:
    module = parse(RUST, "rust")[0]
    assert module.kind == "module"
    assert module.doc == "Parsing utilities.\n\nSecond paragraph."
    assert module.code_without_doc.startswith("#![allow(dead_code)]\n\nuse std::fmt;")


def test_rust_items_impls_and_traits() -> None:
    s = by_qualname(parse(RUST, "rust"))
    assert [(q, x.kind) for q, x in s.items()] == [
        ("Doc", "struct"), ("parse", "function"), ("Doc.fmt", "method"), ("Render", "trait"),
        ("Render.render", "method"), ("Render.name", "method"), ("Kind", "enum"), ("tests.works", "function"),
    ]  # fmt: skip
    parse_fn = s["parse"]
    assert parse_fn.signature == "pub fn parse(input: &str) -> Result<Ast, Error>"
    assert parse_fn.doc == "Parses the input.\n\n# Errors\n    Fails on empty input."
    assert (parse_fn.start_line, parse_fn.end_line) == (19, 21)
    fmt_fn = s["Doc.fmt"]
    assert fmt_fn.signature == "fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result"
    assert fmt_fn.doc == "Writes the text."
    assert s["Render.render"].signature == "fn render(&self) -> String"
    assert s["Render.render"].code == "fn render(&self) -> String;"
    assert s["Render.name"].doc is None
    assert s["Kind"].signature == "pub enum Kind"


def test_rust_attributes_are_code_and_docs_between_them_are_cut() -> None:
    doc = by_qualname(parse(RUST, "rust"))["Doc"]
    assert doc.doc == "A parsed document.\nCheap to clone."
    assert doc.signature == "pub struct Doc<'a>"
    body = "pub struct Doc<'a> {\n    text: &'a str,\n}"
    assert doc.code == "#[derive(Debug, Clone)]\n/// Cheap to clone.\n" + body
    assert doc.code_without_doc == "#[derive(Debug, Clone)]\n" + body
    assert (doc.start_line, doc.end_line) == (9, 13)


JAVA = """
package com.example;

/**
 * The outer class.
 *
 * @author someone
 */
@Deprecated
public class Outer<T> extends Base implements Api {
    /** A nested class. */
    static class Inner {
        /**
         * Does m.
         *
         * @param a the input
         */
        @Override
        public <R> R m(int a) throws IOException {
            return null;
        }

        // just a note
        Inner() {}
    }

    public static int add(int a, int b) { return a + b; }

    enum Mode { ON, OFF; /** Flips. */ Mode flip() { return this; } }

    interface Listener {
        /** Called. */
        void onEvent(String e);
    }
}
"""


def test_java_nested_qualnames_and_kinds() -> None:
    s = by_qualname(parse(JAVA, "java"))
    assert [(q, x.kind) for q, x in s.items()] == [
        ("Outer", "class"),
        ("Outer.Inner", "class"),
        ("Outer.Inner.m", "method"),
        ("Outer.Inner.Inner", "method"),
        ("Outer.add", "method"),
        ("Outer.Mode", "enum"),
        ("Outer.Mode.flip", "method"),
        ("Outer.Listener", "interface"),
        ("Outer.Listener.onEvent", "method"),
    ]


def test_java_docs_signatures_and_annotations() -> None:
    s = by_qualname(parse(JAVA, "java"))
    outer = s["Outer"]
    assert outer.doc == "The outer class.\n\n@author someone"
    assert outer.signature == "public class Outer<T> extends Base implements Api"
    assert outer.code.startswith("@Deprecated\npublic class Outer<T>")
    assert (outer.start_line, outer.end_line) == (8, 34)
    m = s["Outer.Inner.m"]
    assert m.doc == "Does m.\n\n@param a the input"
    assert m.signature == "public <R> R m(int a) throws IOException"  # annotation is code only
    assert m.code.startswith("@Override\n        public <R> R m(int a)")
    assert (m.start_line, m.end_line) == (17, 20)
    assert s["Outer.Inner.Inner"].doc is None  # a `//` comment is no javadoc
    assert s["Outer.add"].signature == "public static int add(int a, int b)"
    assert s["Outer.Mode.flip"].doc == "Flips."
    assert s["Outer.Listener.onEvent"].signature == "void onEvent(String e)"


def test_doc_inside_the_code_is_removed_from_code_without_doc() -> None:
    source = "class A {\n  @bound /** Bound. */ handle() {}\n}\n"
    method = by_qualname(parse(source, "typescript"))["A.handle"]
    assert method.doc == "Bound."
    assert method.code == "@bound /** Bound. */ handle() {}"
    assert method.code_without_doc == "@bound  handle() {}"


def test_crlf_source_gives_lf_text() -> None:
    source = b"/// Doc.\r\npub fn f() {\r\n}\r\n"
    (sym,) = extract_symbols(source, "rust")
    assert (sym.doc, sym.code, sym.start_line, sym.end_line) == ("Doc.", "pub fn f() {\n}", 2, 3)


@pytest.mark.parametrize(
    ("lang", "source"),
    [("javascript", JS), ("typescript", TS), ("tsx", TS), ("go", GO), ("rust", RUST), ("java", JAVA)],
)
def test_malformed_source_never_raises(lang: str, source: str) -> None:
    data = textwrap.dedent(source).lstrip("\n").encode()
    for cut in range(0, len(data), 7):
        for broken in (data[:cut], data[cut:], data[:cut] + b"\xff{(/*" + data[cut:]):
            for sym in extract_symbols(broken, lang):
                assert 1 <= sym.start_line <= sym.end_line


def test_broken_file_keeps_what_survives() -> None:
    source = "/** Works. */\nfunction ok(a) { return a; }\n\nfunction broken( {\n  if (\n"
    symbols = parse(source, "javascript")
    assert [(s.qualname, s.doc) for s in symbols][:1] == [("ok", "Works.")]
    # tree-sitter wraps the wreck of `a` in an ERROR node; `b` inside it is still found
    symbols = parse("/// A.\nfn a( {\n/// B.\nfn b() {}\n", "rust")
    assert [(s.qualname, s.doc, s.start_line) for s in symbols] == [("b", "B.", 4)]
    assert extract_symbols(b"", "go") == []


def test_unknown_language_raises() -> None:
    with pytest.raises(ValueError, match="cobol"):
        extract_symbols(b"IDENTIFICATION DIVISION.", "cobol")


def test_suffix_map() -> None:
    assert {s: LANG_BY_SUFFIX[s] for s in (".js", ".mjs", ".cjs", ".jsx")} == dict.fromkeys(
        (".js", ".mjs", ".cjs", ".jsx"), "javascript"
    )
    assert {s: LANG_BY_SUFFIX[s] for s in (".ts", ".mts", ".cts")} == dict.fromkeys(
        (".ts", ".mts", ".cts"), "typescript"
    )
    others = (".tsx", ".go", ".rs", ".java")
    assert [LANG_BY_SUFFIX[s] for s in others] == ["tsx", "go", "rust", "java"]
    assert ".py" not in LANG_BY_SUFFIX  # Python goes through `ast`, not tree-sitter


def test_typescript_declaration_file() -> None:
    source = """
    declare module "cfg" {
      /** Reads a file. */
      export function read(path: string): string;
    }
    export declare function load(): void;
    export function over(a: string): void;
    export function over(a: unknown) {}
    """
    symbols = parse(source, "typescript")
    # bodiless signatures count under `declare`; outside it they are overloads of a real body
    assert [(s.qualname, s.signature, s.doc) for s in symbols] == [
        ("cfg.read", "export function read(path: string): string", "Reads a file."),
        ("load", "export declare function load(): void", None),
        ("over", "export function over(a: unknown)", None),
    ]
