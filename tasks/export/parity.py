"""Does a GGUF predict what the HF model it came from predicts? What llama.cpp's quantization reports measure.

The HF model greedily continues a few prompts; then both models read the same token ids (prompt
plus continuation) and, at every continuation position, their full next-token distributions are
compared (teacher forcing keeps one early difference from derailing the rest of the sequence):

- mean KL(P_hf || P_gguf) over those positions, from float64 log-softmax over the whole vocabulary:
  it weighs every token by how likely the HF model finds it, so near-ties that flip under
  quantization noise cost little, while a damaged tensor shifts the whole distribution;
- the relative change of perplexity on the continuation tokens, |ppl_gguf / ppl_hf - 1|;
- top-1 agreement, reported only: small models have many near-ties, which quantization flips.

Chat templates play no part here: both sides get the same token ids, rendered by the HF tokenizer.
That the GGUF carries the right template is checked on its metadata when it is built (tasks.export.run).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

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


# Bumped when what a Parity measures changes: cached results of another method are not reused.
METHOD = "kl-ppl-1"

Logits = npt.NDArray[np.floating[Any]]


@dataclass(frozen=True, slots=True)
class Reference:
    """One prompt as the HF model sees it: token ids of prompt + greedy continuation, and its logits."""

    prompt_tokens: int
    ids: list[int]
    logits: Logits  # HF's logits at each continuation position (teacher-forced): positions x vocab

    @property
    def targets(self) -> list[int]:
        """The continuation tokens: the one each position of `logits` predicts."""
        return self.ids[self.prompt_tokens :]


@dataclass(frozen=True, slots=True)
class Parity:
    """A GGUF against the HF model over the same teacher-forced positions."""

    matches: int  # positions where both top tokens are the same
    positions: int
    prompts: int
    kl: float  # mean KL(P_hf || P_gguf) per position, nats
    kl_max: float  # the largest at one position
    nll_hf: float  # mean negative log-likelihood of the continuation tokens under the HF model
    nll_gguf: float  # ... and under the GGUF
    nonfinite: int = 0  # positions where the GGUF's logits held NaN or inf (left out of the means)

    @property
    def agreement(self) -> float:
        return self.matches / self.positions if self.positions else 0.0

    @property
    def ppl_hf(self) -> float:
        return math.exp(self.nll_hf)

    @property
    def ppl_gguf(self) -> float:
        return math.exp(self.nll_gguf)

    @property
    def ppl_change(self) -> float:
        """|ppl_gguf / ppl_hf - 1|."""
        return ppl_change(self.nll_hf, self.nll_gguf)

    @classmethod
    def compare(
        cls, hf: Sequence[Logits], gguf: Sequence[Logits], targets: Sequence[Sequence[int]]
    ) -> Parity:
        """The figures of one GGUF: per prompt, both models' logits at its positions and the tokens there."""
        kl, nll_hf, nll_gguf = [np.zeros(0)], [np.zeros(0)], [np.zeros(0)]
        matches = nonfinite = positions = 0
        for ref, got, tokens in zip(hf, gguf, targets, strict=True):
            if ref.shape != got.shape or len(tokens) != len(ref):
                raise ValueError(f"logits {got.shape} compared with {ref.shape} ({len(tokens)} tokens)")
            positions += len(tokens)
            finite = np.isfinite(got).all(axis=-1)
            nonfinite += int((~finite).sum())
            p, q = log_softmax(ref[finite]), log_softmax(got[finite])
            rows, kept = np.arange(len(p)), np.asarray(tokens, dtype=np.int64)[finite]
            kl.append(kl_divergence(p, q))
            matches += int((p.argmax(axis=-1) == q.argmax(axis=-1)).sum())
            nll_hf.append(-p[rows, kept])
            nll_gguf.append(-q[rows, kept])
        kls, a, b = (np.concatenate(x) for x in (kl, nll_hf, nll_gguf))
        kl_max = float(kls.max()) if len(kls) else 0.0
        return cls(matches, positions, len(targets), _mean(kls), kl_max, _mean(a), _mean(b), nonfinite)


def _mean(x: npt.NDArray[np.float64]) -> float:
    return float(x.mean()) if len(x) else 0.0


def log_softmax(logits: Logits) -> npt.NDArray[np.float64]:
    """Log-probabilities over the last axis, in float64."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def kl_divergence(logp: npt.NDArray[np.float64], logq: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """KL(P || Q) in nats over the last axis, from log-probabilities; one value per row."""
    return np.asarray((np.exp(logp) * (logp - logq)).sum(axis=-1), dtype=np.float64)


def ppl_change(nll_ref: float, nll: float) -> float:
    """|ppl / ppl_ref - 1| from the mean NLLs: ppl / ppl_ref = exp(nll - nll_ref)."""
    return abs(math.expm1(nll - nll_ref))


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
    """Greedy continuations (up to EOS) of each prompt by the HF model, and its teacher-forced logits."""
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
            refs.append(Reference(len(prompt), full, logits.float().numpy().copy()))
    return refs


def gguf_parity(gguf: Path, refs: Sequence[Reference]) -> Parity:
    """KL, perplexity change and top-token agreement of llama.cpp running `gguf` against the HF references."""
    from llama_cpp import Llama

    if not refs:
        raise InputError("no parity prompt fits the context: raise export.n_ctx or use shorter prompts")
    longest = max(len(r.ids) for r in refs)
    # logits_all keeps an n_ctx x vocab float buffer: size the context to the longest sequence only
    n_ctx = -(-longest // 64) * 64
    llm = Llama(model_path=str(gguf), n_ctx=n_ctx, n_batch=min(n_ctx, 512), logits_all=True, verbose=False)
    logits = []
    try:
        for ref in refs:
            llm.reset()
            llm.eval(ref.ids)
            logits.append(np.array(llm.scores[ref.prompt_tokens - 1 : len(ref.ids) - 1], dtype=np.float32))
    finally:
        llm.close()
    result = Parity.compare([r.logits for r in refs], logits, [r.targets for r in refs])
    log.info(
        "%s: mean KL %.5f (max %.4f), perplexity %.4f vs HF %.4f (%+.2f%%), top-1 agreement %d/%d%s",
        gguf.name,
        result.kl,
        result.kl_max,
        result.ppl_gguf,
        result.ppl_hf,
        100 * (result.ppl_gguf / result.ppl_hf - 1),
        result.matches,
        result.positions,
        f", non-finite logits at {result.nonfinite} positions" if result.nonfinite else "",
    )
    return result


def fit_prompts(prompts: Sequence[list[int]], new_tokens: int, n_ctx: int) -> list[list[int]]:
    """The prompts that leave room for `new_tokens` in a context of `n_ctx` tokens."""
    kept = [p for p in prompts if len(p) + new_tokens <= n_ctx]
    if len(kept) < len(prompts):
        log.warning("%d parity prompts skipped: longer than export.n_ctx allows", len(prompts) - len(kept))
    return kept
