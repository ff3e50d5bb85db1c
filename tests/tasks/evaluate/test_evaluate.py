"""Evaluation of a really trained tiny LoRA run against its base, with the real SmolLM2 tokenizer."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.chat_template import IGNORE_INDEX, encode, render
from core.config import EvalConfig
from core.dataset import load_eval_set
from core.errors import InputError
from core.reports import EvalReport
from core.settings import Settings, get_settings
from core.trained import load_base
from tasks.evaluate import run as evaluate_module
from tasks.evaluate.generation import exact_match, normalize_answer, rouge_l_f1, select_prompts
from tasks.evaluate.run import ARTIFACT_KEY, evaluate_model, evaluate_task, score_nll
from tests.helpers.cli import invoke

pytestmark = pytest.mark.integration  # its tuned run is really trained (conftest.py)

CFG = EvalConfig(batch_size=3, generation_samples=2, max_new_tokens=16)
QUICK = EvalConfig(max_samples=3, generation_samples=0)  # NLL on three samples, no generation


@pytest.fixture(scope="module")
def evaluated(
    tuned_run: Path, eval_dir: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], Path, list[tuple[str, float]]]:
    """One full evaluation (NLL and generations) shared by the tests that read its report."""
    out = tmp_path_factory.mktemp("report")
    calls: list[tuple[str, float]] = []
    report = evaluate_model(tuned_run, eval_dir, CFG, cache_dir, out, lambda s, f: calls.append((s, f)))
    report = report.model_dump()
    return report, out, calls


@pytest.fixture(scope="module")
def base(tiny_base: Path, cache_dir: Path) -> tuple[Any, Any]:
    """The tiny base model alone (no peft wrapper) and its tokenizer."""
    return load_base(str(tiny_base), cache_dir)


def _encoded(tokenizer: Any, samples: list[dict[str, Any]]) -> list[Any]:
    return [encode(tokenizer, s["messages"]) for s in samples]


# --- the report -------------------------------------------------------------------------------


def test_a_tuned_model_that_beats_its_base_passes(evaluated: Any) -> None:
    report, _, _ = evaluated
    base, tuned, delta = report["base"], report["tuned"], report["delta"]

    assert report["passed"] is True
    assert tuned["nll"] < base["nll"] - 1.0  # 40 steps on these very samples: a clear gain
    for block in (base, tuned):
        assert block["perplexity"] == math.exp(block["nll"])
        assert (block["samples"], block["locate_samples"], block["explain_samples"]) == (8, 2, 2)
    assert base["tokens"] == tuned["tokens"] > 0
    assert report["metrics"] == {"final_loss": tuned["nll"], "perplexity": tuned["perplexity"]}
    assert report["threshold_perplexity"] == base["perplexity"] and report["margin"] == 0.0
    assert delta["nll"] == pytest.approx(tuned["nll"] - base["nll"])
    assert delta["perplexity_improvement"] == pytest.approx(1 - tuned["perplexity"] / base["perplexity"])
    assert delta["rouge_l_explain"] == pytest.approx(tuned["rouge_l_explain"] - base["rouge_l_explain"])


def test_the_tuned_model_answers_closer_to_the_references(evaluated: Any) -> None:
    report, _, _ = evaluated
    assert report["tuned"]["rouge_l_explain"] > report["base"]["rouge_l_explain"]
    assert 0.0 <= report["base"]["exact_match_locate"] <= report["tuned"]["exact_match_locate"] <= 1.0


def test_reports_are_written_with_lineage_and_dvc_readable_metrics(
    evaluated: Any, eval_dir: Path, tuned_run: Path
) -> None:
    report, out, _ = evaluated

    assert json.loads((out / "eval.json").read_text()) == report
    markdown = (out / "eval.md").read_text()
    assert markdown.startswith("# Model evaluation: PASSED")
    assert "| perplexity |" in markdown and "## Example: locate" in markdown
    assert report["report_path"] == "eval.md"
    lineage = report["lineage"]
    assert (
        lineage["eval_dataset_sha256"] == hashlib.sha256((eval_dir / "eval.jsonl").read_bytes()).hexdigest()
    )
    assert (lineage["config_hash"], lineage["train_dataset_hash"], lineage["method"]) == (
        "cfg0123456789abc",
        "data0123456789ab",
        "lora",
    )
    assert not (tuned_run / "eval.json").exists()  # out_dir was given
    assert all(isinstance(v, int | float | str | bool | None) for v in _leaves(report))  # no lists


def test_progress_goes_through_each_stage_up_to_done(evaluated: Any) -> None:
    _, _, calls = evaluated
    fractions = [f for _, f in calls]
    assert fractions == sorted(fractions) and calls[-1] == ("done", 1.0)
    stages = list(dict.fromkeys(s for s, _ in calls))
    assert stages == ["score base", "generate base", "score tuned", "generate tuned", "done"]


def test_base_scores_with_the_adapter_disabled_equal_the_base_model_alone(
    evaluated: Any, base: tuple[Any, Any], eval_samples: list[dict[str, Any]]
) -> None:
    report, _, _ = evaluated
    model, tokenizer = base
    alone = score_nll(model, _encoded(tokenizer, eval_samples), CFG.batch_size, tokenizer.pad_token_id)
    assert alone.nll == pytest.approx(report["base"]["nll"], rel=1e-6)
    assert alone.tokens == report["base"]["tokens"]


def test_a_margin_the_tuned_model_cannot_reach_fails_it(
    tuned_run: Path, eval_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    cfg = QUICK.model_copy(update={"margin": 0.99})
    report = evaluate_model(tuned_run, eval_dir, cfg, cache_dir, tmp_path).model_dump()

    assert report["passed"] is False
    assert report["threshold_perplexity"] == pytest.approx(report["base"]["perplexity"] * 0.01)
    assert report["tuned"]["samples"] == 3 and report["eval_samples"] == 8
    assert report["tuned"]["locate_samples"] == 0 and report["tuned"]["exact_match_locate"] is None
    assert report["delta"]["rouge_l_explain"] is None
    assert (tmp_path / "eval.md").read_text().startswith("# Model evaluation: FAILED")


# --- NLL ----------------------------------------------------------------------------------------


def test_nll_counts_answer_tokens_only(base: tuple[Any, Any], eval_samples: list[dict[str, Any]]) -> None:
    import torch

    model, tokenizer = base
    enc = encode(tokenizer, eval_samples[3]["messages"])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=torch.tensor([enc.input_ids])).logits[0], dim=-1)
    by_hand = [
        -float(logprobs[t - 1, enc.input_ids[t]])
        for t in range(1, len(enc.labels))
        if enc.labels[t] != IGNORE_INDEX
    ]
    every_token = [-float(logprobs[t - 1, enc.input_ids[t]]) for t in range(1, len(enc.input_ids))]

    score = score_nll(model, [enc], batch_size=1, pad_id=tokenizer.pad_token_id)
    assert score.tokens == len(by_hand) == enc.assistant_tokens < len(every_token)
    assert score.nll == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-5)
    assert score.nll != pytest.approx(sum(every_token) / len(every_token), rel=1e-3)


def test_padding_and_batching_leave_the_token_weighted_mean_unchanged(
    base: tuple[Any, Any], eval_samples: list[dict[str, Any]]
) -> None:
    model, tokenizer = base
    encoded = _encoded(tokenizer, eval_samples[:5])
    assert len({len(e.input_ids) for e in encoded}) > 1  # batches of several rows are padded
    singles = [score_nll(model, [e], 1, tokenizer.pad_token_id) for e in encoded]
    token_weighted = sum(s.nll * s.tokens for s in singles) / sum(s.tokens for s in singles)

    for batch_size in (1, 2, 5):
        for pad_id in (tokenizer.pad_token_id, 0):
            assert score_nll(model, encoded, batch_size, pad_id).nll == pytest.approx(
                token_weighted, rel=1e-5
            )
    mean_of_means = sum(s.nll for s in singles) / len(singles)
    assert token_weighted != pytest.approx(mean_of_means, rel=1e-4)


# --- generation scores --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("Sum the prices of all items.", "Sum the prices of all items.", 1.0),
        ("SUM the prices, of ALL items", "sum the prices of all items.", 1.0),  # case and punctuation
        ("load a file", "Sum the prices", 0.0),
        ("the cat on the mat", "the cat sat on the mat", 10 / 11),  # LCS 5: P = 5/5, R = 5/6
        (
            "mat the on cat the",
            "the cat sat on the mat",
            2 * (3 / 5) * (3 / 6) / (3 / 5 + 3 / 6),
        ),  # "the on the"
        ("", "anything", 0.0),
        ("", "", 1.0),
    ],
)
def test_rouge_l_f1(prediction: str, reference: str, expected: float) -> None:
    assert rouge_l_f1(prediction, reference) == pytest.approx(expected)
    assert rouge_l_f1(reference, prediction) == pytest.approx(expected)  # F1 is symmetric


@pytest.mark.parametrize(
    ("prediction", "matches"),
    [
        ("`f` is defined in `pkg/a.py` at line 3.", True),
        ("  `f` is defined in\n`pkg/a.py`   at line 3 ", True),  # whitespace, final period
        ("`f` is defined in `pkg/a.py` at line 4.", False),
        ("`f` is defined in `pkg/A.py` at line 3.", False),  # paths are case-sensitive
        ("`f` is defined in `pkg/a.py` at line 3. It returns 1.", False),
    ],
)
def test_exact_match_normalizes_whitespace_and_the_final_period(prediction: str, matches: bool) -> None:
    assert exact_match(prediction, "`f` is defined in `pkg/a.py` at line 3.") == float(matches)
    assert normalize_answer(" a \t b. ") == "a b"


def test_prompts_are_the_conversation_without_its_answer(
    base: tuple[Any, Any], eval_samples: list[dict[str, Any]]
) -> None:
    _, tokenizer = base
    pairs = [(s["meta"]["task"], s["messages"]) for s in eval_samples]
    prompts = select_prompts(pairs, tokenizer, per_task=2, max_tokens=10_000)

    assert [p.task for p in prompts] == [
        "locate",
        "locate",
        "explain",
        "explain",
    ]  # docstring, commit unscored
    first = eval_samples[0]["messages"]
    assert tokenizer.decode(prompts[0].ids) == render(tokenizer, first[:-1], generation_prompt=True)
    assert (prompts[0].reference, prompts[0].question) == (first[-1]["content"], first[0]["content"])
    short = select_prompts(pairs, tokenizer, per_task=5, max_tokens=len(prompts[0].ids))
    assert all(len(p.ids) <= len(prompts[0].ids) for p in short) and len(short) < 6


# --- input --------------------------------------------------------------------------------------


def test_eval_order_depends_on_content_not_on_line_order(
    eval_samples: list[dict[str, Any]], dataset: Callable[[list[Any]], Path], tmp_path: Path
) -> None:
    train_line = {**eval_samples[0], "meta": {**eval_samples[0]["meta"], "split": "train"}}
    forward = load_eval_set(dataset([*eval_samples, train_line]))
    backward = load_eval_set(dataset(list(reversed(eval_samples))))

    assert [s.model_dump() for s in forward.samples] == [s.model_dump() for s in backward.samples]
    assert len(forward.samples) == len(eval_samples)  # the train-split line is not evaluated
    assert forward.sha256 != backward.sha256  # the hash is of the file's bytes


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (None, "has no eval.jsonl: run the extract step"),
        ([], "eval split of 'dataset' is empty"),
        (["", "  "], "eval split of 'dataset' is empty"),
        (["{not json"], "line 1 of 'dataset' is not a sample (Invalid JSON"),
        ([{"messages": [], "meta": {}}], "line 1 of 'dataset' is not a sample (messages: List should have"),
    ],
)
def test_a_dataset_without_a_usable_eval_split_is_refused(
    rows: list[Any] | None,
    message: str,
    tuned_run: Path,
    cache_dir: Path,
    dataset: Callable[[list[Any]], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # paths in messages are shown relative to the working directory
    data = dataset(rows) if rows is not None else tmp_path / "dataset"
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        evaluate_model(tuned_run, data, CFG, cache_dir)


def test_a_directory_that_is_not_a_run_is_refused(eval_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is not a finetune output: expected train.json and adapter/"):
        evaluate_model(tmp_path, eval_dir, CFG, cache_dir)


def test_a_max_length_that_cuts_every_answer_is_refused(
    tuned_run: Path, eval_dir: Path, cache_dir: Path
) -> None:
    with pytest.raises(InputError, match="no eval sample has an answer within max_length 32"):
        evaluate_model(tuned_run, eval_dir, QUICK.model_copy(update={"max_length": 32}), cache_dir)


# --- entry points -------------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """`forgeflow evaluate` settings: a temp workspace, quick evaluation."""
    monkeypatch.setenv("FORGEFLOW_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.setenv("FORGEFLOW_HOME", str(tmp_path / "ws"))
    monkeypatch.setenv("FORGEFLOW_EVALUATE__MAX_SAMPLES", "3")
    monkeypatch.setenv("FORGEFLOW_EVALUATE__GENERATION_SAMPLES", "0")
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_cli_exit_codes_say_passed_not_passed_or_bad_input(
    cli_env: pytest.MonkeyPatch, tuned_run: Path, eval_dir: Path, tmp_path: Path
) -> None:
    assert (
        invoke("evaluate", "--model", str(tuned_run), "--data", str(eval_dir), "--out", str(tmp_path / "a"))
        == 0
    )
    assert json.loads((tmp_path / "a" / "eval.json").read_text())["passed"] is True
    assert invoke("evaluate", "--model", str(tmp_path), "--data", str(eval_dir)) == 2
    assert invoke("evaluate", "--model", str(tuned_run), "--data", str(tmp_path / "missing")) == 2

    cli_env.setenv("FORGEFLOW_EVALUATE__MARGIN", "0.99")
    get_settings.cache_clear()
    assert (
        invoke("evaluate", "--model", str(tuned_run), "--data", str(eval_dir), "--out", str(tmp_path / "b"))
        == 1
    )


def test_the_prefect_task_publishes_the_markdown_report(
    tuned_run: Path, eval_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    published: dict[str, Any] = {}
    monkeypatch.setattr(
        evaluate_module,
        "create_markdown_artifact",
        lambda markdown, **kw: published.update(kw, markdown=markdown),
    )
    settings = Settings(home=tmp_path / "ws", allowed_roots=[tmp_path], evaluate=QUICK)
    report = evaluate_task.fn(str(tuned_run), str(eval_dir), settings, out_dir=str(tmp_path / "out"))

    assert report.passed is True
    # the typed report the flow reads is the document on disk
    assert EvalReport.model_validate_json((tmp_path / "out" / "eval.json").read_text()) == report
    assert published["key"] == ARTIFACT_KEY == "evaluation-report"
    assert published["markdown"] == (tmp_path / "out" / "eval.md").read_text()


def _leaves(obj: Any) -> Iterator[Any]:
    if isinstance(obj, dict):
        for value in obj.values():
            yield from _leaves(value)
    else:
        yield obj
