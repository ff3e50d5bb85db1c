"""A tiny llama-architecture model with the real SmolLM2 tokenizer: trains and converts in seconds."""

from __future__ import annotations

from pathlib import Path

from core.base_models import load_tokenizer
from core.chat_template import Message, encode

# hidden 256 keeps every row a multiple of 256, so llama.cpp's k-quants apply without fallbacks
TINY = {
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
}


def make_tiny_base(target: Path, cache_dir: Path, seed: int = 0) -> Path:
    """Save a randomly initialised 2-layer llama with the SmolLM2 tokenizer to `target` (once)."""
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer("smollm2-135m", cache_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY,
    )
    model = LlamaForCausalLM(config)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(target), safe_serialization=True)
    tokenizer.save_pretrained(str(target))
    return target


def make_tiny_run(run_dir: Path, base_dir: Path, method: str = "lora", seed: int = 0) -> Path:
    """A finetune output (core.trained contract) with a random, non-zero adapter: no training needed."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        init_lora_weights=False,  # random B: the adapter changes the logits
        use_dora=method == "dora",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, config)
    with torch.no_grad():  # scale the random update down so the tuned model stays a sane model
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.05)
    (run_dir / "adapter").mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(run_dir / "adapter"))
    AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(str(run_dir / "adapter"))
    manifest = {"base_model": str(base_dir), "method": method, "config": {}, "config_hash": "test"}
    (run_dir / "train.json").write_text(json.dumps(manifest))
    return run_dir


def recite(model_dir: Path, conversations: list[list[Message]], steps: int = 50) -> None:
    """Train the model in `model_dir` until greedy decoding recites each conversation's answer.

    A randomly initialised model has near-uniform logits and, with tied embeddings, just repeats
    a token: top-token parity would then hinge on near-ties and never exercise attention. A model
    that recites answers has clear winners that depend on the prompt, which is what parity needs.
    Only the embedding rows of the tokens in use (plus 2,048 random others, as negatives) are
    trained, as a small separate tensor: a step then costs milliseconds instead of updating all
    49,152 rows; the recited tokens still win over the whole vocabulary (checked below).
    """
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    rows = [encode(tokenizer, conv) for conv in conversations]
    width = max(len(r.input_ids) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(r.input_ids), torch.tensor(r.labels), 1
    vocab = torch.unique(torch.cat([ids.flatten(), torch.randint(0, len(tokenizer), (2048,))]))
    remap = torch.zeros(len(tokenizer), dtype=torch.long)
    remap[vocab] = torch.arange(len(vocab))
    targets = torch.where(labels[:, 1:] >= 0, remap[labels[:, 1:].clamp(min=0)], -100)
    embed = model.get_input_embeddings().weight
    rows_in_use = torch.nn.Parameter(embed.detach()[vocab].clone())
    embed.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad] + [rows_in_use]
    optimizer = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        hidden = model.model(inputs_embeds=rows_in_use[remap[ids]], attention_mask=mask).last_hidden_state
        logits = hidden[:, :-1] @ rows_in_use.T  # tied embeddings: the output matrix is the same rows
        F.cross_entropy(logits.reshape(-1, len(vocab)), targets.reshape(-1)).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)  # the loss spikes without it
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        embed[vocab] = rows_in_use
    model.eval()
    for conv, row in zip(conversations, rows, strict=True):
        prompt = row.input_ids[: next(i for i, x in enumerate(row.labels) if x != -100)]
        with torch.inference_mode():
            out = model.generate(torch.tensor([prompt]), max_new_tokens=40, do_sample=False)
        said = tokenizer.decode(out[0, len(prompt) :], skip_special_tokens=True)
        assert said == conv[-1]["content"], f"the tiny model did not learn to recite: {said!r}"
    model.save_pretrained(str(model_dir), safe_serialization=True)
