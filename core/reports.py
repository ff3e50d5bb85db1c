"""What each stage reports: typed pydantic documents that flows, the CLI and the API read by field.

Each report is also the JSON a stage writes next to its outputs (`validation.json`, `train.json`,
`eval.json`, `export.json`), so a file on disk and a task's return value are one shape. Free-form
parts (lineage, configs) stay dicts: they are recorded, not read.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class Report(BaseModel):
    """A stage report: unknown keys are refused, so a report and its readers cannot drift apart."""

    model_config = ConfigDict(extra="forbid")


class FinetuneReport(Report):
    """What a training run did; `train.json` holds it (plus lineage) once the run completes."""

    model_config = ConfigDict(extra="ignore")  # train.json adds the lineage keys beside it

    status: Literal["completed", "paused", "cached"]
    base_model: str
    method: str
    backend: str
    device: str
    dtype: str
    config: dict[str, Any]
    config_hash: str
    dataset_hash: str
    source_commit: str | None
    samples: int
    truncated_samples: int
    dropped_samples: int
    steps: int
    epochs: float
    tokens: int
    tokens_per_second: float
    final_loss: float | None
    loss_curve: list[tuple[int, float]]
    runtime_seconds: float
    peak_memory_mb: float


class EvalMetrics(Report):
    """The seed API's metrics: the tuned model's mean NLL (its loss) and perplexity = exp(NLL)."""

    final_loss: float
    perplexity: float


class ModelScores(Report):
    """One model's scores on the eval split; generation metrics are None when none were scored."""

    nll: float
    perplexity: float
    tokens: int
    samples: int
    # generation metrics (tasks.evaluate.generation.METRICS): mean score, and how many were scored
    exact_match_locate: float | None
    locate_samples: int
    rouge_l_explain: float | None
    explain_samples: int


class EvalReport(Report):
    """`eval.json`: the verdict, the tuned model's metrics, both models' scores, deltas and lineage."""

    passed: bool
    metrics: EvalMetrics
    report_path: str
    margin: float
    threshold_perplexity: float
    base: ModelScores
    tuned: ModelScores
    delta: dict[str, float | None]
    eval_samples: int
    lineage: dict[str, Any]
    config: dict[str, Any]
    created_at: str


class ParityResult(Report):
    """Teacher-forced top-1 agreement of a GGUF with the HF model it came from."""

    agreement: float
    matches: int
    positions: int
    prompts: int
    min_agreement: float
    passed: bool


class ExportedGGUF(Report):
    file: str
    sha256: str
    bytes: int
    tensors: int
    parity: ParityResult


class ExportReport(Report):
    """`export.json`: each GGUF's hash, size and parity, the lineage of the weights and the verdict."""

    passed: bool
    created_at: str
    source: dict[str, Any]
    tools: dict[str, str]
    ggufs: dict[str, ExportedGGUF]
    parity_setup: dict[str, Any]


class RegisteredModel(Report):
    """The registry version a flow registered its export as."""

    key: str
    sha256: str
    aliases: list[str]


class FinetuneFlowReport(Report):
    """What the finetune flow returns: each stage's report (None when the flow stopped before it)."""

    train: FinetuneReport | None = None
    evaluate: EvalReport | None = None
    export: ExportReport | None = None
    lineage: dict[str, Any] | None = None
    registered: RegisteredModel | None = None
    plan: dict[str, Any] | None = None  # dry_run: the resolved config and base model, nothing run
