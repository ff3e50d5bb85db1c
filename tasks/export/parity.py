"""Does a GGUF predict what the HF model it came from predicts? Teacher-forced top-token agreement.

The HF model greedily continues a few fixed prompts; then both models read the same token ids
(prompt plus continuation) and, at every continuation position, their top tokens are compared.
Teacher forcing keeps one early disagreement from derailing the rest of the sequence.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.chat_template import Message, render
from core.dataset import load_eval_set
from core.errors import InputError

log = logging.getLogger(__name__)

# Used when no eval split is given: short, everyday coding requests.
BUILTIN_PROMPTS = (
    "Write a Python function that returns the sum of two numbers.",
    "Explain what `git rebase` does in one paragraph.",
    "Write a unit test for a function `slugify(text)` that lowercases and joins words with dashes.",
    "How do I reverse a string in Python?",
)


@dataclass(frozen=True, slots=True)
class Reference:
    """One prompt as the HF model sees it: token ids of prompt + greedy continuation, and its top tokens."""

    prompt_tokens: int
    ids: list[int]
    top: list[int]  # HF's argmax at each continuation position (teacher-forced)
    margin: list[float]  # HF's top-1 minus top-2 logit there: near 0 is a near-tie, easily flipped


@dataclass(frozen=True, slots=True)
class Parity:
    matches: int
    positions: int
    prompts: int

    @property
    def agreement(self) -> float:
        return self.matches / self.positions if self.positions else 0.0


def parity_conversations(eval_data: Path | None, n: int) -> list[list[Message]]:
    """Up to `n` conversations to continue: the eval split's, without their final answer, or built-ins.

    Args:
        eval_data: a dataset directory holding eval.jsonl (None: the built-in prompts).
    """
    if eval_data is None:
        return [[{"role": "user", "content": p}] for p in BUILTIN_PROMPTS[:n]]

    conversations = []
    for messages in load_eval_set(eval_data).conversations():
        last_answer = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        prompt = messages[:last_answer] if last_answer is not None else messages
        if any(m["role"] == "user" for m in prompt):
            conversations.append(prompt)
        if len(conversations) == n:
            break
    return conversations


def encode_prompts(tokenizer: Any, conversations: Sequence[Sequence[Message]]) -> list[list[int]]:
    """Token ids of each conversation rendered with the generation prompt, as training tokenized it."""
    encoded = []
    for messages in conversations:
        text = render(tokenizer, messages, generation_prompt=True)
        # The rendered text already holds the template's BOS, if it has one: adding special tokens
        # here would put a second BOS in front. llama.cpp gets these same ids, so neither side adds one.
        encoded.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return encoded


def reference_key(model_hash: str, prompts: Sequence[Sequence[int]], new_tokens: int) -> str:
    """Content key of a parity check's inputs: the reference weights, the prompt ids, the length."""
    blob = json.dumps([model_hash, [list(p) for p in prompts], new_tokens]).encode()
    return hashlib.sha256(blob).hexdigest()


def hf_references(model: Any, prompts: Sequence[Sequence[int]], new_tokens: int) -> list[Reference]:
    """Greedy continuations (up to EOS) of each prompt by the HF model, and its teacher-forced top tokens."""
    import torch
    from transformers import GenerationConfig

    eos = model.generation_config.eos_token_id or model.config.eos_token_id
    # A fresh config: the model's own may ask for sampling, top_p and the like.
    gen = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    refs = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([list(prompt)])
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gen)
            full = out[0].tolist()
            logits = model(torch.tensor([full])).logits[0, len(prompt) - 1 : len(full) - 1]
            best = logits.topk(2, dim=-1)
            margin = (best.values[:, 0] - best.values[:, 1]).tolist()
            refs.append(Reference(len(prompt), full, best.indices[:, 0].tolist(), margin))
    return refs


def gguf_parity(gguf: Path, refs: Sequence[Reference]) -> Parity:
    """Teacher-forced top-token agreement of llama.cpp running `gguf` with the HF references."""
    from llama_cpp import Llama

    if not refs:
        raise InputError("no parity prompt fits the context: raise export.n_ctx or use shorter prompts")
    longest = max(len(r.ids) for r in refs)
    # logits_all keeps an n_ctx x vocab float buffer: size the context to the longest sequence only
    n_ctx = -(-longest // 64) * 64
    llm = Llama(model_path=str(gguf), n_ctx=n_ctx, n_batch=min(n_ctx, 512), logits_all=True, verbose=False)
    positions = 0
    missed: list[float] = []  # HF's margins where the GGUF picked another token
    try:
        for ref in refs:
            llm.reset()
            llm.eval(ref.ids)
            top = llm.scores[ref.prompt_tokens - 1 : len(ref.ids) - 1].argmax(axis=-1).tolist()
            missed += [m for a, b, m in zip(top, ref.top, ref.margin, strict=True) if a != b]
            positions += len(ref.top)
    finally:
        llm.close()
    log.info("%s: %d of %d top tokens agree with the HF model", gguf.name, positions - len(missed), positions)
    if missed:  # near-ties flip under quantization noise; large margins point at a conversion problem
        log.info(
            "%s: HF's top-1 lead at the disagreements: %s", gguf.name, ", ".join(f"{m:.3f}" for m in missed)
        )
    return Parity(positions - len(missed), positions, len(refs))


def fit_prompts(prompts: Sequence[list[int]], new_tokens: int, n_ctx: int) -> list[list[int]]:
    """The prompts that leave room for `new_tokens` in a context of `n_ctx` tokens."""
    kept = [p for p in prompts if len(p) + new_tokens <= n_ctx]
    if len(kept) < len(prompts):
        log.warning("%d parity prompts skipped: longer than export.n_ctx allows", len(prompts) - len(kept))
    return kept
