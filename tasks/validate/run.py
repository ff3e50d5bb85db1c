"""Validate a dataset directory (train.jsonl + eval.jsonl) against its expectations before training."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import ValidationError

from core.atomic import write_json, write_text
from core.budget import TokenBudget, token_budget
from core.config import ValidateConfig
from core.errors import InputError, ValidationFailed
from core.paths import display
from core.reports import ValidationReport
from core.schemas import Sample, sample_lines
from core.secrets import SECRET_PATTERNS
from core.settings import Settings
from tasks.validate.expectations import run_expectations

log = logging.getLogger(__name__)

SPLITS = ("train", "eval")
REPORT_JSON = ValidationReport.FILE
REPORT_MD = "validation.md"
ARTIFACT_KEY = "validation-report"
_MAX_ERROR_CHARS = 120
_TEXT_COLUMNS = ["file", "file_split", "split", "task", "source_path", "lang", "roles", "prompt", "answer"]
_INT_COLUMNS = {"line": "int64", "min_content_chars": "int64", "tokens": "int64"}


@dataclass
class _Line:
    file: str
    line: int
    split: str
    sample: Sample | None
    error: str | None


def validate_dataset(dataset_dir: Path, cfg: ValidateConfig, budget: TokenBudget) -> ValidationReport:
    """Run every expectation on a dataset and write DIR/validation.json and DIR/validation.md.

    Token lengths are counted and bounded by `budget`, the contract extraction fitted the samples to
    (`core.budget.token_budget(settings)`); `cfg` sets every other expectation.

    Raises:
        InputError: the directory or one of its JSONL files is missing or unreadable.
    """
    records = [rec for split, path in dataset_files(dataset_dir).items() for rec in _read_lines(path, split)]
    valid = [rec for rec in records if rec.sample is not None]
    lines = pd.DataFrame(
        [(r.file, r.line, r.error) for r in records], columns=["file", "line", "schema_error"]
    )
    tokens = budget.count([[m.model_dump() for m in r.sample.messages] for r in valid if r.sample])
    samples = _flatten(valid, tokens)
    results = run_expectations(lines, samples, cfg, budget, SECRET_PATTERNS)
    report = ValidationReport(
        passed=all(r.success for r in results),
        samples=len(samples),
        train=int((samples["file_split"] == "train").sum()),
        eval=int((samples["file_split"] == "eval").sum()),
        expectations=results,
        token_stats=_token_stats(samples["tokens"]),
    )
    write_json(dataset_dir / REPORT_JSON, report.model_dump(mode="json"))
    write_text(dataset_dir / REPORT_MD, render_report_markdown(report))
    return report


def dataset_files(dataset_dir: Path) -> dict[str, Path]:
    """The split files of a dataset directory, checked to exist.

    Raises:
        InputError: the directory or a split file is missing.
    """
    shown = display(dataset_dir)
    if not dataset_dir.is_dir():
        raise InputError(f"dataset directory '{shown}' not found: run the extract step first")
    files = {split: dataset_dir / f"{split}.jsonl" for split in SPLITS}
    missing = [path.name for path in files.values() if not path.is_file()]
    if missing:
        raise InputError(f"dataset '{shown}' has no {' or '.join(missing)}: run the extract step first")
    return files


def render_report_markdown(report: ValidationReport) -> str:
    """The report as Markdown: verdict, counts, token stats and one table row per expectation."""
    verdict = "PASSED" if report.passed else "FAILED"
    stats = report.token_stats
    token_line = (
        f"Rendered tokens per sample: min {stats['min']:.0f}, mean {stats['mean']:.1f}, "
        f"p95 {stats['p95']:.0f}, max {stats['max']:.0f}."
        if stats
        else "No valid samples to count tokens of."
    )
    rows = [
        f"| {r.name} | {'pass' if r.success else '**FAIL**'} | {r.unexpected_count} | {_cell(r.detail)} |"
        for r in report.expectations
    ]
    return "\n".join(
        [
            f"# Dataset validation: {verdict}",
            "",
            f"{report.samples} valid samples (train {report.train}, eval {report.eval}), "
            f"checked {report.created_at:%Y-%m-%d %H:%M:%S} UTC.",
            "",
            token_line,
            "",
            "| expectation | result | unexpected | detail |",
            "| --- | --- | ---: | --- |",
            *rows,
            "",
        ]
    )


def failure_message(report: ValidationReport) -> str:
    """One line naming each failed expectation with its counts (or saying that all passed)."""
    failed = [f"{r.name} ({r.detail})" for r in report.expectations if not r.success]
    if not failed:
        return f"validation passed: {report.samples} samples"
    return " ".join(("validation failed: " + ", ".join(failed)).split())


@task(name="validate-data", retries=0, cache_policy=NO_CACHE)
def validate_task(dataset_dir: str, settings: Settings) -> ValidationReport:
    """Prefect task: validate the dataset, publish the report, fail the run when it does not pass.

    Not retried: it reads local files, and a rerun would find the same problems. Not cached: a cache keyed
    on the directory path would miss a changed dataset.
    """
    report = validate_dataset(Path(dataset_dir), settings.validation, token_budget(settings))
    create_markdown_artifact(
        render_report_markdown(report), key=ARTIFACT_KEY, description="dataset validation report"
    )
    if not report.passed:
        raise ValidationFailed(failure_message(report))
    return report


def _read_lines(path: Path, split: str) -> list[_Line]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path.parent.name}/{path.name}: {exc.strerror or exc}") from exc
    return [
        _Line(path.name, number, split, None, _schema_error(parsed))
        if isinstance(parsed, ValidationError)
        else _Line(path.name, number, split, parsed, None)
        for number, parsed in sample_lines(data)
    ]


def _schema_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        text = "invalid JSON"
    else:
        loc = ".".join(str(part) for part in first["loc"])
        text = f"{loc}: {first['msg']}" if loc else str(first["msg"])
    if len(errors) > 1:
        text += f" (+{len(errors) - 1} more)"
    return text[:_MAX_ERROR_CHARS]


def _flatten(valid: list[_Line], tokens: list[int]) -> pd.DataFrame:
    rows = []
    for rec, n_tokens in zip(valid, tokens, strict=True):
        assert rec.sample is not None  # `valid` holds parsed lines only
        messages, meta = rec.sample.messages, rec.sample.meta
        rows.append(
            {
                "file": rec.file,
                "line": rec.line,
                "file_split": rec.split,
                "split": meta.split,
                "task": meta.task,
                "source_path": meta.source_path,
                "lang": meta.lang,
                "roles": ",".join(m.role for m in messages),
                "prompt": "\n".join(m.content for m in messages if m.role == "user"),
                "answer": "\n".join(m.content for m in messages if m.role == "assistant"),
                "min_content_chars": min(len(m.content.strip()) for m in messages),
                "tokens": n_tokens,
            }
        )
    # Explicit columns and dtypes: an empty split still yields the columns the suite expects.
    frame = pd.DataFrame(rows, columns=[*_TEXT_COLUMNS, *_INT_COLUMNS]).astype(_INT_COLUMNS)
    paths = {split: set(frame.loc[frame["file_split"] == split, "source_path"]) for split in SPLITS}
    frame["source_path_in_other_split"] = [
        path in paths["eval" if split == "train" else "train"]
        for path, split in zip(frame["source_path"], frame["file_split"], strict=True)
    ]
    return frame.astype({"source_path_in_other_split": bool})


def _token_stats(tokens: pd.Series) -> dict[str, float]:
    if tokens.empty:
        return {}
    values = tokens.to_numpy()
    return {
        "min": float(values.min()),
        "mean": round(float(values.mean()), 2),
        "p95": float(np.percentile(values, 95)),
        "max": float(values.max()),
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
