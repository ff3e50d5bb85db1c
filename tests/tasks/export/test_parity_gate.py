"""The parity gate: KL divergence and perplexity change of a GGUF against its HF model, and its verdicts."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from core.config import DEFAULT_MAX_KL, DEFAULT_MAX_PPL_CHANGE, ExportConfig
from core.gguf import inspect_gguf
from tasks.export import run as export_module
from tasks.export.convert import ExportFailed
from tasks.export.parity import Parity, kl_divergence, log_softmax, ppl_change
from tasks.export.report import parity_entry, parity_failure_message
from tasks.export.run import ParityFailed, export_model


def _swap_tensors(src: Path, dst: Path, a: str, b: str) -> None:
    """`src` copied to `dst` with the data of two same-shape, same-type tensors exchanged."""
    summary = inspect_gguf(src)
    ta, tb = (next(t for t in summary.tensors if t.name == name) for name in (a, b))
    assert (ta.shape, ta.type, ta.nbytes) == (tb.shape, tb.type, tb.nbytes)
    shutil.copyfile(src, dst)
    with dst.open("r+b") as fh:
        fh.seek(summary.data_offset + ta.offset)
        first = fh.read(ta.nbytes)
        fh.seek(summary.data_offset + tb.offset)
        second = fh.read(tb.nbytes)
        fh.seek(summary.data_offset + tb.offset)
        fh.write(first)
        fh.seek(summary.data_offset + ta.offset)
        fh.write(second)


def _export_with_gguf(
    make: Any, lora_run: Path, out: Path, eval_data: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """The f16-only export of the LoRA run, with `make(target)` standing in for the converter."""

    def conversion(src: Path, target: Path, *args: object) -> Any:
        make(target)
        return inspect_gguf(target)

    monkeypatch.setattr(export_module, "convert_to_gguf", conversion)
    return export_model(lora_run, out, ExportConfig(quants=["f16"]), cache_dir, eval_data)


# --- the math -------------------------------------------------------------------------------------


def test_kl_of_identical_distributions_is_zero() -> None:
    logits = np.random.default_rng(0).normal(size=(5, 49152)).astype(np.float32) * 4
    logp = log_softmax(logits)
    assert np.abs(kl_divergence(logp, logp)).max() < 1e-12
    assert np.abs(kl_divergence(logp, log_softmax(logits + 7.5))).max() < 1e-9  # a shift is no change
    same = Parity.compare([logits], [logits.copy()], [list(range(5))])
    assert (same.kl, same.kl_max, same.ppl_change, same.agreement) == (
        pytest.approx(0.0, abs=1e-12),
        pytest.approx(0.0, abs=1e-12),
        0.0,
        1.0,
    )


def test_kl_matches_a_hand_computed_value() -> None:
    p, q = np.log([[0.5, 0.5]]), np.log([[0.25, 0.75]])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kl_divergence(p, q)[0] == pytest.approx(expected, rel=1e-12)
    assert kl_divergence(q, p)[0] != pytest.approx(expected)  # KL(HF || GGUF) is not symmetric


def test_perplexity_change_on_a_hand_made_example() -> None:
    # HF gives the continuation tokens 1/2 and 1/8: ppl = exp((ln 2 + ln 8) / 2) = 4.
    # The GGUF gives them 1/4 and 1/4: ppl = 4 too, so no change though both positions differ.
    hf = np.log(np.array([[0.5, 0.25, 0.25], [0.125, 0.125, 0.75]]))
    gguf = np.log(np.array([[0.25, 0.5, 0.25], [0.25, 0.25, 0.5]]))
    result = Parity.compare([hf], [gguf], [[0, 1]])
    assert (result.ppl_hf, result.ppl_gguf) == (pytest.approx(4.0), pytest.approx(4.0))
    assert result.ppl_change == pytest.approx(0.0, abs=1e-12)
    assert result.kl > 0 and (result.matches, result.positions) == (1, 2)  # KL and top-1 do see it
    # ... and a GGUF giving both 1/4.5: ppl 4.5 against 4, a change of 12.5%
    worse = np.log(np.array([[1 / 4.5, 0.5, 1 - 0.5 - 1 / 4.5], [0.5, 1 / 4.5, 1 - 0.5 - 1 / 4.5]]))
    assert Parity.compare([hf], [worse], [[0, 1]]).ppl_change == pytest.approx(0.125)
    assert ppl_change(math.log(2.0), math.log(1.8)) == pytest.approx(0.1)  # lower perplexity counts too


def test_non_finite_logits_fail_the_gguf_and_are_named() -> None:
    hf = np.zeros((3, 4), dtype=np.float32)
    gguf = hf.copy()
    gguf[1, 2] = np.nan
    result = Parity.compare([hf], [gguf], [[0, 1, 2]])
    assert (result.nonfinite, result.positions, result.kl) == (1, 3, 0.0)
    entry = parity_entry(result, max_kl=1.0, max_ppl_change=1.0)
    assert entry["passed"] is False
    message = parity_failure_message({"ggufs": {"f16": {"file": "model-f16.gguf", "parity": entry}}})
    assert "model-f16.gguf has non-finite logits at 1 of 3 positions" in message


def test_thresholds_are_bounded_and_the_old_key_is_named() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        ExportConfig(max_kl={"f16": -0.1})
    with pytest.raises(ValidationError, match="max_ppl_change"):
        ExportConfig(max_ppl_change={"q5_0": 0.1})  # not a quant forgeflow writes
    with pytest.raises(ValidationError, match="export.min_agreement is gone"):
        ExportConfig.model_validate({"min_agreement": {"f16": 0.99}})


# --- real exports of the tiny model ---------------------------------------------------------------


@pytest.mark.integration  # a full export: the GGUF converter runs as a child process
def test_a_correct_quantized_export_passes(exported: tuple[Path, dict]) -> None:
    out, manifest = exported
    assert manifest["passed"] is True
    for quant in ("f16", "q8_0", "q4_k_m"):
        p = manifest["ggufs"][quant]["parity"]
        assert (p["max_kl"], p["max_ppl_change"]) == (DEFAULT_MAX_KL[quant], DEFAULT_MAX_PPL_CHANGE[quant])
        assert p["passed"] is True and p["nonfinite"] == 0
        assert 0 <= p["kl"] <= p["kl_max"] and p["kl"] <= p["max_kl"]
        assert p["ppl_change"] <= p["max_ppl_change"]
        assert p["ppl_change"] == pytest.approx(abs(p["ppl_gguf"] / p["ppl_hf"] - 1), abs=2e-3)
    kls = [manifest["ggufs"][q]["parity"]["kl"] for q in ("f16", "q8_0", "q4_k_m")]
    assert kls == sorted(kls)  # fewer bits, further from the HF model
    report = (out / "export.md").read_text()
    assert "mean KL" in report and "top-1" in report


@pytest.mark.integration  # a full export: the GGUF converter runs as a child process
def test_a_gguf_with_swapped_tensors_fails_with_its_kl(
    exported: tuple[Path, dict],
    lora_run: Path,
    eval_data: Path,
    cache_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, _ = exported
    swap = "blk.0.attn_q.weight", "blk.1.attn_q.weight"  # the same role in the other layer: same shape

    def swapped(target: Path) -> None:
        _swap_tensors(source / "model-f16.gguf", target, *swap)

    out = tmp_path / "out"
    limit = DEFAULT_MAX_KL["f16"]
    with pytest.raises(ParityFailed, match=rf"model-f16\.gguf has mean KL [0-9.e+-]+ nats \(max {limit:g}\)"):
        _export_with_gguf(swapped, lora_run, out, eval_data, cache_dir, monkeypatch)
    report = json.loads((out / "export.json").read_text())
    parity = report["ggufs"]["f16"]["parity"]
    assert report["passed"] is False and parity["passed"] is False
    assert parity["kl"] > 10 * limit
    assert "# Export: FAILED" in (out / "export.md").read_text()


@pytest.mark.integration  # a full export: the GGUF converter runs as a child process
def test_the_chat_template_is_checked_on_the_metadata_not_by_parity(
    exported: tuple[Path, dict],
    lora_run: Path,
    eval_data: Path,
    cache_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Parity feeds both models the same token ids, rendered by the HF tokenizer: a GGUF with another
    # template computes the very same logits. The template check on the GGUF's metadata catches it.
    source, _ = exported
    template = inspect_gguf(source / "model-f16.gguf").metadata["tokenizer.chat_template"]
    assert isinstance(template, str) and "assistant" in template

    def other_template(target: Path) -> None:  # same length: every offset in the file still holds
        data = (source / "model-f16.gguf").read_bytes()
        old, new = template.encode(), template.replace("assistant", "ASSISTANT").encode()
        target.write_bytes(data.replace(old, new, 1))

    with pytest.raises(ExportFailed, match="does not carry the tokenizer's chat template"):
        _export_with_gguf(other_template, lora_run, tmp_path / "out", eval_data, cache_dir, monkeypatch)
