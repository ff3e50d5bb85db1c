"""What Ollama needs beside the weights: a TEMPLATE, stop sequences and parameters, read from the GGUF.

The TEMPLATE is generated from the GGUF's own chat template (core.chat_template.ollama_template), so
Ollama renders exactly what training rendered; nothing here is written by hand per model family.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.chat_template import ollama_template
from core.errors import InputError
from core.gguf import inspect_gguf
from core.serving.base import ServedModel


@dataclass(frozen=True, slots=True)
class Modelfile:
    """The parts of an Ollama Modelfile that /api/create takes as fields (FROM is the uploaded blob)."""

    template: str | None  # None: no chat template (an embedding model)
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GGUFChat:
    template: str
    bos_token: str
    eos_token: str


def modelfile_for(model: ServedModel) -> Modelfile:
    """TEMPLATE, stop sequences and num_ctx for a served model; `model.options` override parameters.

    Raises:
        InputError: the file is not a GGUF, or a text-generation GGUF has no usable chat template.
    """
    parameters: dict[str, Any] = {"num_ctx": model.n_ctx}
    if model.task == "text-embedding":
        return Modelfile(None, parameters | model.options)
    chat = gguf_chat(model.path)
    translated = ollama_template(chat.template, bos_token=chat.bos_token, eos_token=chat.eos_token)
    return Modelfile(translated.template, parameters | {"stop": translated.stop} | model.options)


def gguf_chat(path: Path) -> GGUFChat:
    """The chat template a GGUF carries, with the text of its BOS and EOS tokens."""
    metadata = inspect_gguf(path).metadata
    template = metadata.get("tokenizer.chat_template")
    if not isinstance(template, str) or not template:
        raise InputError(f"{path.name} has no chat template (tokenizer.chat_template): export a chat model")
    ids = {key: metadata.get(f"tokenizer.ggml.{key}_token_id") for key in ("bos", "eos")}
    tokens = _tokens(path, [i for i in ids.values() if isinstance(i, int)])
    bos, eos = (tokens.get(i, "") if isinstance(i, int) else "" for i in ids.values())
    return GGUFChat(template, bos, eos)


def _tokens(path: Path, ids: list[int]) -> dict[int, str]:
    """Text of a few tokens of the GGUF's vocabulary (inspect_gguf, which ran first, keeps only lengths).

    A direct walk of the header: gguf.GGUFReader would map every tensor and token, ten times slower.
    """
    wanted, out = set(ids), {}
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        pos = _HEADER.size
        for _ in range(_U64.unpack_from(buf, 16)[0]):
            key, pos = _string(buf, pos)
            vtype, pos = _U32.unpack_from(buf, pos)[0], pos + 4
            is_strings = vtype == _ARRAY and _U32.unpack_from(buf, pos)[0] == _STRING
            if key == "tokenizer.ggml.tokens" and is_strings:
                count = _U64.unpack_from(buf, pos + 4)[0]
                pos += 12
                for i in range(count):
                    token, pos = _string(buf, pos)
                    if i in wanted:
                        out[i] = token
                if missing := sorted(wanted - out.keys()):
                    raise InputError(f"{path.name}: token id {missing[0]} is past its {count} tokens")
                return out
            pos = _skip(buf, pos, vtype)
    raise InputError(f"{path.name} has no vocabulary (tokenizer.ggml.tokens): export it again")


_HEADER = struct.Struct("<4sIQQ")
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")
_ARRAY, _STRING = 9, 8
_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUF scalar types


def _string(buf: mmap.mmap, pos: int) -> tuple[str, int]:
    n = _U64.unpack_from(buf, pos)[0]
    return buf[pos + 8 : pos + 8 + n].decode("utf-8"), pos + 8 + n


def _skip(buf: mmap.mmap, pos: int, vtype: int) -> int:
    if vtype in _SIZES:
        return pos + _SIZES[vtype]
    if vtype == _STRING:
        return pos + 8 + _U64.unpack_from(buf, pos)[0]
    item, count = _U32.unpack_from(buf, pos)[0], _U64.unpack_from(buf, pos + 4)[0]
    pos += 12
    if item in _SIZES:
        return pos + count * _SIZES[item]
    for _ in range(count):
        pos = _skip(buf, pos, item)
    return pos
