"""Fine-tuning with real peft + trl on a tiny llama: loss falls, resume is exact, PiSSA exports as LoRA."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from core.config import TrainConfig
from core.errors import InputError
from core.reports import FinetuneReport
from core.trained import load_tuned, read_run
from tasks.finetune.run import encode_split, finetune, load_profile
from tasks.finetune.trainer import complete_checkpoints


def _cfg(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        rank=8, alpha=16, dropout=0.05, learning_rate=5e-3, lr_scheduler="constant", warmup_ratio=0.0,
        max_steps=6, batch_size=2, grad_accum=1, max_length=128, save_steps=2, keep_checkpoints=2,
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def _run(dataset: Path, base: Path, out: Path, cache: Path, cfg: TrainConfig, **kw: Any) -> FinetuneReport:
    return finetune(dataset, str(base), out, cfg, cache, **kw)


@pytest.mark.integration
def test_training_lowers_the_loss_and_leaves_a_complete_run(
    dataset: Path, tiny_base: Path, cache_dir: Path, tmp_path: Path
) -> None:
    events: list[dict[str, Any]] = []
    report = _run(dataset, tiny_base, tmp_path / "run", cache_dir, _cfg(max_steps=10), progress=events.append)
    assert report.status == "completed" and report.steps == 10
    losses = [loss for _, loss in report.loss_curve]
    assert len(losses) == 10
    assert sum(losses[-3:]) / 3 < losses[0] - 0.5, losses  # learned, not noise
    assert [e["step"] for e in events] == list(range(1, 11))
    assert all(e["tokens_per_second"] > 0 and "epoch" in e and "loss" in e for e in events)
    assert report.tokens > 0 and report.source_commit == "a" * 40
    run = read_run(tmp_path / "run")
    assert run.base_model == str(tiny_base) and run.manifest["dataset_hash"] == report.dataset_hash
    assert not (tmp_path / "run" / "run.json").exists()
    assert [p.name for p in complete_checkpoints(tmp_path / "run" / "checkpoints")] == [
        "checkpoint-8",
        "checkpoint-10",
    ]  # keep_checkpoints=2, older ones pruned
    assert not list((tmp_path / "run" / "checkpoints").glob(".staging-*"))


def test_only_assistant_tokens_carry_labels(dataset: Path, tiny_base: Path, cache_dir: Path) -> None:
    from core.base_models import load_tokenizer

    tok = load_tokenizer(str(tiny_base), cache_dir)
    rows, truncated, dropped = encode_split(tok, dataset / "train.jsonl", max_length=128)
    assert len(rows) == 16 and truncated == 0 and dropped == 0
    learned = tok.decode([t for t in rows[0]["labels"] if t != -100])
    assert learned == "`load_profile` is defined in tasks/finetune.py.<|im_end|>\n"  # answer + end of turn
    rows, truncated, dropped = encode_split(tok, dataset / "train.jsonl", max_length=24)
    assert truncated == 16 and dropped == 16  # the prompt alone fills 24 tokens: nothing left to learn


def test_packed_rows_keep_attention_within_each_sample(
    dataset: Path, tiny_base: Path, cache_dir: Path
) -> None:
    """Logits of two samples packed in one row equal their logits apart (no cross-sample attention).

    Training runs with use_cache=False, which is what lets transformers see the packing in position_ids.
    """
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from core.base_models import load_tokenizer

    tok = load_tokenizer(str(tiny_base), cache_dir)
    rows, _, _ = encode_split(tok, dataset / "train.jsonl", max_length=128)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_base), dtype=torch.float32).eval()
    a, b = rows[0], rows[3]
    packed = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(
        [{"input_ids": a["input_ids"] + b["input_ids"], "labels": a["labels"] + b["labels"],
          "seq_lengths": [len(a["input_ids"]), len(b["input_ids"])]}]
    )  # fmt: skip
    with torch.no_grad():
        packed_logits = model(
            **{k: packed[k] for k in ("input_ids", "position_ids")}, use_cache=False
        ).logits[0]
        apart = [model(input_ids=torch.tensor([r["input_ids"]])).logits[0] for r in (a, b)]
    assert torch.allclose(packed_logits, torch.cat(apart), atol=1e-4)


@pytest.mark.integration
def test_a_paused_run_resumes_with_the_same_loss_curve(
    dataset: Path, tiny_base: Path, cache_dir: Path, tmp_path: Path
) -> None:
    cfg = _cfg(max_steps=6, save_steps=2)
    straight = _run(dataset, tiny_base, tmp_path / "straight", cache_dir, cfg)

    out = tmp_path / "paused"
    asked = False

    def pause_at_3(event: dict[str, Any]) -> None:
        nonlocal asked
        asked = asked or event["step"] == 2  # asked during step 2's report: honoured at the end of step 3

    # what the flow's pause point answers once the API has asked for a pause
    first = _run(dataset, tiny_base, out, cache_dir, cfg, progress=pause_at_3, should_pause=lambda: asked)
    assert first.status == "paused" and first.steps == 3
    assert complete_checkpoints(out / "checkpoints")[-1].name == "checkpoint-3"
    assert not (out / "train.json").exists()  # not complete: nothing downstream may use it
    with pytest.raises(InputError, match="--resume"):
        _run(dataset, tiny_base, out, cache_dir, cfg)
    second = _run(dataset, tiny_base, out, cache_dir, cfg, resume=True)
    assert second.status == "completed" and second.steps == 6
    resumed = dict(first.loss_curve) | dict(second.loss_curve)
    expected = dict(straight.loss_curve)
    assert sorted(resumed) == sorted(expected) == list(range(1, 7))
    for step in expected:
        assert resumed[step] == pytest.approx(expected[step], abs=1e-4), step


@pytest.mark.integration
def test_resume_refuses_a_changed_config(
    dataset: Path, tiny_base: Path, cache_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    first = _run(dataset, tiny_base, out, cache_dir, _cfg(), should_pause=lambda: True)
    assert first.status == "paused" and first.steps == 1
    with pytest.raises(InputError, match="changed since the checkpoint"):
        _run(dataset, tiny_base, out, cache_dir, _cfg(learning_rate=1e-3), resume=True)
    with pytest.raises(InputError, match="nothing to resume"):
        _run(dataset, tiny_base, tmp_path / "fresh", cache_dir, _cfg(), resume=True)
    fresh = _run(dataset, tiny_base, out, cache_dir, _cfg(max_steps=2, learning_rate=1e-3), overwrite=True)
    assert fresh.status == "completed" and fresh.steps == 2  # the paused run's files were discarded
    assert [p.name for p in complete_checkpoints(out / "checkpoints")] == ["checkpoint-2"]


@pytest.mark.integration
def test_a_finished_run_is_not_retrained(
    dataset: Path, tiny_base: Path, cache_dir: Path, tmp_path: Path
) -> None:
    cfg = _cfg(max_steps=2)
    first = _run(dataset, tiny_base, tmp_path / "run", cache_dir, cfg)
    stamp = (tmp_path / "run" / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns
    again = _run(dataset, tiny_base, tmp_path / "run", cache_dir, cfg)
    assert again.status == "cached" and again.loss_curve == first.loss_curve
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.integration
def test_pissa_is_saved_as_a_lora_the_original_base_can_take(
    dataset: Path, tiny_base: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """The trained PiSSA model (residual base + adapter) == original base + converted LoRA == merged."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from tasks.finetune.trainer import build_model

    cfg = _cfg(method="pissa", max_steps=4, save_steps=4, dropout=0.0, alpha=8)
    out = tmp_path / "run"
    _run(dataset, tiny_base, out, cache_dir, cfg)
    adapter_cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == 2 * cfg.rank  # converted: rank doubles
    assert adapter_cfg["init_lora_weights"] is True

    trained = build_model(cfg, tiny_base, "peft")  # same seed: the same residual base
    state = load_file(str(out / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors"))
    set_peft_model_state_dict(trained, state)
    trained.eval()
    converted, _ = load_tuned(read_run(out), cache_dir)
    ids = torch.tensor([[1, 504, 3458, 314, 253, 1675, 30, 2]])
    with torch.no_grad():
        want = trained(input_ids=ids).logits
        got = converted(input_ids=ids).logits
        merged = converted.merge_and_unload()(input_ids=ids).logits
    assert not torch.allclose(want, build_model(_cfg(), tiny_base, "peft")(input_ids=ids).logits, atol=1e-3)
    assert torch.allclose(got, want, atol=1e-4)
    assert torch.allclose(merged, want, atol=1e-4)


def test_qlora_on_cpu_is_refused_clearly(
    dataset: Path, tiny_base: Path, cache_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(InputError, match="qlora' needs a CUDA GPU"):
        _run(dataset, tiny_base, tmp_path / "run", cache_dir, _cfg(method="qlora"))
    assert not (tmp_path / "run").exists()


def test_bad_inputs_are_clear_errors(dataset: Path, tiny_base: Path, cache_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no train.jsonl"):
        _run(tmp_path, tiny_base, tmp_path / "run", cache_dir, _cfg())
    with pytest.raises(InputError, match="unknown training profile 'nope'; known: cpu-full, cpu-quick, gpu"):
        load_profile("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rank: 8\nlearning_rat: 0.1\n")
    with pytest.raises(InputError, match="bad.yaml is invalid"):
        load_profile(bad)
    with pytest.raises(InputError, match="none of target_modules"):
        _run(dataset, tiny_base, tmp_path / "run2", cache_dir, _cfg(target_modules=["c_attn"]))


@pytest.mark.parametrize("profile", ["cpu-quick", "cpu-full", "gpu-standard"])
def test_shipped_profiles_load_and_start_with_their_command(profile: str) -> None:
    from core.settings import config_file

    cfg = load_profile(profile, max_steps=3)
    assert cfg.max_steps == 3
    shipped = config_file(f"train/{profile}.yaml")
    assert shipped is not None
    first = shipped.read_text().splitlines()[0]
    assert first.startswith("# forgeflow finetune ") and f"--profile {profile}" in first


def test_assistant_only_lm_head_gives_trl_s_loss(
    dataset: Path, tiny_base: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """The LM head run only on assistant positions yields the same loss as trl's full computation."""
    from datasets import Dataset

    from core.base_models import load_tokenizer
    from tasks.finetune.trainer import ForgeflowTrainer, build_model, sft_config

    cfg = _cfg()
    tok = load_tokenizer(str(tiny_base), cache_dir)
    rows, _, _ = encode_split(tok, dataset / "train.jsonl", max_length=128)
    trainer = ForgeflowTrainer(
        model=build_model(cfg, tiny_base, "peft"),
        args=sft_config(cfg, tmp_path / "ckpt"),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    assert "position_ids" in batch and "attention_mask" not in batch  # packed, padding-free
    with torch.no_grad():
        ours = trainer.compute_loss(trainer.model, dict(batch))
        trainer.assistant_only_head = False
        theirs = trainer.compute_loss(trainer.model, dict(batch))
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
