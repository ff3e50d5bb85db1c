"""A strict stand-in for an Ollama server: the documented endpoints, shapes and refusals, no model.

It keeps blobs and models like Ollama does, refuses what Ollama refuses (400 `{"error": ...}`; 404
for unknown models), renders each chat through the model's stored Go TEMPLATE (the subset of Go's
text/template that core.chat_template emits, and a little more) and answers deterministically: the
reply echoes the last user message (or the raw prompt), one word per token, honouring num_predict and
stop. Every rendered prompt, every request line and every stream the client cut short are recorded.

    with running_ollama() as server:
        backend = OllamaBackend(server.url)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

VERSION = "0.12.6"
BLOB_DIR = "/usr/share/ollama/.ollama/models/blobs"
_DIGEST = re.compile(r"sha256[:-][0-9a-f]{64}")
_PART = re.compile(r"[A-Za-z0-9_.-]{1,80}")
_ROLES = {"system", "user", "assistant", "tool"}
_INT_OPTIONS = {"num_ctx", "num_predict", "seed", "top_k", "num_keep", "repeat_last_n", "num_batch"}
_FLOAT_OPTIONS = {"temperature", "top_p", "min_p", "typical_p", "repeat_penalty"}
_FLOAT_OPTIONS |= {"presence_penalty", "frequency_penalty"}


# --- Go text/template, the subset chat TEMPLATEs use ----------------------------------------------


class GoTemplateError(ValueError):
    pass


_ACTION_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)|(?P<decl>:=)|(?P<punct>[(),])|(?P<num>-?\d+)'
    r"|(?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_]\w*)*)|(?P<field>(?:\.[A-Za-z_]\w*)+|\.)|(?P<ident>[A-Za-z_]\w*))"
)
_FUNCS = {"eq", "ne", "and", "or", "not", "len", "slice", "index"}


def parse_go_template(source: str) -> list[Any]:
    """Nodes: ("text", s), ("out", expr), ("set", $var, expr), ("if", branches, else), ("range", ...)."""
    nodes, _ = _parse_list(_lex(source), 0, source_end=True)
    return nodes


def render_go_template(nodes: list[Any], data: dict[str, Any]) -> str:
    out: list[str] = []
    _exec(nodes, data, {"$": data}, out)
    return "".join(out)


def _lex(source: str) -> list[tuple[str, Any]]:
    """("text", s) and ("action", tokens) items, with {{- and -}} trimming applied."""
    items: list[tuple[str, Any]] = []
    pos, trim_next = 0, False
    while True:
        start = source.find("{{", pos)
        text = source[pos : start if start >= 0 else len(source)]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if start < 0:
            items.append(("text", text))
            return items
        body_start = start + 2
        if source.startswith("- ", body_start) or source.startswith("-\n", body_start):
            text, body_start = text.rstrip(" \t\r\n"), body_start + 1
        items.append(("text", text))
        end = _action_end(source, body_start)
        body = source[body_start:end]
        trim_next = body.endswith(" -") or body.endswith("\n-")
        body = body[:-1] if trim_next else body
        if not body.strip().startswith("/*"):
            items.append(("action", _tokens(body.strip())))
        pos = end + 2


def _action_end(source: str, pos: int) -> int:
    quote = None
    while pos < len(source) - 1:
        c = source[pos]
        if quote:
            if c == "\\" and quote == '"':
                pos += 1
            elif c == quote:
                quote = None
        elif c in '"`':
            quote = c
        elif source.startswith("}}", pos):
            return pos
        pos += 1
    raise GoTemplateError("unclosed action")


def _tokens(body: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(body):
        match = _ACTION_TOKEN.match(body, pos)
        if match is None or match.end() == pos:
            if body[pos:].strip():
                raise GoTemplateError(f"unexpected {body[pos:]!r} in action")
            break
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


def _parse_list(items: list[tuple[str, Any]], i: int, source_end: bool = False) -> tuple[list[Any], int]:
    """Nodes up to the next else/end (index of that item returned), or to the end of the source."""
    nodes: list[Any] = []
    while i < len(items):
        kind, value = items[i]
        if kind == "text":
            if value:
                nodes.append(("text", value))
            i += 1
            continue
        head = value[0][1] if value and value[0][0] == "ident" else ""
        if head in ("end", "else"):
            if source_end:
                raise GoTemplateError(f"unexpected {{{{{head}}}}}")
            return nodes, i
        if head == "if":
            node, i = _parse_if(items, i)
        elif head == "range":
            node, i = _parse_range(items, i)
        elif len(value) > 2 and value[0][0] == "var" and value[1][0] == "decl":
            node, i = ("set", value[0][1], _expr(value[2:])), i + 1
        else:
            node, i = ("out", _expr(value)), i + 1
        nodes.append(node)
    if not source_end:
        raise GoTemplateError("missing {{end}}")
    return nodes, i


def _parse_if(items: list[tuple[str, Any]], i: int) -> tuple[Any, int]:
    branches: list[tuple[Any, list[Any]]] = []
    otherwise: list[Any] = []
    condition = _expr(items[i][1][1:])
    while True:
        body, i = _parse_list(items, i + 1)
        branches.append((condition, body))
        tokens = items[i][1]
        if tokens[0][1] == "end":
            return ("if", branches, otherwise), i + 1
        if len(tokens) > 1 and tokens[1] == ("ident", "if"):  # {{ else if X }}
            condition = _expr(tokens[2:])
            continue
        otherwise, i = _parse_list(items, i + 1)
        if items[i][1][0][1] != "end":
            raise GoTemplateError("{{else}} after {{else}}")
        return ("if", branches, otherwise), i + 1


def _parse_range(items: list[tuple[str, Any]], i: int) -> tuple[Any, int]:
    tokens = items[i][1][1:]
    names: list[str] = []
    if any(kind == "decl" for kind, _ in tokens):
        at = [kind for kind, _ in tokens].index("decl")
        names = [text for kind, text in tokens[:at] if kind == "var"]
        tokens = tokens[at + 1 :]
    body, i = _parse_list(items, i + 1)
    otherwise: list[Any] = []
    if items[i][1][0][1] == "else":
        otherwise, i = _parse_list(items, i + 1)
    return ("range", names, _expr(tokens), body, otherwise), i + 1


def _expr(tokens: list[tuple[str, str]]) -> Any:
    expr, rest = _command(tokens)
    if rest:
        raise GoTemplateError(f"unexpected {rest[0][1]!r}")
    return expr


def _command(tokens: list[tuple[str, str]]) -> tuple[Any, list[tuple[str, str]]]:
    args: list[Any] = []
    while tokens and tokens[0] != ("punct", ")"):
        kind, text = tokens[0]
        tokens = tokens[1:]
        if (kind, text) == ("punct", "("):
            sub, tokens = _command(tokens)
            if not tokens:
                raise GoTemplateError("missing )")
            tokens = tokens[1:]
            args.append(sub)
        elif kind == "str":
            args.append(("lit", json.loads(text) if text[0] == '"' else text[1:-1]))
        elif kind == "num":
            args.append(("lit", int(text)))
        elif kind == "ident" and text in ("true", "false"):
            args.append(("lit", text == "true"))
        elif kind == "ident" and text in _FUNCS and not args:
            args.append(("func", text))
        elif kind in ("field", "var"):
            args.append((kind, text))
        else:
            raise GoTemplateError(f"function {text!r} not defined")
    if not args:
        raise GoTemplateError("missing value for command")
    if args[0][0] == "func":
        return ("call", args[0][1], args[1:]), tokens
    if len(args) > 1:
        raise GoTemplateError("can't give argument to non-function")
    return args[0], tokens


def _exec(nodes: list[Any], dot: Any, variables: dict[str, Any], out: list[str]) -> None:
    variables = dict(variables)  # a variable lives until the end of its block
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "out":
            out.append(_print(_eval(node[1], dot, variables)))
        elif kind == "set":
            variables[node[1]] = _eval(node[2], dot, variables)
        elif kind == "if":
            for condition, body in node[1]:
                if _truthy(_eval(condition, dot, variables)):
                    _exec(body, dot, variables, out)
                    break
            else:
                _exec(node[2], dot, variables, out)
        elif kind == "range":
            _, names, expr, body, otherwise = node
            items = _eval(expr, dot, variables) or []
            for index, item in enumerate(items):
                scope = dict(variables)
                if len(names) == 2:
                    scope[names[0]], scope[names[1]] = index, item
                elif names:
                    scope[names[0]] = item
                _exec(body, item, scope, out)
            if not items:
                _exec(otherwise, dot, variables, out)


def _eval(expr: Any, dot: Any, variables: dict[str, Any]) -> Any:
    kind = expr[0]
    if kind == "lit":
        return expr[1]
    if kind == "field":
        return dot if expr[1] == "." else _fields(dot, expr[1][1:].split("."))
    if kind == "var":
        name, *path = expr[1].split(".")
        if name not in variables:
            raise GoTemplateError(f"undefined variable {name}")
        return _fields(variables[name], path)
    args = [_eval(a, dot, variables) for a in expr[2]]
    name = expr[1]
    if name in ("and", "or"):
        for value in args:
            if _truthy(value) == (name == "or"):
                return value
        return args[-1]
    if name == "not":
        return not _truthy(args[0])
    if name in ("eq", "ne"):
        equal = any(args[0] == other for other in args[1:])
        return equal if name == "eq" else not equal
    if name == "len":
        return len(args[0])
    if name == "slice":
        return args[0][slice(*args[1:])]
    return args[0][args[1]]  # index


def _fields(value: Any, path: list[str]) -> Any:
    for name in path:
        if not isinstance(value, dict) or name not in value:
            raise GoTemplateError(f"can't evaluate field {name}")
        value = value[name]
    return value


def _truthy(value: Any) -> bool:
    return bool(value) if value is not None else False


def _print(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "<no value>" if value is None else str(value)


# --- the server ----------------------------------------------------------------------------------


@dataclass
class StoredModel:
    name: str
    digest: str
    size: int
    template: str
    nodes: list[Any]
    parameters: dict[str, Any]
    system: str
    modified_at: str


@dataclass
class OllamaState:
    blobs: dict[str, int] = field(default_factory=dict)  # digest -> size (the bytes are not kept)
    models: dict[str, StoredModel] = field(default_factory=dict)
    prompts: list[str] = field(default_factory=list)  # every prompt a model was given, as rendered
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    aborted: list[str] = field(default_factory=list)  # models whose stream the client cut short
    token_delay_s: float = 0.002  # between streamed tokens, so that a client can leave mid-stream


class Rejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def valid_name(name: str) -> bool:
    """Ollama's model-name rules: [host/][namespace/]model[:tag], parts of [A-Za-z0-9_.-]."""
    if not name or len(name) > 350 or ".." in name:
        return False
    *prefix, last = name.split("/")
    model, _, tag = last.partition(":")
    parts = [*prefix, model] + ([tag] if ":" in last else [])
    return (
        len(prefix) <= 2 and all(_PART.fullmatch(p) for p in parts) and not any("." in p for p in prefix[1:])
    )


