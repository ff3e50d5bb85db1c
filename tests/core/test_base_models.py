"""Base models resolve to local, loadable HF directories; nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.base_models import materialize
from core.errors import InputError


@pytest.mark.slow
def test_embedded_smollm2_becomes_a_trainable_hf_model_once(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = materialize("smollm2-135m", tmp_path)
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= {p.name for p in path.iterdir()}
    assert "quantization_config" not in json.loads((path / "config.json").read_text())
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert materialize("smollm2-135m", tmp_path) == path  # cached: not converted again
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2+2?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    out = model.generate(ids, max_new_tokens=10, do_sample=False)
    assert "4" in tok.decode(out[0][ids.shape[1] :])  # the dequantised weights still know arithmetic
    assert sum(p.requires_grad for p in model.parameters()) > 0


def test_a_local_hf_directory_is_used_as_is(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert materialize(str(tmp_path / "m"), tmp_path / "cache") == tmp_path / "m"


def test_an_unknown_model_is_a_clear_error_listing_what_is_available(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found.*embedded: smollm2-135m"):
        materialize("nobody/no-such-model-xyz", tmp_path)
