"""The evaluation report: base and tuned scores side by side, as eval.json content and as Markdown.

eval.json keeps the seed's `/validate/{job_id}` fields (`passed`, `metrics.final_loss`,
`metrics.perplexity`, `report_path`) and stays flat enough for `dvc metrics show`: nested
dicts of numbers, no lists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.config import EvalConfig
from tasks.evaluate.generation import METRICS, Prompt

REPORT_MD = "eval.md"
_EXAMPLE_CHARS = 400
GenerationScores = dict[str, float | int | None]  # {"exact_match_locate": 0.5, "locate_samples": 2, ...}


@dataclass(frozen=True, slots=True)
class NllScore:
    nll: float  # mean negative log-likelihood per assistant token, in nats
    tokens: int  # assistant tokens scored
    samples: int  # samples with at least one assistant token scored

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll)


@dataclass(frozen=True, slots=True)
class ModelScores:
    nll: NllScore
    generation: GenerationScores
    answers: list[str]  # one per generation prompt, in prompt order


def build_report(
    base: ModelScores, tuned: ModelScores, cfg: EvalConfig, lineage: dict[str, Any], eval_samples: int
) -> dict[str, Any]:
    """The eval.json content: verdict, the seed's metrics, both models' scores, deltas and lineage.

    Args:
        lineage: base model, method, config and dataset hashes the numbers belong to.
        eval_samples: samples in the eval split (scored ones are counted in each model's block).
    """
    base_ppl, tuned_ppl = base.nll.perplexity, tuned.nll.perplexity
    threshold = base_ppl * (1 - cfg.margin)
    delta: dict[str, float | None] = {
        "nll": tuned.nll.nll - base.nll.nll,
        "perplexity": tuned_ppl - base_ppl,
        "perplexity_improvement": 1 - tuned_ppl / base_ppl,  # relative; > 0: tuned is better
    }
    for m in METRICS:
        b, t = base.generation[m.name], tuned.generation[m.name]
        delta[m.name] = t - b if b is not None and t is not None else None
    return {
        "passed": tuned_ppl <= threshold,
        "metrics": {"final_loss": tuned.nll.nll, "perplexity": tuned_ppl},
        "report_path": REPORT_MD,  # next to eval.json
        "margin": cfg.margin,
        "threshold_perplexity": threshold,
        "base": _model_block(base),
        "tuned": _model_block(tuned),
        "delta": delta,
        "eval_samples": eval_samples,
        "lineage": lineage,
        "config": cfg.model_dump(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def render_report_markdown(report: dict[str, Any], examples: Sequence[tuple[Prompt, str, str]] = ()) -> str:
    """The report as Markdown: verdict, a base/tuned/delta table, lineage, and one example per task.

    Args:
        examples: (prompt, base answer, tuned answer); the first of each task is shown.
    """
    base, tuned, delta, lineage = report["base"], report["tuned"], report["delta"], report["lineage"]
    rows = [
        ("mean NLL per answer token (nats)", "nll"),
        ("perplexity", "perplexity"),
        *((f"{m.label} (n={tuned[f'{m.task}_samples']})", m.name) for m in METRICS),
    ]
    lines = [
        f"# Model evaluation: {'PASSED' if report['passed'] else 'FAILED'}",
        "",
        summary_line(report) + ".",
        "",
        "| metric | base | tuned | delta |",
        "| --- | ---: | ---: | ---: |",
        *(
            f"| {label} | {_num(base[k])} | {_num(tuned[k])} | {_num(delta[k], signed=True)} |"
            for label, k in rows
        ),
        "",
        f"{tuned['samples']} of {report['eval_samples']} eval samples scored ({tuned['tokens']} answer "
        "tokens; prompt and padding tokens excluded).",
        f"Base model `{lineage['base_model']}`, method {lineage['method']}, config hash "
        f"{lineage['config_hash']}; eval.jsonl sha256 {str(lineage['eval_dataset_sha256'])[:16]}.",
        "",
    ]
    shown: set[str] = set()
    for prompt, base_answer, tuned_answer in examples:
        if prompt.task in shown:
            continue
        shown.add(prompt.task)
        lines += [f"## Example: {prompt.task}", ""]
        for label, text in (
            ("prompt", prompt.question),
            ("reference", prompt.reference),
            ("base", base_answer),
            ("tuned", tuned_answer),
        ):
            lines += [f"{label}:", "", *_indented(text), ""]
    return "\n".join(lines)


def summary_line(report: dict[str, Any]) -> str:
    """One line: tuned vs base perplexity and what passing needed."""
    tuned, base = report["tuned"]["perplexity"], report["base"]["perplexity"]
    return (
        f"evaluation {'passed' if report['passed'] else 'failed'}: tuned perplexity {tuned:.3f} vs base "
        f"{base:.3f} ({report['delta']['perplexity_improvement']:+.1%} improvement), passing needs "
        f"<= {report['threshold_perplexity']:.3f} (margin {report['margin']:.0%})"
    )


def _model_block(scores: ModelScores) -> dict[str, Any]:
    nll = scores.nll
    return {
        "nll": nll.nll,
        "perplexity": nll.perplexity,
        "tokens": nll.tokens,
        "samples": nll.samples,
        **scores.generation,
    }


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _indented(text: str) -> list[str]:
    clipped = text if len(text) <= _EXAMPLE_CHARS else text[:_EXAMPLE_CHARS] + " [...]"
    # an indented code block: no fence for the sample's own ``` to break
    return ["    " + line for line in (clipped.strip() or "(empty)").splitlines()]
