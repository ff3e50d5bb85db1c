"""The Great Expectations suite a flattened dataset must pass, run in memory, results in plain words.

Two frames come in (built by `tasks.validate.run`):
- `lines`: one row per non-blank JSONL line: `file`, `line`, `schema_error` (None when it parses);
- `samples`: one row per line that parses as a Sample: `file`, `line`, `file_split`, `split`, `task`,
  `source_path`, `lang`, `roles`, `prompt`, `answer`, `min_content_chars`, `tokens`,
  `source_path_in_other_split`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from core.budget import TokenBudget
from core.config import ValidateConfig
from core.reports import ExpectationResult

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

# (GX result, the frame it ran on, the config) -> (unexpected count, one-line detail)
Describe = Callable[[dict[str, Any], pd.DataFrame, ValidateConfig], tuple[int, str]]
# An optional system message, then one user turn, then the assistant's answer last.
ALLOWED_ROLES = ("user,assistant", "system,user,assistant")
# How many offending lines a detail names; the rest is a count.
EXAMPLES = 3


def run_expectations(
    lines: pd.DataFrame,
    samples: pd.DataFrame,
    cfg: ValidateConfig,
    budget: TokenBudget,
    secret_patterns: Sequence[str],
) -> list[ExpectationResult]:
    """Validate the frames with an in-memory GX context; one result per expectation, in suite order.

    `samples["tokens"]` must be `budget.count` of each sample; its bounds are the token budget's.
    """
    import great_expectations as gx

    context = _ephemeral_context()
    source = context.data_sources.add_pandas("dataset")
    frames = {"lines": lines, "samples": samples, "eval": samples[samples["file_split"] == "eval"]}
    outcomes: dict[str, Any] = {}
    for frame_name, expectations in _suites(cfg, budget, secret_patterns).items():
        batch = (
            source.add_dataframe_asset(frame_name)
            .add_batch_definition_whole_dataframe("whole")
            .get_batch(batch_parameters={"dataframe": frames[frame_name]})
        )
        suite = gx.ExpectationSuite(name=f"forgeflow-{frame_name}", expectations=expectations)
        for result in batch.validate(suite, result_format="SUMMARY").results:
            outcomes[result.expectation_config.meta["name"]] = result
    results = []
    for name, describe in _describers(budget).items():
        outcome = outcomes[name]
        frame = lines if name == "schema" else samples
        error = _exception_message(outcome.exception_info or {})
        if error is not None:
            results.append(ExpectationResult(name=name, success=False, unexpected_count=0, detail=error))
            continue
        count, detail = describe(outcome.result, frame, cfg)
        results.append(
            ExpectationResult(name=name, success=bool(outcome.success), unexpected_count=count, detail=detail)
        )
    return results


def _ephemeral_context() -> Any:
    """A GX context that keeps everything in memory: no files, no analytics, no progress bars."""
    # GX 1.24 ships no analytics client; the switches keep other 1.x releases quiet too. A user's explicit
    # setting is left alone.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        analytics_enabled=False,
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        progress_bars=ProgressBarsConfig(globally=False),  # tqdm bars would pollute DVC and Prefect logs
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def _suites(
    cfg: ValidateConfig, budget: TokenBudget, secret_patterns: Sequence[str]
) -> dict[str, list[Expectation]]:
    from great_expectations import expectations as gxe

    def named(name: str) -> dict[str, Any]:
        return {"meta": {"name": name}}

    return {
        "lines": [gxe.ExpectColumnValuesToBeNull(column="schema_error", **named("schema"))],
        "samples": [
            gxe.ExpectColumnValuesToBeInSet(column="roles", value_set=list(ALLOWED_ROLES), **named("roles")),
            gxe.ExpectColumnValuesToBeBetween(
                column="min_content_chars", min_value=1, **named("non_empty_content")
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="tokens",
                min_value=budget.min_tokens,
                max_value=budget.max_tokens,
                **named("token_length"),
            ),
            # GX counts every member of a duplicate group, so the fraction is of samples sharing a prompt.
            gxe.ExpectColumnValuesToBeUnique(
                column="prompt", mostly=1.0 - cfg.max_duplicate_prompt_fraction, **named("unique_prompts")
            ),
            gxe.ExpectColumnValuesToNotMatchRegexList(
                column="prompt", regex_list=list(secret_patterns), **named("no_secrets_in_prompt")
            ),
            gxe.ExpectColumnValuesToNotMatchRegexList(
                column="answer", regex_list=list(secret_patterns), **named("no_secrets_in_answer")
            ),
            gxe.ExpectColumnValuesToBeInSet(
                column="source_path_in_other_split", value_set=[False], **named("disjoint_splits")
            ),
            gxe.ExpectColumnPairValuesToBeEqual(
                column_A="split", column_B="file_split", **named("split_matches_file")
            ),
            gxe.ExpectTableRowCountToBeBetween(min_value=cfg.min_samples, **named("min_samples")),
        ],
        "eval": [
            gxe.ExpectTableRowCountToBeBetween(min_value=cfg.min_eval_samples, **named("min_eval_samples"))
        ],
    }


def _exception_message(info: dict[str, Any]) -> str | None:
    """The first error GX caught while computing an expectation, or None; GX nests it per metric."""
    for entry in [info, *(v for v in info.values() if isinstance(v, dict))]:
        if entry.get("raised_exception") or entry.get("exception_message"):
            message = str(entry.get("exception_message") or "unknown error").strip()
            return "could not be checked: " + (message.splitlines() or ["unknown error"])[0]
    return None


def _refs(frame: pd.DataFrame, result: dict[str, Any]) -> str:
    """`train.jsonl:12, eval.jsonl:3 (+5 more)` for the rows GX reported as unexpected."""
    index = list(result.get("partial_unexpected_index_list") or [])
    rows = frame.loc[index[:EXAMPLES]]
    refs = [f"{file}:{line}" for file, line in zip(rows["file"], rows["line"], strict=True)]
    more = int(result.get("unexpected_count", 0)) - len(refs)
    return ", ".join(refs) + (f" (+{more} more)" if more > 0 else "")


def _unexpected(result: dict[str, Any]) -> int:
    return int(result.get("unexpected_count") or 0)


def _schema(result: dict[str, Any], lines: pd.DataFrame, cfg: ValidateConfig) -> tuple[int, str]:
    n = _unexpected(result)
    if not n:
        return 0, f"all {len(lines)} lines parse as a Sample"
    rows = lines.loc[list(result.get("partial_unexpected_index_list") or [])[:EXAMPLES]]
    refs = [
        f"{f}:{line} ({err})"
        for f, line, err in zip(rows["file"], rows["line"], rows["schema_error"], strict=True)
    ]
    more = f" (+{n - len(refs)} more)" if n > len(refs) else ""
    return n, f"{n} line(s) are not a valid Sample: " + "; ".join(refs) + more


def _roles(result: dict[str, Any], samples: pd.DataFrame, cfg: ValidateConfig) -> tuple[int, str]:
    n = _unexpected(result)
    if not n:
        return 0, "every sample is [system,] user, assistant"
    seen = sorted({str(v) for v in result.get("partial_unexpected_list") or []})[:EXAMPLES]
    allowed = " or ".join(ALLOWED_ROLES)
    return n, f"{n} sample(s) with roles {', '.join(seen)} (allowed: {allowed}): {_refs(samples, result)}"


def _flagged_rows(ok: str, flagged: str) -> Describe:
    """For an expectation that flags rows: `ok` when none is flagged, else how many, what, and where."""

    def describe(result: dict[str, Any], samples: pd.DataFrame, cfg: ValidateConfig) -> tuple[int, str]:
        n = _unexpected(result)
        if not n:
            return 0, ok
        return n, f"{n} {flagged}: {_refs(samples, result)}"

    return describe


_non_empty = _flagged_rows("every message has text", "sample(s) with a blank message")
_split_matches = _flagged_rows(
    "meta.split matches the file of every sample", "sample(s) whose meta.split differs from their file"
)


def _token_length(budget: TokenBudget) -> Describe:
    low, high = budget.min_tokens, budget.max_tokens

    def describe(result: dict[str, Any], samples: pd.DataFrame, cfg: ValidateConfig) -> tuple[int, str]:
        n = _unexpected(result)
        if not n:
            return 0, f"every sample renders to {low}..{high} tokens"
        tokens = samples["tokens"]
        parts = []
        over = tokens[tokens > high]
        under = tokens[tokens < low]
        if len(over):
            parts.append(f"{len(over)} sample(s) exceed {high} tokens (max {int(over.max())})")
        if len(under):
            parts.append(f"{len(under)} sample(s) under {low} tokens (min {int(under.min())})")
        return n, "; ".join(parts) + f": {_refs(samples, result)}"

    return describe


def _unique_prompts(result: dict[str, Any], samples: pd.DataFrame, cfg: ValidateConfig) -> tuple[int, str]:
    n = _unexpected(result)
    if not n:
        return 0, "every user prompt is unique"
    prompts = samples["prompt"]
    groups = int(prompts[prompts.duplicated(keep=False)].nunique())
    allowed = f"{cfg.max_duplicate_prompt_fraction:.1%}"
    return (
        n,
        f"{n} samples share {groups} prompt(s) (allowed: {allowed} of samples): {_refs(samples, result)}",
    )


def _secrets(column: str) -> Describe:
    # Name the lines only: the report must not repeat the secret it found.
    return _flagged_rows(f"no {column} matches a secret pattern", f"{column}(s) match a secret pattern")


def _disjoint(result: dict[str, Any], samples: pd.DataFrame, cfg: ValidateConfig) -> tuple[int, str]:
    n = _unexpected(result)
    if not n:
        return 0, "no source file is in both train and eval"
    shared = sorted(samples.loc[samples["source_path_in_other_split"], "source_path"].unique())
    examples = ", ".join(shared[:EXAMPLES]) + (
        f" (+{len(shared) - EXAMPLES} more)" if len(shared) > EXAMPLES else ""
    )
    return n, f"{n} samples from {len(shared)} file(s) in both train and eval: {examples}"


def _row_count(minimum: Callable[[ValidateConfig], int], what: str) -> Describe:
    def describe(result: dict[str, Any], samples: pd.DataFrame, cfg: ValidateConfig) -> tuple[int, str]:
        observed, required = int(result.get("observed_value") or 0), minimum(cfg)
        if observed >= required:
            return 0, f"{observed} {what} >= {required}"
        return required - observed, f"{observed} {what} < {required}"

    return describe


def _describers(budget: TokenBudget) -> dict[str, Describe]:
    """Suite order, and how each result reads."""
    return {
        "schema": _schema,
        "roles": _roles,
        "non_empty_content": _non_empty,
        "token_length": _token_length(budget),
        "unique_prompts": _unique_prompts,
        "no_secrets_in_prompt": _secrets("prompt"),
        "no_secrets_in_answer": _secrets("answer"),
        "disjoint_splits": _disjoint,
        "split_matches_file": _split_matches,
        "min_samples": _row_count(lambda cfg: cfg.min_samples, "valid samples"),
        "min_eval_samples": _row_count(lambda cfg: cfg.min_eval_samples, "valid eval samples"),
    }
