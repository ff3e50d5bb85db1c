"""Dataset validation with Great Expectations and the real SmolLM2 tokenizer."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.base_models import load_tokenizer
from core.budget import TokenBudget
from core.config import ValidateConfig
from core.errors import InputError
from core.settings import Settings, get_settings
from tasks.validate.run import (
    ValidationReport,
    failure_message,
    render_report_markdown,
    validate_dataset,
)
from tests.helpers.cli import invoke_result

GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0" + "K1l2M3n4O5p6Q7r8"  # 36 alnum after the prefix
CFG = ValidateConfig()


@pytest.fixture(scope="module")
def forgeflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace whose cache holds the converted tokenizer, shared by every test here (converted once)."""
    return tmp_path_factory.mktemp("forgeflow-home")


@pytest.fixture(scope="module")
def tokenizer(forgeflow_home: Path) -> Any:
    return load_tokenizer("smollm2-135m", Settings(home=forgeflow_home).cache_dir)


def budget_of(tokenizer: Any, cfg: ValidateConfig = CFG) -> TokenBudget:
    """The budget `token_budget(settings)` builds from these validation settings."""
    return TokenBudget(tokenizer, cfg.min_tokens, cfg.max_tokens)


def make_sample(i: int, split: str = "train", **meta: Any) -> dict[str, Any]:
    """A valid sample whose prompt and source path are unique to `i`."""
    return {
        "messages": [
            {"role": "user", "content": f"Explain what the function `total_{i}` in inventory/m{i}.py does."},
            {"role": "assistant", "content": f"It sums the quantities of all items in inventory bucket {i}."},
        ],
        "meta": {
            "task": "explain",
            "source_path": f"inventory/m{i}.py",
            "lines": [4, 9],
            "commit": "0123456789abcdef0123456789abcdef01234567",
            "lang": "python",
            "split": split,
        }
        | meta,
    }


def make_dataset(n_train: int = 24, n_eval: int = 4) -> dict[str, list[Any]]:
    return {
        "train": [make_sample(i, "train") for i in range(n_train)],
        "eval": [make_sample(1000 + i, "eval") for i in range(n_eval)],
    }


