"""The one place that knows the chat template: rendering, and which tokens are the assistant's.

Training computes loss on assistant tokens only; export, Ollama's Modelfile and serving must render
exactly what training rendered. Everything goes through the base tokenizer's own chat template.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import InputError

IGNORE_INDEX = -100  # label value the loss skips (PyTorch's cross-entropy default)
Message = dict[str, str]


@dataclass(frozen=True, slots=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX except on assistant tokens

    @property
    def assistant_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def render(tokenizer: Any, messages: Sequence[Message], *, generation_prompt: bool = False) -> str:
    """The conversation as text, exactly as the model sees it."""
    if not getattr(tokenizer, "chat_template", None):
        raise InputError("the base model's tokenizer has no chat template: use an instruct/chat model")
    return str(
        tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)
    )


def encode(tokenizer: Any, messages: Sequence[Message], max_length: int | None = None) -> Encoded:
    """Token ids and labels: each assistant turn (with its end-of-turn token) is learned, nothing else.

    Assistant spans are found by rendering growing prefixes of the conversation, which works for
    any template whose rendering of a prefix is a prefix of the whole (ChatML, Llama 3, ...).
    """
    ids = _ids(tokenizer, messages, generation_prompt=False)
    labels = [IGNORE_INDEX] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_ids(tokenizer, messages[:i], generation_prompt=True))
        upto = _ids(tokenizer, messages[: i + 1], generation_prompt=False)
        end = len(upto)
        if ids[:end] != upto or start > end:
            raise InputError("this chat template is not prefix-stable: assistant tokens cannot be located")
        labels[start:end] = ids[start:end]
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return Encoded(ids, labels)


def _ids(tokenizer: Any, messages: Sequence[Message], *, generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(
        list(messages), tokenize=True, add_generation_prompt=generation_prompt
    )
    if hasattr(out, "keys"):  # transformers 5 returns a BatchEncoding
        out = out["input_ids"]
    return list(out)


# --- Rendering from a template string, and its translation to Ollama's Go TEMPLATE ---------------
# A GGUF carries the chat template as a string; serving it through Ollama needs the same text in Go's
# text/template syntax. The translation is derived, not hand-written: the Jinja template is rendered
# with sentinel messages, and each role's prefix and suffix are read off the output.

_SENTINEL = {  # whitespace at both ends: a template that trims content cannot be expressed in Go
    "system": " \nSYSTEM_x7Q2 \n",
    "user": " \nUSER_k3W9 \n",
    "assistant": " \nASSISTANT_p5Z1 \n",
}


@dataclass(frozen=True, slots=True)
class OllamaTemplate:
    template: str  # Go text/template over .Messages (Ollama's TEMPLATE)
    stop: list[str]  # stop sequences: end of the assistant's turn, start of a user turn, EOS


def render_template(
    template: str,
    messages: Sequence[Message],
    *,
    bos_token: str = "",
    eos_token: str = "",
    generation_prompt: bool = False,
) -> str:
    """The conversation rendered by a chat template string, exactly as transformers renders it."""
    from jinja2 import TemplateError

    try:
        return str(
            _compile(template).render(
                messages=[dict(m) for m in messages],
                add_generation_prompt=generation_prompt,
                bos_token=bos_token,
                eos_token=eos_token,
            )
        )
    except TemplateError as exc:
        raise InputError(f"the chat template failed to render this conversation: {exc}") from None


def ollama_template(template: str, *, bos_token: str = "", eos_token: str = "") -> OllamaTemplate:
    """Ollama's Go TEMPLATE and stop sequences, rendering exactly what the Jinja template renders.

    Raises:
        InputError: the template's structure cannot be expressed as per-role prefix/suffix pairs
            (content rewritten, turns that depend on their position, non prefix-stable output).
    """

    def render(messages: Sequence[Message], generation_prompt: bool = False) -> str:
        return render_template(
            template, messages, bos_token=bos_token, eos_token=eos_token, generation_prompt=generation_prompt
        )

    s, u, a = ({"role": r, "content": c} for r, c in _SENTINEL.items())
    try:
        head = render([])
    except InputError:  # some templates refuse an empty conversation
        head = ""
    with_system = _turns(render, [s, u, a, u, a], head)
    system, user, assistant = with_system[:3]
    without_system = _turns(render, [u, a, u], head)
    first_prefix, first_suffix = without_system[0]
    if with_system[3:] != [user, assistant] or without_system[1:] != [assistant, user]:
        raise _inexpressible("a role's turns render differently depending on their position")
    if first_suffix != user[1] or not first_prefix.endswith(user[0]):
        raise _inexpressible("the first user turn renders differently from later ones")
    default = first_prefix[: len(first_prefix) - len(user[0])]  # e.g. SmolLM2's default system prompt
    generation = _suffix(render([u, a, u]), render([u, a, u], True))
    parts = {"system": system, "user": user, "assistant": assistant}
    for conversation in ([s, u], [u, a, u, a, u], [s, u, a, u]):
        expected = head + (default if conversation[0]["role"] != "system" else "")
        expected += "".join(parts[m["role"]][0] + m["content"] + parts[m["role"]][1] for m in conversation)
        if render(conversation, True) != expected + generation:
            raise _inexpressible("its output is not a sequence of per-role turns")
    stop = [eos_token, assistant[1].strip(), user[0].strip()]
    return OllamaTemplate(
        _go_template(head, default, parts, generation), list(dict.fromkeys(x for x in stop if x))
    )


def _turns(render: Any, messages: list[Message], head: str) -> list[tuple[str, str]]:
    """(prefix, suffix) of each message: what its turn adds around its content."""
    out, before = [], head
    for i, message in enumerate(messages):
        after = render(messages[: i + 1])
        piece = _suffix(before, after)
        if piece.count(message["content"]) != 1:
            raise _inexpressible(f"it does not insert {message['role']} content verbatim")
        prefix, suffix = piece.split(message["content"])
        out.append((prefix, suffix))
        before = after
    return out


def _suffix(before: str, after: str) -> str:
    if not after.startswith(before):
        raise _inexpressible("rendering a longer conversation changes the start of the text")
    return after[len(before) :]


def _go_template(head: str, default: str, parts: dict[str, tuple[str, str]], generation: str) -> str:
    out = [_go_text(head), "{{ range $i, $_ := .Messages }}"]  # no "{{-": it would trim the text before it
    if default:
        out.append(f'{{{{ if and (eq $i 0) (ne .Role "system") }}}}{_go_text(default)}{{{{ end }}}}')
    for n, (role, (prefix, suffix)) in enumerate(parts.items()):
        keyword = "if" if n == 0 else "else if"
        out.append(
            f'{{{{ {keyword} eq .Role "{role}" }}}}{_go_text(prefix)}{{{{ .Content }}}}{_go_text(suffix)}'
        )
    out += ["{{ end }}{{ end }}", _go_text(generation)]
    return "".join(out)


def _go_text(text: str) -> str:
    """Literal text for a Go template; text that holds "{{" becomes a quoted string action."""
    import json

    return f"{{{{ {json.dumps(text, ensure_ascii=False)} }}}}" if "{{" in text else text


def _inexpressible(why: str) -> InputError:
    return InputError(f"this chat template cannot be translated to an Ollama TEMPLATE: {why}")


@functools.lru_cache(maxsize=8)
def _compile(template: str) -> Any:
    """The template compiled as transformers compiles chat templates (sandbox, globals, block trimming)."""
    from datetime import datetime

    from jinja2 import TemplateError
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):  # transformers' {% generation %} marks assistant text; it renders as is
        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            next(parser.stream)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, **kwargs: Any) -> str:
        import json

        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, **kwargs)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except TemplateError as exc:
        raise InputError(f"the chat template is not valid Jinja: {exc}") from None