def canonical(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def create_app(state: OllamaState) -> Any:
    app = FastAPI()

    @app.exception_handler(Rejected)
    async def rejected(_: Request, exc: Rejected) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.get("/api/version")
    async def version() -> dict[str, str]:
        return {"version": VERSION}

    @app.head("/api/blobs/{digest}")
    async def has_blob(digest: str) -> Response:
        _check_digest(digest)
        return Response(status_code=200 if digest.replace("-", ":", 1) in state.blobs else 404)

    @app.post("/api/blobs/{digest}")
    async def push_blob(digest: str, request: Request) -> Response:
        _check_digest(digest)
        digest = digest.replace("-", ":", 1)
        sha, size, magic = hashlib.sha256(), 0, b""
        async for chunk in request.stream():
            sha.update(chunk)
            magic, size = (magic + chunk)[:4] if size < 4 else magic, size + len(chunk)
        if f"sha256:{sha.hexdigest()}" != digest:
            raise Rejected(400, f"digest mismatch, expected {digest!r}, got 'sha256:{sha.hexdigest()}'")
        if digest in state.blobs:
            return Response(status_code=200)
        state.blobs[digest] = size if magic == b"GGUF" else -size  # negative: not a GGUF
        return Response(status_code=201)

    @app.post("/api/create")
    async def create(request: Request) -> Response:
        body = await _json(request)
        name = _model_field(body)
        if not valid_name(name):
            raise Rejected(400, "invalid model name")
        if "from" in body:
            raise Rejected(400, "this test server creates models from files only")
        files = body.get("files")
        if not files:
            raise Rejected(400, "neither 'from' or 'files' was specified")
        if not isinstance(files, dict) or len(files) != 1:
            raise Rejected(400, "files must map one GGUF file name to its digest")
        ((filename, digest),) = files.items()
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise Rejected(400, "invalid digest format")
        if digest not in state.blobs:
            raise Rejected(400, f"blob {digest} not found: push it to /api/blobs first")
        if state.blobs[digest] < 0:
            # like Ollama's, the message names the blob's path on the server
            raise Rejected(400, f"open {BLOB_DIR}/{digest.replace(':', '-')}: invalid file magic")
        template = _typed(body, "template", str, "")
        try:
            nodes = parse_go_template(template) if template else [("out", ("var", "$.Prompt"))]
        except GoTemplateError as exc:
            raise Rejected(400, f"template: {exc}") from None
        parameters = _options(body.get("parameters"), "parameters")
        system = _typed(body, "system", str, "")
        now = datetime.now(UTC).isoformat()
        model = StoredModel(
            canonical(name), digest, state.blobs[digest], template, nodes, parameters, system, now
        )
        state.models[model.name] = model
        statuses = ["parsing GGUF", f"using existing layer {digest}", "writing manifest", "success"]
        if _typed(body, "stream", bool, True):
            lines = "".join(json.dumps({"status": s}) + "\n" for s in statuses)
            return Response(lines, media_type="application/x-ndjson")
        return JSONResponse({"status": "success"})

    @app.get("/api/tags")
    async def tags() -> dict[str, Any]:
        return {"models": [_listed(m) for m in state.models.values()]}

    @app.delete("/api/delete")
    async def delete(request: Request) -> Response:
        name = canonical(_model_field(await _json(request)))
        if state.models.pop(name, None) is None:
            raise Rejected(404, f"model '{name}' not found")
        return Response(status_code=200)

    @app.post("/api/chat")
    async def chat(request: Request) -> Response:
        body = await _json(request)
        model = _model(body)
        messages = _messages(body.get("messages"))
        options = model.parameters | _options(body.get("options"), "options")
        system, collated = _collate(messages, model.system)
        prompt = _render(model, {"System": system, "Messages": collated, "Prompt": "", "Response": ""})
        last_user = next((m["Content"] for m in reversed(collated) if m["Role"] == "user"), "")
        return _answer(
            state, model, prompt, last_user, options, _typed(body, "stream", bool, True), chat=True
        )

    @app.post("/api/generate")
    async def generate(request: Request) -> Response:
        body = await _json(request)
        model = _model(body)
        text = _typed(body, "prompt", str, "")
        options = model.parameters | _options(body.get("options"), "options")
        if _typed(body, "raw", bool, False):
            prompt = text
        else:
            system = _typed(body, "system", str, model.system)
            messages = [{"Role": "system", "Content": system}] if system else []
            messages.append({"Role": "user", "Content": text})
            prompt = _render(model, {"System": system, "Messages": messages, "Prompt": text, "Response": ""})
        return _answer(state, model, prompt, text, options, _typed(body, "stream", bool, True), chat=False)

    @app.post("/api/embed")
    async def embed(request: Request) -> dict[str, Any]:
        body = await _json(request)
        model = _model(body)
        inputs = body.get("input", [])
        inputs = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs):
            raise Rejected(400, "input must be a string or a list of strings")
        if any(not x for x in inputs):
            raise Rejected(400, "input must not contain empty strings")
        vectors = [[b / 255 for b in hashlib.sha256(x.encode()).digest()[:8]] for x in inputs]
        count = sum(len(x.split()) for x in inputs)
        return {
            "model": model.name,
            "embeddings": vectors,
            "total_duration": 1,
            "load_duration": 0,
            "prompt_eval_count": count,
        }

    @app.post("/v1/chat/completions")
    async def openai_chat(request: Request) -> Response:
        body = await _json(request)
        model = _model(body)
        messages = _messages(body.get("messages"))
        system, collated = _collate(messages, model.system)
        prompt = _render(model, {"System": system, "Messages": collated, "Prompt": "", "Response": ""})
        last_user = next((m["Content"] for m in reversed(collated) if m["Role"] == "user"), "")
        options = model.parameters | ({"num_predict": body["max_tokens"]} if "max_tokens" in body else {})
        state.prompts.append(prompt)
        tokens, reason = _reply(last_user, options)
        head = {"id": "chatcmpl-1", "created": int(time.time()), "model": model.name}
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(tokens)}
            usage = {"prompt_tokens": _count(prompt), "completion_tokens": len(tokens)}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            choice = {"index": 0, "message": message, "finish_reason": reason}
            return JSONResponse(head | {"object": "chat.completion", "choices": [choice], "usage": usage})

        async def events() -> AsyncIterator[str]:
            for i, token in enumerate([*tokens, None]):
                delta = {} if token is None else {"content": token}
                delta |= {"role": "assistant"} if i == 0 else {}
                choice = {"index": 0, "delta": delta, "finish_reason": reason if token is None else None}
                chunk = head | {"object": "chat.completion.chunk", "choices": [choice]}
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    def _model(body: dict[str, Any]) -> StoredModel:
        name = _model_field(body)
        model = state.models.get(canonical(name)) if valid_name(name) else None
        if model is None:
            raise Rejected(404, f"model '{name}' not found")
        return model

    return _logged(app, state)


