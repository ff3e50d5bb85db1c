"""What Ollama needs beside the weights: a TEMPLATE, stop sequences and parameters, read from the GGUF.

The TEMPLATE is generated from the GGUF's own chat template (core.chat_template.ollama_template), so
Ollama renders exactly what training rendered; nothing here is written by hand per model family.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.chat_template import ollama_template
from core.gguf import chat_template
from core.serving.base import ServedModel


@dataclass(frozen=True, slots=True)
class Modelfile:
    """The parts of an Ollama Modelfile that /api/create takes as fields (FROM is the uploaded blob)."""

    template: str | None  # None: no chat template (an embedding model)
    parameters: dict[str, Any] = field(default_factory=dict)


def modelfile_for(model: ServedModel) -> Modelfile:
    """TEMPLATE, stop sequences and num_ctx for a served model; `model.options` override parameters.

    Raises:
        InputError: the file is not a GGUF, or a text-generation GGUF has no usable chat template.
    """
    parameters: dict[str, Any] = {"num_ctx": model.n_ctx}
    if model.task == "text-embedding":
        return Modelfile(None, parameters | model.options)
    chat = chat_template(model.path)
    translated = ollama_template(chat.template, bos_token=chat.bos_token, eos_token=chat.eos_token)
    return Modelfile(translated.template, parameters | {"stop": translated.stop} | model.options)
