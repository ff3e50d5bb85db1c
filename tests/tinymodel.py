"""A tiny llama-architecture model with the real SmolLM2 tokenizer: trains and converts in seconds."""

from __future__ import annotations

from pathlib import Path

from core.base_models import load_tokenizer

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