def _logged(app: Any, state: OllamaState) -> Any:
    """Plain ASGI wrapper (BaseHTTPMiddleware would hide client disconnects from streams)."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            state.requests.append((scope["method"], scope["path"]))
        await app(scope, receive, send)

    return asgi


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        raise Rejected(400, "invalid JSON body") from None
    if not isinstance(body, dict):
        raise Rejected(400, "the request body must be a JSON object")
    return body


def _typed(body: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise Rejected(
            400, f"json: cannot unmarshal {type(value).__name__} into field {key} of type {kind.__name__}"
        )
    return value


def _model_field(body: dict[str, Any]) -> str:
    name = _typed(body, "model", str, "")
    if not name:
        raise Rejected(400, "model is required")
    return name


def _check_digest(digest: str) -> None:
    if not _DIGEST.fullmatch(digest):
        raise Rejected(400, "invalid digest format")


def _options(options: Any, what: str) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise Rejected(400, f"{what} must be an object")
    for key, value in options.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if key in _INT_OPTIONS and not (number and float(value).is_integer()):
            raise Rejected(400, f"invalid type for option {key!r}: {value!r} is not an integer")
        if key in _FLOAT_OPTIONS and not number:
            raise Rejected(400, f"invalid type for option {key!r}: {value!r} is not a number")
        if key == "stop" and not (isinstance(value, list) and all(isinstance(s, str) for s in value)):
            raise Rejected(400, "invalid type for option 'stop': expected a list of strings")
    return dict(options)


def _messages(messages: Any) -> list[dict[str, str]]:
    if messages is None:
        return []
    if not isinstance(messages, list):
        raise Rejected(400, "messages must be a list")
    out = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise Rejected(400, "each message needs a role")
        if message["role"] not in _ROLES:
            raise Rejected(400, f"invalid role {message['role']!r}")
        content = message.get("content", "")
        if not isinstance(content, str):
            raise Rejected(400, "json: cannot unmarshal array into field content of type string")
        out.append({"role": message["role"], "content": content})
    return out


def _collate(messages: list[dict[str, str]], default_system: str) -> tuple[str, list[dict[str, str]]]:
    """Ollama's template.collate: SYSTEM first when none is given; same-role neighbours merged."""
    if default_system and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": default_system}, *messages]
    system: list[str] = []
    collated: list[dict[str, str]] = []
    for m in messages:
        if m["role"] == "system":
            system.append(m["content"])
        if collated and collated[-1]["Role"] == m["role"] and m["role"] != "tool":
            collated[-1]["Content"] += "\n\n" + m["content"]
        else:
            collated.append({"Role": m["role"], "Content": m["content"]})
    return "\n\n".join(system), collated


