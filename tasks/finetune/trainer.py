"""The training machinery under `tasks.finetune.run`: backend, adapter setup, the trainer and its hooks.

One configuration, two backends: peft + trl on CPU (and on CUDA without unsloth), unsloth's
`FastLanguageModel` when CUDA and the `gpu` extra are present. Both end in the same trl
`SFTTrainer`, so checkpoints, resume, pause and progress behave the same.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from trl import SFTTrainer

from core.chat_template import IGNORE_INDEX
from core.config import TrainConfig
from core.errors import InputError

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
Progress = Callable[[dict[str, Any]], None]


def select_backend(cfg: TrainConfig) -> str:
    """`unsloth` or `peft`, or a clear error when the configuration asks for what this machine lacks."""
    cuda = torch.cuda.is_available()
    unsloth = cuda and importlib.util.find_spec("unsloth") is not None
    if cfg.method == "qlora" and not cuda:
        raise InputError(
            "method 'qlora' needs a CUDA GPU (4-bit bitsandbytes); on CPU use lora, pissa or dora"
        )
    if cfg.backend == "unsloth" and not unsloth:
        why = (
            "no CUDA GPU here"
            if not cuda
            else "the gpu extra is not installed (pip install 'forgeflow[gpu]')"
        )
        raise InputError(f"backend 'unsloth' is unavailable: {why}; use backend 'peft' or 'auto'")
    if cfg.backend == "auto":
        return "unsloth" if unsloth else "peft"
    return cfg.backend


def torch_dtype(cfg: TrainConfig) -> torch.dtype:
    """fp32 on CPU (bf16 matmuls there are slower and lossy); bf16 on GPUs that have it, else fp16."""
    if cfg.dtype != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.dtype]
    if not torch.cuda.is_available():
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def lora_init(cfg: TrainConfig) -> bool | str:
    """peft's `init_lora_weights` for the method: PiSSA starts from the principal singular vectors."""
    if cfg.method != "pissa":
        return True
    return "pissa" if cfg.pissa_niter == 0 else f"pissa_niter_{cfg.pissa_niter}"


def build_model(cfg: TrainConfig, base_path: Path, backend: str) -> Any:
    """The base model with a fresh adapter (seeded, so a resumed run rebuilds the same PiSSA residual)."""
    torch.manual_seed(cfg.seed)
    if backend == "unsloth":
        return _build_unsloth(cfg, base_path)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": torch_dtype(cfg)}
    if cfg.method == "qlora":
        kwargs["quantization_config"] = _four_bit_config()
    model = AutoModelForCausalLM.from_pretrained(str(base_path), **kwargs)
    if cfg.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    config = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=_present_targets(model, cfg.target_modules),
        init_lora_weights=lora_init(cfg),  # type: ignore[arg-type]
        use_dora=cfg.method == "dora",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def _build_unsloth(cfg: TrainConfig, base_path: Path) -> Any:
    from unsloth import FastLanguageModel

    model, _tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(base_path),
        max_seq_length=cfg.max_length,
        dtype=torch_dtype(cfg),
        load_in_4bit=cfg.method == "qlora",
    )
    return FastLanguageModel.get_peft_model(
        model,
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        use_gradient_checkpointing="unsloth" if cfg.gradient_checkpointing else False,
        random_state=cfg.seed,
        use_dora=cfg.method == "dora",
        init_lora_weights=lora_init(cfg),
    )


def sft_config(cfg: TrainConfig, output_dir: Path) -> Any:
    """trl's SFTConfig for a profile: packing, checkpoint cadence, seeds, device and precision."""
    from trl import SFTConfig

    dtype = torch_dtype(cfg)
    return SFTConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        logging_steps=1,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=None,  # ForgeflowTrainer prunes, after the new checkpoint is in place
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none",
        disable_tqdm=True,  # progress goes through ProgressCallback (rich in the CLI, artifacts in Prefect)
        max_length=cfg.max_length,
        packing=cfg.packing,
        packing_strategy="bfd",  # best-fit decreasing: whole samples, attention kept within each
        train_sampling_strategy="random" if cfg.packing else "group_by_length",
        include_num_input_tokens_seen="all" if cfg.packing else "non_padding",
        gradient_checkpointing=cfg.gradient_checkpointing,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        dataset_num_proc=None,
    )


