"""The real thing, end to end: SmolLM2-135M (embedded GGUF) → LoRA → evaluate → GGUF → llama.cpp."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config import EvalConfig, ExportConfig
from core.gguf import inspect_gguf
from tasks.evaluate.run import evaluate_model
from tasks.export.run import export_model
from tasks.finetune.run import finetune, load_profile

_QA = [
    ("Where is `load_profile` defined?", "`load_profile` is defined in tasks/finetune.py."),
    ("Where is `materialize` defined?", "`materialize` is defined in core/base_models.py."),
    ("Where is `render` defined?", "`render` is defined in core/chat_template.py."),
    ("Where is `read_run` defined?", "`read_run` is defined in core/trained.py."),
    ("Where is `write_json` defined?", "`write_json` is defined in core/atomic.py."),
    ("Where is `select_backend` defined?", "`select_backend` is defined in tasks/training.py."),
    ("Where is `export_model` defined?", "`export_model` is defined in tasks/export.py."),
    ("Where is `validate_gguf` defined?", "`validate_gguf` is defined in core/gguf_check.py."),
    ("Where is `evaluate_model` defined?", "`evaluate_model` is defined in tasks/evaluate.py."),
    ("Where is `finetune_flow` defined?", "`finetune_flow` is defined in flows/finetune.py."),
]


@pytest.mark.slow
def test_smollm2_trains_evaluates_exports_and_serves_under_llama_cpp(tmp_path: Path) -> None:
    from llama_cpp import Llama

    data = tmp_path / "data"
    data.mkdir()
    for split, pairs in (("train", _QA[:8]), ("eval", _QA[8:])):
        rows = [
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
             "meta": {"task": "locate", "source_path": f"{split}{i}.py", "lines": [1, 2], "commit": "a" * 40,
                      "lang": "python", "split": split}}
            for i, (q, a) in enumerate(pairs)
        ]  # fmt: skip
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cache, run = tmp_path / "cache", tmp_path / "run"

    cfg = load_profile("cpu-quick", max_steps=4, max_length=128, save_steps=2)
    report = finetune(data, "smollm2-135m", run, cfg, cache)
    assert report.status == "completed" and report.steps == 4 and report.tokens > 0
    assert report.loss_curve[-1][1] < report.loss_curve[0][1]  # a real model learns the pattern at once

    evaluation = evaluate_model(
        run, data, EvalConfig(max_samples=0, generation_samples=2, max_new_tokens=24), cache
    )
    assert evaluation.base.tokens == evaluation.tuned.tokens > 0
    assert evaluation.passed is True, evaluation.delta  # tuned beats base on these held-out answers

    manifest = export_model(
        run, run / "export", ExportConfig(quants=["f16", "q4_k_m"], parity_prompts=2, parity_tokens=16),
        cache, data,
    )  # fmt: skip
    for quant in ("f16", "q4_k_m"):
        gguf = run / "export" / manifest.ggufs[quant].file
        assert inspect_gguf(gguf).tensor_count > 0
        assert manifest.ggufs[quant].parity.passed is True, manifest.ggufs[quant].parity
    llm = Llama(model_path=str(run / "export" / manifest.ggufs["q4_k_m"].file), n_ctx=512, verbose=False)
    reply = llm.create_chat_completion(
        messages=[{"role": "user", "content": "What is 2+2?"}], max_tokens=12, temperature=0.0
    )
    assert reply["choices"][0]["message"]["content"].strip()
