"""The export step on the tiny model: merge, GGUF f16 and quants, parity, manifest, reruns, failures."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest

from core.config import DEFAULT_MAX_KL, DEFAULT_MAX_PPL_CHANGE, ExportConfig
from core.errors import InputError
from core.gguf import inspect_gguf, validate_gguf
from core.reports import ExportReport
from core.settings import Settings, get_settings
from core.trained import load_tuned, read_run
from tasks.export import run as export_module
from tasks.export.convert import ExportFailed, convert_to_gguf, output_tail
from tasks.export.merge import merge_adapter
from tasks.export.parity import parity_conversations
from tasks.export.run import ParityFailed, export_model, export_task
from tests.helpers.cli import invoke
from tests.helpers.recital import ANSWERS, CONVERSATIONS
from tests.helpers.tinymodel import make_tiny_base, make_tiny_run

pytestmark = pytest.mark.integration  # GGUF round trips: the converter runs as a child process

GGUFS = ("model-f16.gguf", "model-q8_0.gguf", "model-q4_k_m.gguf")


def _logits(model: Any, ids: list[int]) -> Any:
    import torch

    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0]


def _assert_merge_matches_adapter(run_dir: Path, merged_dir: Path, cache_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    tuned, tokenizer = load_tuned(read_run(run_dir), cache_dir)
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32).eval()
    ids = tokenizer.apply_chat_template(CONVERSATIONS[0], tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    with tuned.disable_adapter():
        base = _logits(tuned, ids)
    adapted, folded = _logits(tuned, ids), _logits(merged, ids)
    assert (adapted - base).abs().max() > 1e-2  # the adapter does change the model ...
    torch.testing.assert_close(folded, adapted, atol=1e-4, rtol=1e-4)  # ... and merging keeps that change


def test_merged_lora_logits_equal_adapter_logits(
    exported: tuple[Path, dict], lora_run: Path, cache_dir: Path
) -> None:
    out, _ = exported
    _assert_merge_matches_adapter(lora_run, out / "merged", cache_dir)


def test_merged_dora_logits_equal_adapter_logits(
    reciting_base: Path, cache_dir: Path, tmp_path: Path
) -> None:
    run = make_tiny_run(tmp_path / "dora", reciting_base, "dora")
    merge_adapter(read_run(run), tmp_path / "merged", cache_dir)
    _assert_merge_matches_adapter(run, tmp_path / "merged", cache_dir)


def test_export_writes_every_file_with_a_checksum(exported: tuple[Path, dict]) -> None:
    out, manifest = exported
    assert (out / "merged" / "model.safetensors").is_file()
    assert (out / "merged" / "tokenizer.json").is_file()
    expected = {"export.json", "export.md", *GGUFS, *(f"{g}.sha256" for g in GGUFS)}
    assert expected <= {p.name for p in out.iterdir()}
    assert not list(out.glob(".*.tmp"))  # no temp file left behind
    check = subprocess.run(["sha256sum", "-c", *(f"{g}.sha256" for g in GGUFS)], cwd=out, capture_output=True)
    assert check.returncode == 0, check.stdout
    for quant, gguf in manifest["ggufs"].items():
        sidecar = (out / f"{gguf['file']}.sha256").read_text()
        assert sidecar == f"{gguf['sha256']}  model-{quant}.gguf\n"
        assert gguf["bytes"] == (out / gguf["file"]).stat().st_size


def test_manifest_records_lineage_and_parity(exported: tuple[Path, dict]) -> None:
    out, manifest = exported
    assert json.loads((out / "export.json").read_text()) == manifest
    source = manifest["source"]
    assert (source["kind"], source["method"], source["config_hash"]) == ("finetune", "lora", "test")
    assert len(source["weights_sha256"]) == 64
    assert manifest["passed"] is True
    assert set(manifest["ggufs"]) == {"f16", "q8_0", "q4_k_m"}
    for quant, gguf in manifest["ggufs"].items():
        result = gguf["parity"]
        assert (result["max_kl"], result["max_ppl_change"]) == (
            DEFAULT_MAX_KL[quant],
            DEFAULT_MAX_PPL_CHANGE[quant],
        )
        assert result["prompts"] == len(CONVERSATIONS)
        assert result["passed"] is True
    assert manifest["parity_setup"]["prompts_from"] == "eval split"
    assert "# Export: passed" in (out / "export.md").read_text()


def test_parity_on_f16_is_high(exported: tuple[Path, dict]) -> None:
    _, manifest = exported
    f16 = manifest["ggufs"]["f16"]["parity"]
    # every recited answer, up to and including its end-of-turn token, is compared
    assert f16["positions"] >= sum(len(a.split()) for a in ANSWERS)
    assert f16["agreement"] >= 0.99
    assert f16["kl"] < DEFAULT_MAX_KL["f16"] / 10


def test_chat_template_travels_in_every_gguf(exported: tuple[Path, dict], lora_run: Path) -> None:
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    out, _ = exported
    template = AutoTokenizer.from_pretrained(str(lora_run / "adapter")).chat_template
    field = GGUFReader(out / "model-f16.gguf").fields["tokenizer.chat_template"]
    assert bytes(field.parts[field.data[0]]).decode() == template
    for name in GGUFS:
        assert inspect_gguf(out / name).metadata["tokenizer.chat_template"] == template


def test_f16_gguf_answers_like_the_tuned_model_under_llama_cpp(exported: tuple[Path, dict]) -> None:
    from llama_cpp import Llama

    out, _ = exported
    llm = Llama(model_path=str(out / "model-f16.gguf"), n_ctx=256, verbose=False)
    try:  # llama.cpp renders the prompt with the template from the GGUF's own metadata
        reply = llm.create_chat_completion(messages=CONVERSATIONS[0][:1], max_tokens=24, temperature=0.0)
    finally:
        llm.close()
    assert reply["choices"][0]["message"]["content"] == ANSWERS[0]


def test_quants_are_valid_and_smaller(exported: tuple[Path, dict]) -> None:
    out, _ = exported
    f16, q8, q4 = (validate_gguf(out / name) for name in GGUFS)
    assert (q8.metadata["general.file_type"], q4.metadata["general.file_type"]) == (7, 15)  # llama_ftype
    assert f16.file_size > q8.file_size > q4.file_size


def test_rerun_redoes_nothing(
    exported: tuple[Path, dict],
    lora_run: Path,
    eval_data: Path,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out, manifest = exported
    mtimes = {name: (out / name).stat().st_mtime_ns for name in GGUFS}

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished step ran again")

    for step in ("merge_adapter", "convert_to_gguf", "quantize_gguf"):
        monkeypatch.setattr(export_module, step, must_not_run)
    monkeypatch.setattr(export_module.par, "hf_references", must_not_run)

    again = export_model(lora_run, out, ExportConfig(), cache_dir, eval_data).model_dump()

    assert again["ggufs"] == manifest["ggufs"]  # same files, same parity
    assert {name: (out / name).stat().st_mtime_ns for name in GGUFS} == mtimes


def test_cli_reruns_the_export_from_settings(
    exported: tuple[Path, dict],
    lora_run: Path,
    eval_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out, _ = exported
    monkeypatch.setenv("FORGEFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FORGEFLOW_CONFIG", str(tmp_path / "none.yaml"))  # defaults, not the repo's file
    monkeypatch.setattr(export_module, "convert_to_gguf", lambda *a, **k: pytest.fail("converted again"))
    get_settings.cache_clear()
    try:
        code = invoke("export", "--model", str(lora_run), "--out", str(out), "--data", str(eval_data))
        assert code == 0
        assert (
            invoke("export", "--model", str(tmp_path), "--out", str(tmp_path / "out")) == InputError.exit_code
        )
    finally:
        get_settings.cache_clear()


def test_task_publishes_the_report_as_an_artifact(
    exported: tuple[Path, dict],
    lora_run: Path,
    eval_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out, manifest = exported
    monkeypatch.setenv("FORGEFLOW_CONFIG", str(tmp_path / "none.yaml"))
    published: dict[str, Any] = {}

    def publish(markdown: str, **kwargs: Any) -> None:
        published.update(kwargs, md=markdown)

    monkeypatch.setattr(export_module, "create_markdown_artifact", publish)

    result = export_task.fn(str(lora_run), str(out), Settings(home=tmp_path / "home"), str(eval_data))

    assert result.model_dump()["ggufs"] == manifest["ggufs"]
    assert ExportReport.model_validate_json((out / "export.json").read_text()) == result
    assert published == {"md": (out / "export.md").read_text(), "key": "export-report", "description": ANY}


def test_plain_model_dir_is_converted_without_merge(
    reciting_base: Path, cache_dir: Path, tmp_path: Path
) -> None:
    cfg = ExportConfig(quants=["f16"])

    manifest = export_model(reciting_base, tmp_path / "out", cfg, cache_dir).model_dump()  # built-in prompts

    assert not (tmp_path / "out" / "merged").exists()
    assert (manifest["source"]["kind"], manifest["parity_setup"]["prompts_from"]) == ("model", "built-in")
    assert set(manifest["ggufs"]) == {"f16"}
    assert manifest["ggufs"]["f16"]["parity"]["agreement"] >= 0.99


def test_gguf_below_its_parity_threshold_fails_after_writing_reports(
    exported: tuple[Path, dict], cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An untrained model whose "conversion" yields the tuned model's GGUF: parity must catch the swap.
    other = make_tiny_base(tmp_path / "untrained", cache_dir, seed=1)
    out, _ = exported

    def wrong_conversion(src: Path, target: Path, *args: object) -> Any:
        shutil.copyfile(out / "model-f16.gguf", target)
        return inspect_gguf(target)

    monkeypatch.setattr(export_module, "convert_to_gguf", wrong_conversion)
    limit = DEFAULT_MAX_KL["f16"]
    with pytest.raises(ParityFailed, match=rf"model-f16\.gguf has mean KL [0-9.e+-]+ nats \(max {limit:g}\)"):
        export_model(other, tmp_path / "out", ExportConfig(quants=["f16"]), cache_dir)
    report = json.loads((tmp_path / "out" / "export.json").read_text())
    assert report["passed"] is False and report["ggufs"]["f16"]["parity"]["passed"] is False
    assert "# Export: FAILED" in (tmp_path / "out" / "export.md").read_text()


def test_converter_failure_names_the_problem_without_temp_paths(reciting_base: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(reciting_base, broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps(config | {"architectures": ["NoSuchForCausalLM"]}))

    with pytest.raises(ExportFailed) as err:
        convert_to_gguf(broken, tmp_path / "out" / "model-f16.gguf")

    message = str(err.value)
    assert message.startswith("converting broken to GGUF failed: ")
    assert "NoSuchForCausalLM" in message
    assert str(tmp_path) not in message and ".tmp" not in message
    assert list((tmp_path / "out").iterdir()) == []  # the temp file is gone, nothing was published


def test_not_a_model_directory_is_an_input_error(tmp_path: Path, cache_dir: Path) -> None:
    with pytest.raises(InputError, match="neither a finetune output .* nor a Hugging Face model directory"):
        export_model(tmp_path, tmp_path / "out", ExportConfig(), cache_dir)


def test_parity_prompts_come_from_the_eval_split_without_their_answers(tmp_path: Path) -> None:
    meta = {"task": "explain", "source_path": "a.py", "lines": [1, 2], "commit": "abc1234", "lang": "python"}
    turns = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is f?"},
        {"role": "assistant", "content": "A function."},
    ]
    rows = [{"messages": turns, "meta": meta | {"split": "eval"}}] * 3
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    assert parity_conversations(tmp_path, 2) == [turns[:2], turns[:2]]
    assert len(parity_conversations(None, 2)) == 2


def test_output_tail_keeps_the_last_lines_and_shortens_paths() -> None:
    temp = "/tmp/abc/.model-f16.gguf.123.tmp"
    output = "INFO loading\nWriting: 10%\rWriting: 100%\nTraceback:\n"
    output += '  File "/usr/lib/x/convert.py", line 9\n'
    output += f"NotImplementedError: Architecture 'X' not supported! in {temp}\n"

    tail = output_tail(output, {temp: "model-f16.gguf"})

    assert tail == (
        'Traceback: | File "convert.py", line 9 | '
        "NotImplementedError: Architecture 'X' not supported! in model-f16.gguf"
    )
