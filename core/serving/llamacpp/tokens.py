"""Token counts exactly as a model's llama.cpp server computes them, without asking the server.

llama_cpp.server ignores `stream_options.include_usage` and serves one request at a time (its
tokenize endpoint waits behind a running generation), so stream usage is counted here, in this
process, from a vocab-only load of the same GGUF (~0.1 s, a few MB): the prompt is rendered by the
same llama-cpp-python chat formatter the server uses for `chat_template.default` and tokenized
with the same flags, so the count is the server's own.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class TokenCounter:
    """Prompt and text token counts for one GGUF, matching llama-cpp-python's server."""

    def __init__(self, path: Path) -> None:
        from llama_cpp import Llama, llama_chat_format
        from llama_cpp._utils import suppress_stdout_stderr

        with suppress_stdout_stderr(disable=False):  # llama.cpp logs its context set-up regardless
            self._llama = Llama(model_path=str(path), vocab_only=True, n_ctx=16, n_batch=16, verbose=False)
        model = self._llama._model
        eos_id, bos_id = self._llama.token_eos(), self._llama.token_bos()
        template = self._llama.metadata.get("tokenizer.chat_template")
        self._formatter = (
            llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(eos_id) if eos_id != -1 else "",
                bos_token=model.token_get_text(bos_id) if bos_id != -1 else "",
                stop_token_ids=[eos_id],
            )
            if template
            else None
        )
        self._add_bos = bool(model.add_bos_token()) and bos_id != -1
        self._add_eos = bool(model.add_eos_token())
        self._lock = threading.Lock()  # one llama vocab, used from worker threads

    def chat_prompt(self, messages: Sequence[dict[str, Any]]) -> int | None:
        """Tokens of a chat request's prompt; None for a GGUF without a chat template."""
        if self._formatter is None:
            return None
        result = self._formatter(messages=list(messages))  # type: ignore[arg-type]
        with self._lock:
            ids = self._llama.tokenize(result.prompt.encode(), add_bos=not result.added_special, special=True)
        return len(ids)

    def completion_prompt(self, prompt: str) -> int:
        """Tokens of a text completion's prompt: BOS/EOS as the model adds them, special tokens parsed."""
        with self._lock:
            body = len(self._llama.tokenize(prompt.encode(), add_bos=False, special=True)) if prompt else 0
        return body + int(self._add_bos) + int(self._add_eos)

    def text(self, text: str) -> int:
        """Tokens of generated text (no BOS/EOS added)."""
        with self._lock:
            return len(self._llama.tokenize(text.encode(), add_bos=False, special=False))

    def close(self) -> None:
        self._llama.close()