def write_dataset(directory: Path, splits: dict[str, list[Any]]) -> Path:
    """Write each split as JSONL; str rows are written verbatim (to plant malformed lines)."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        text = "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)
        (directory / f"{split}.jsonl").write_text(text, encoding="utf-8")
    (directory / "stats.json").write_text("{}\n", encoding="utf-8")
    return directory


def failures(report: ValidationReport) -> dict[str, Any]:
    return {r.name: r for r in report.expectations if not r.success}


def test_a_valid_dataset_passes_and_writes_both_reports(
    tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # GX must write nothing into the working directory either
    ds = write_dataset(tmp_path / "ds", make_dataset())
    report = validate_dataset(ds, CFG, budget_of(tokenizer))

    assert report.passed, failure_message(report)
    assert (report.samples, report.train, report.eval) == (28, 24, 4)
    assert len(report.expectations) == 11 and all(r.unexpected_count == 0 for r in report.expectations)
    assert set(report.token_stats) == {"min", "mean", "p95", "max"}
    assert CFG.min_tokens <= report.token_stats["min"] <= report.token_stats["max"] <= CFG.max_tokens
    assert ValidationReport.model_validate_json((ds / "validation.json").read_text()) == report
    assert (ds / "validation.md").read_text().startswith("# Dataset validation: PASSED")
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        ["ds", "train.jsonl", "eval.jsonl", "stats.json", "validation.json", "validation.md"]
    )


def test_token_counts_match_the_chat_template_tokenization(tmp_path: Path, tokenizer: Any) -> None:
    sample = make_sample(0)
    ds = write_dataset(tmp_path / "ds", {"train": [sample], "eval": []})
    report = validate_dataset(ds, CFG, budget_of(tokenizer))
    ids = tokenizer.apply_chat_template(sample["messages"], tokenize=True, return_dict=True)["input_ids"]
    assert report.token_stats["max"] == len(ids)


def _swap_roles(ds: dict[str, list[Any]]) -> None:
    ds["train"][3]["messages"].reverse()


def _blank_answer(ds: dict[str, list[Any]]) -> None:
    ds["train"][5]["messages"][1]["content"] = "  \n\t "


def _long_answer(ds: dict[str, list[Any]]) -> None:
    ds["train"][7]["messages"][1]["content"] = "widget " * 400


def _duplicate_prompt(ds: dict[str, list[Any]]) -> None:
    ds["train"][1]["messages"][0]["content"] = ds["train"][0]["messages"][0]["content"]


def _token_in_answer(ds: dict[str, list[Any]]) -> None:
    ds["train"][2]["messages"][1]["content"] += f"\nUse token {GITHUB_TOKEN} to authenticate."


def _token_in_prompt(ds: dict[str, list[Any]]) -> None:
    ds["eval"][0]["messages"][0]["content"] += f" The config sets GITHUB_TOKEN={GITHUB_TOKEN}."


def _shared_source_path(ds: dict[str, list[Any]]) -> None:
    ds["eval"][0]["meta"]["source_path"] = ds["train"][0]["meta"]["source_path"]


def _too_few_samples(ds: dict[str, list[Any]]) -> None:
    del ds["train"][10:]


def _no_eval_samples(ds: dict[str, list[Any]]) -> None:
    ds["eval"].clear()


def _split_mismatch(ds: dict[str, list[Any]]) -> None:
    ds["train"][4]["meta"]["split"] = "eval"


def _malformed_json(ds: dict[str, list[Any]]) -> None:
    ds["train"].insert(2, '{"messages": [{"role": "user", "content": "unterminated')


def _missing_meta(ds: dict[str, list[Any]]) -> None:
    ds["eval"].append(json.dumps({"messages": make_sample(99)["messages"]}))


@pytest.mark.parametrize(
    ("plant", "name", "count", "detail_part"),
    [
        (_swap_roles, "roles", 1, "assistant,user"),
        (_blank_answer, "non_empty_content", 1, "train.jsonl:6"),
        (_long_answer, "token_length", 1, "exceed 200 tokens"),
        (_duplicate_prompt, "unique_prompts", 2, "share 1 prompt"),
        (_token_in_answer, "no_secrets_in_answer", 1, "train.jsonl:3"),
        (_token_in_prompt, "no_secrets_in_prompt", 1, "eval.jsonl:1"),
        (_shared_source_path, "disjoint_splits", 2, "inventory/m0.py"),
        (_too_few_samples, "min_samples", 6, "14 valid samples < 20"),
        (_no_eval_samples, "min_eval_samples", 1, "0 valid eval samples < 1"),
        (_split_mismatch, "split_matches_file", 1, "train.jsonl:5"),
        (_malformed_json, "schema", 1, "train.jsonl:3 (invalid JSON)"),
        (_missing_meta, "schema", 1, "eval.jsonl:5 (meta: Field required)"),
    ],
)
def test_each_expectation_fails_alone_with_its_count(
    tmp_path: Path, tokenizer: Any, plant: Callable[[dict[str, list[Any]]], None], name: str, count: int,
    detail_part: str,
) -> None:  # fmt: skip
    dataset = make_dataset()
    plant(dataset)
    cfg = ValidateConfig(max_tokens=200) if name == "token_length" else CFG
    report = validate_dataset(write_dataset(tmp_path / "ds", dataset), cfg, budget_of(tokenizer, cfg))

    assert not report.passed
    assert list(failures(report)) == [name]
    failed = failures(report)[name]
    assert failed.unexpected_count == count
    assert detail_part in failed.detail
    assert GITHUB_TOKEN not in failed.detail  # the report never repeats a secret
    assert name in failure_message(report)


def test_schema_failures_name_the_first_lines_and_count_the_rest(tmp_path: Path, tokenizer: Any) -> None:
    dataset = make_dataset()
    dataset["train"] += ["not json", "[]", '{"messages": []}', "{", "null"]
    report = validate_dataset(write_dataset(tmp_path / "ds", dataset), CFG, budget_of(tokenizer))

    schema = failures(report)["schema"]
    assert schema.unexpected_count == 5
    assert "train.jsonl:25 (invalid JSON)" in schema.detail and "(+2 more)" in schema.detail
    assert report.samples == 28  # the valid lines are still checked


def test_duplicate_prompts_pass_within_the_allowed_fraction(tmp_path: Path, tokenizer: Any) -> None:
    dataset = make_dataset()
    _duplicate_prompt(dataset)
    cfg = ValidateConfig(max_duplicate_prompt_fraction=0.1)
    assert validate_dataset(write_dataset(tmp_path / "ds", dataset), cfg, budget_of(tokenizer, cfg)).passed


def test_failure_message_is_one_line_naming_every_failure(tmp_path: Path, tokenizer: Any) -> None:
    dataset = make_dataset(n_train=8, n_eval=2)
    _duplicate_prompt(dataset)
    report = validate_dataset(write_dataset(tmp_path / "ds", dataset), CFG, budget_of(tokenizer))

    message = failure_message(report)
    assert message.startswith("validation failed: unique_prompts (2 samples share 1 prompt")
    assert "min_samples (10 valid samples < 20)" in message
    assert "\n" not in message


def test_markdown_report_marks_failures_in_a_table(tmp_path: Path, tokenizer: Any) -> None:
    dataset = make_dataset()
    _swap_roles(dataset)
    report = validate_dataset(write_dataset(tmp_path / "ds", dataset), CFG, budget_of(tokenizer))

    markdown = render_report_markdown(report)
    assert markdown.startswith("# Dataset validation: FAILED")
    assert "| roles | **FAIL** | 1 |" in markdown
    assert markdown.count("| pass |") == 10
    assert (tmp_path / "ds" / "validation.md").read_text() == markdown


def test_missing_directory_is_an_input_error_without_absolute_paths(tmp_path: Path, tokenizer: Any) -> None:
    with pytest.raises(InputError, match="dataset directory 'nowhere' not found") as info:
        validate_dataset(tmp_path / "nowhere", CFG, budget_of(tokenizer))
    assert str(tmp_path) not in str(info.value)


def test_missing_split_file_is_an_input_error_without_absolute_paths(tmp_path: Path, tokenizer: Any) -> None:
    ds = write_dataset(tmp_path / "ds", make_dataset())
    (ds / "eval.jsonl").unlink()
    with pytest.raises(InputError, match="has no eval.jsonl") as info:
        validate_dataset(ds, CFG, budget_of(tokenizer))
    assert str(tmp_path) not in str(info.value)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, forgeflow_home: Path) -> Iterator[Path]:
    monkeypatch.setenv("FORGEFLOW_HOME", str(forgeflow_home))  # reuses the converted tokenizer
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_the_command_exits_0_when_the_dataset_passes(cli_env: Path) -> None:
    write_dataset(cli_env / "data" / "dataset", make_dataset())
    result = invoke_result("validate", "data/dataset")
    assert result.exit_code == 0, result.output
    assert "validation passed: 28 samples" in result.stdout
    assert (cli_env / "data" / "dataset" / "validation.json").is_file()


def test_the_command_exits_1_and_names_the_failed_expectations(cli_env: Path) -> None:
    write_dataset(cli_env / "ds", make_dataset(n_train=5, n_eval=1))
    result = invoke_result("validate", "ds")
    assert result.exit_code == 1
    errors = result.stderr.strip().splitlines()
    assert errors == ["error: validation failed: min_samples (6 valid samples < 20)"]


def test_the_command_exits_2_on_a_missing_dataset(cli_env: Path) -> None:
    result = invoke_result("validate", "missing")
    assert result.exit_code == 2
    assert "dataset directory 'missing' not found" in result.stderr
    assert str(cli_env) not in result.output


def test_the_command_counts_tokens_with_the_base_model(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORGEFLOW_BASE_MODEL", "no-such-model")  # there is no second tokenizer setting
    get_settings.cache_clear()
    write_dataset(cli_env / "ds", make_dataset())
    result = invoke_result("validate", "ds")
    assert result.exit_code == 2
    assert "base model 'no-such-model' not found" in result.stderr