def _render(model: StoredModel, data: dict[str, Any]) -> str:
    try:
        return render_go_template(model.nodes, data)
    except (GoTemplateError, TypeError, IndexError, KeyError) as exc:
        raise Rejected(500, f"template: {exc}") from None


def _reply(text: str, options: dict[str, Any]) -> tuple[list[str], str]:
    """The echo's tokens (a word with its surrounding space each) and Ollama's done_reason."""
    words = re.findall(r"\s*\S+\s*", text)
    stops = [s for s in options.get("stop") or [] if s]
    limit = options.get("num_predict", -1)
    out: list[str] = []
    for word in words:
        if 0 <= limit <= len(out):
            return out, "length"
        joined = "".join(out) + word
        cuts = [joined.find(s) for s in stops if s in joined]
        if cuts:  # the text before the stop sequence, nothing of it
            return re.findall(r"\s*\S+\s*", joined[: min(cuts)]), "stop"
        out.append(word)
    return out, "stop"


def _count(text: str) -> int:
    return len(text.split())


def _answer(
    state: OllamaState,
    model: StoredModel,
    prompt: str,
    echo: str,
    options: dict[str, Any],
    stream: bool,
    *,
    chat: bool,
) -> Response:
    state.prompts.append(prompt)
    tokens, reason = _reply(echo, options)

    def part(text: str, done: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"model": model.name, "created_at": datetime.now(UTC).isoformat()}
        out |= {"message": {"role": "assistant", "content": text}} if chat else {"response": text}
        out["done"] = done
        if done:
            out |= {"done_reason": reason, "total_duration": 1000, "load_duration": 10}
            out |= {"prompt_eval_count": _count(prompt), "prompt_eval_duration": 100}
            out |= {"eval_count": len(tokens), "eval_duration": 100}
        return out

    if not stream:
        return JSONResponse(part("".join(tokens), True))

    async def lines() -> AsyncIterator[str]:
        finished = False
        try:
            for token in tokens:
                yield json.dumps(part(token, False)) + "\n"
                await asyncio.sleep(state.token_delay_s)
            yield json.dumps(part("", True)) + "\n"
            finished = True
        finally:
            if not finished:
                state.aborted.append(model.name)

    return StreamingResponse(lines(), media_type="application/x-ndjson")


def _listed(model: StoredModel) -> dict[str, Any]:
    details = {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"]}
    details |= {"parameter_size": "", "quantization_level": ""}
    listed = {"name": model.name, "model": model.name, "modified_at": model.modified_at}
    return listed | {"size": model.size, "digest": model.digest.split(":", 1)[1], "details": details}


@dataclass
class OllamaServer:
    url: str
    state: OllamaState


@contextmanager
def running_ollama(state: OllamaState | None = None) -> Iterator[OllamaServer]:
    """The strict server on a free 127.0.0.1 port, in a background thread, for the `with` block."""
    state = state or OllamaState()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_app(state), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test Ollama server did not start")
        time.sleep(0.01)
    try:
        yield OllamaServer(f"http://127.0.0.1:{sock.getsockname()[1]}", state)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
