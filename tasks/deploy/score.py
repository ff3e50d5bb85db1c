"""Perplexity of a GGUF on a dataset's eval split, scored by llama.cpp itself.

The promote gate compares the new model with the serving champion on the *new* eval set: the
champion's recorded perplexity was measured on older data, so it is not comparable. Both GGUFs are
scored the same way (assistant tokens only, the base tokenizer's chat template), which is what
they will be served as.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from core.chat_template import IGNORE_INDEX, encode
from core.dataset import load_eval_set


def gguf_perplexity(gguf: Path, data_dir: Path, tokenizer: Any, *, max_samples: int, n_ctx: int) -> float:
    """exp(mean NLL) of `gguf` over the assistant tokens of the first `max_samples` eval samples."""
    from llama_cpp import Llama

    conversations = load_eval_set(data_dir).conversations()[:max_samples]
    llm = Llama(str(gguf), n_ctx=n_ctx, logits_all=True, verbose=False, n_threads=None)
    nll, count = 0.0, 0
    try:
        for conversation in conversations:
            enc = encode(tokenizer, conversation, max_length=n_ctx)
            ids, labels = enc.input_ids, enc.labels
            if len(ids) < 2:
                continue
            llm.reset()
            llm.eval(ids)
            logits = np.asarray(llm.scores[: len(ids) - 1], dtype=np.float64)
            targets = np.asarray(labels[1:])
            keep = targets != IGNORE_INDEX
            if not keep.any():
                continue
            rows = logits[keep]
            top = rows.max(axis=1, keepdims=True)
            log_z = top[:, 0] + np.log(np.exp(rows - top).sum(axis=1))
            nll += float((log_z - rows[np.arange(len(rows)), targets[keep]]).sum())
            count += int(keep.sum())
    finally:
        llm.close()
    if count == 0:
        raise ValueError("no assistant token to score in the eval split")
    return math.exp(nll / count)
