"""A tiny base model, an eval split, and a LoRA run really trained on it (seconds, once per session)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.chat_template import IGNORE_INDEX, encode

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TRAIN_STEPS = 40


def make_sample(task: str, user: str, answer: str, path: str, split: str = "eval", system: str = "") -> dict:
    """One dataset line in the extract step's shape."""
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    meta = {
        "task": task,
        "source_path": path,
        "lines": [3, 9],
        "commit": COMMIT,
        "lang": "python",
        "split": split,
    }
    return {"messages": messages, "meta": meta}


EVAL_SAMPLES = [
    make_sample(
        "locate",
        "Where is the function `load_items` defined?",
        "`load_items` is defined in `shop/io.py` at line 3.",
        "shop/io.py",
    ),
    make_sample(
        "locate",
        "In which file and line is `Cart.total` defined?",
        "`Cart.total` is defined in `shop/cart.py` at line 41.",
        "shop/cart.py",
    ),
    make_sample(
        "locate",
        "Where is the class `Ledger` defined?",
        "`Ledger` is defined in `shop/ledger.py` at line 12.",
        "shop/ledger.py",
    ),
    make_sample(
        "explain",
        "Explain what the function `load_items` in `shop/io.py` does.\n\n```python\ndef load_items(path):\n"
        "    return [Item(**row) for row in read_csv(path)]\n```",
        "Load every item of a CSV export into Item objects.",
        "shop/io.py",
    ),
    make_sample(
        "explain",
        "Describe the method `Cart.total` from `shop/cart.py`.\n\n```python\ndef total(self):\n"
        "    return sum(i.price * i.qty for i in self.items)\n```",
        "Sum the price times the quantity of every item in the cart.",
        "shop/cart.py",
    ),
    make_sample(
        "explain",
        "What is the purpose of the class `Ledger` defined in `shop/ledger.py`?",
        "An append-only record of payments and refunds, one entry per transaction.",
        "shop/ledger.py",
        system="You are the assistant of the shop repository.",
    ),
    make_sample(
        "docstring",
        "Write the docstring for this Python function from `shop/tax.py`.\n\n```python\ndef vat(amount):\n"
        "    return amount * RATE\n```",
        "The value-added tax owed on an amount.",
        "shop/tax.py",
    ),
    make_sample(
        "commit",
        "Describe this change.\n\n```diff\n-RATE = 0.19\n+RATE = 0.2\n```",
        "Raise the VAT rate to twenty percent.",
        "shop/tax.py",
    ),
]


def write_eval(directory: Path, rows: list[Any]) -> Path:
    """Write eval.jsonl (str rows verbatim, to plant malformed lines) and return the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    text = "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)
    (directory / "eval.jsonl").write_text(text, encoding="utf-8")
    return directory


@pytest.fixture
def eval_samples() -> list[dict[str, Any]]:
    """A fresh copy of the eval samples, free to modify."""
    return copy.deepcopy(EVAL_SAMPLES)


@pytest.fixture
def dataset(tmp_path: Path) -> Callable[[list[Any]], Path]:
    """Factory: a dataset directory under tmp_path whose eval.jsonl holds the given rows."""
    return lambda rows: write_eval(tmp_path / "dataset", rows)


@pytest.fixture(scope="session")
def eval_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset directory with EVAL_SAMPLES as its eval.jsonl."""
    return write_eval(tmp_path_factory.mktemp("dataset"), EVAL_SAMPLES)


@pytest.fixture(scope="session")
def tuned_run(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> Path:
    """A LoRA run in the core.trained layout, trained on the eval-like samples until it beats its base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_base))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_base), dtype=torch.float32)
    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, lora)
    ids, labels, mask = _batch(
        [encode(tokenizer, s["messages"]) for s in EVAL_SAMPLES], tokenizer.pad_token_id
    )
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    inner: Any = model.get_base_model()  # the llama itself: its trunk and lm_head are called apart
    threads = torch.get_num_threads()
    # one thread: ops this small gain nothing from more, and lose a lot when other jobs share the cores
    torch.set_num_threads(1)
    model.train()
    try:
        for _ in range(TRAIN_STEPS):
            # the vocabulary projection on answer tokens only: 5-20x faster than full logits on CPU
            hidden = inner.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1][keep]
            loss = torch.nn.functional.cross_entropy(inner.lm_head(hidden), targets[keep])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    run = tmp_path_factory.mktemp("run")
    model.save_pretrained(str(run / "adapter"))
    tokenizer.save_pretrained(str(run / "adapter"))
    manifest = {
        "base_model": str(tiny_base),
        "method": "lora",
        "config": {"rank": 8},
        "config_hash": "cfg0123456789abc",
        "dataset_hash": "data0123456789ab",
    }
    (run / "train.json").write_text(json.dumps(manifest), encoding="utf-8")
    return run


def _batch(encoded: list[Any], pad_id: int) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(e.input_ids) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id)
    labels = torch.full((len(encoded), width), IGNORE_INDEX)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, e in enumerate(encoded):
        ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[row, : len(e.labels)] = torch.tensor(e.labels)
        mask[row, : len(e.input_ids)] = 1
    return ids, labels, mask