def _four_bit_config() -> Any:
    if importlib.util.find_spec("bitsandbytes") is None:
        raise InputError("method 'qlora' needs bitsandbytes: pip install bitsandbytes (CUDA only)")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def _present_targets(model: Any, wanted: list[str]) -> list[str]:
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    present = [t for t in wanted if t in names]
    if not present:
        raise InputError(
            f"none of target_modules {wanted} exist in this model; its linear layers include: "
            + ", ".join(sorted(n for n in names if n.endswith("proj"))[:12])
        )
    return present


class ForgeflowTrainer(SFTTrainer):
    """An SFTTrainer with an assistant-only LM head and checkpoints that appear whole or not at all.

    Loss: the LM head (vocab-sized, the costliest layer of a small model) runs only on positions
    whose next token is an assistant token; prompts, system text and packing boundaries never reach
    it. Checkpoints: each is written into a hidden staging directory and renamed into place, so a
    crash mid-save never leaves a `checkpoint-N` that `--resume` would trust; older ones are pruned
    only after the new one is in place.
    """

    keep_checkpoints = 2
    assistant_only_head = True
    _staging: Path | None = None

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        if not self.assistant_only_head or return_outputs or not _plain_lm_head(base):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs["labels"]
        kwargs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
        hidden = base.get_decoder()(**kwargs, use_cache=False).last_hidden_state[:, :-1]
        targets = labels[:, 1:]
        mask = targets != IGNORE_INDEX
        logits = base.get_output_embeddings()(hidden[mask]).float()
        total = torch.nn.functional.cross_entropy(logits, targets[mask], reduction="sum")
        count = num_items_in_batch if num_items_in_batch is not None else mask.sum()
        return total / torch.as_tensor(count, device=total.device).clamp(min=1)

    def _get_output_dir(self, trial: Any) -> str:
        return str(self._staging) if self._staging is not None else str(super()._get_output_dir(trial))

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        root = Path(str(self.args.output_dir))
        root.mkdir(parents=True, exist_ok=True)
        name = f"{CHECKPOINT_PREFIX}{self.state.global_step}"
        self._staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
        try:
            super()._save_checkpoint(model, trial)
            target = root / name
            if target.exists():  # the same step saved again (pause right on a save step)
                shutil.rmtree(target)
            (self._staging / name).replace(target)
        finally:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        for old in complete_checkpoints(root)[: -self.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)


def _plain_lm_head(model: Any) -> bool:
    """True for decoders whose logits are just lm_head(hidden): no soft-capping or logit scaling."""
    config = model.config.get_text_config()
    special = ("final_logit_softcapping", "logit_scale", "output_multiplier", "logits_scaling")
    return hasattr(model, "get_decoder") and all(getattr(config, k, None) is None for k in special)


def complete_checkpoints(root: Path) -> list[Path]:
    """Checkpoint directories under `root`, oldest first (staging leftovers are never listed)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)]
    found = [p for p in found if p.name[len(CHECKPOINT_PREFIX) :].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def clear_staging(root: Path) -> None:
    """Remove half-written checkpoints a crashed run left behind."""
    if root.is_dir():
        for p in root.glob(".staging-*"):
            shutil.rmtree(p, ignore_errors=True)


class ProgressCallback(TrainerCallback):
    """Reports epoch, step, loss and tokens/s after every logged step; honours pause requests."""

    def __init__(self, progress: Progress | None, should_pause: Callable[[], bool] | None) -> None:
        self.progress = progress
        self.should_pause = should_pause
        self.paused = False
        self._t0 = 0.0
        self._tokens0 = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._t0 = time.perf_counter()
        self._tokens0 = state.num_input_tokens_seen

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.should_pause is not None and self.should_pause():
            # save at this step boundary, then stop; --resume continues from exactly here
            self.paused = True
            control.should_save = True
            control.should_training_stop = True

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        if not logs or "loss" not in logs:
            return
        if self.progress is not None:
            self.progress(
                {
                    "epoch": round(float(state.epoch or 0.0), 4),
                    "step": state.global_step,
                    "max_steps": state.max_steps,
                    "loss": float(logs["loss"]),
                    "learning_rate": float(logs.get("learning_rate", 0.0)),
                    "tokens": int(state.num_input_tokens_seen),
                    "tokens_per_second": round(self.tokens_per_second(state), 1),
                }
            )

    def tokens_per_second(self, state: Any) -> float:
        """Tokens trained per second since this session's training began (a resume starts afresh)."""
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        return (state.num_input_tokens_seen - self._tokens0) / elapsed
