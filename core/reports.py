"""What each stage reports: typed pydantic documents that flows, the CLI and the API read by field.

Each report is also the JSON a stage writes next to its outputs, named by its `FILE` (`stats.json`,
`validation.json`, `train.json`, `eval.json`, `export.json`, `promote.json`), so a file on disk and a
task's return value are one shape, and every reader finds it by the same name. Free-form parts
(lineage, configs) stay dicts: they are recorded, not read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class Report(BaseModel):
    """A stage report: unknown keys are refused, so a report and its readers cannot drift apart."""

    model_config = ConfigDict(extra="forbid")
    FILE: ClassVar[str] = ""  # the file a stage writes this report to, next to its outputs


class MonitorMetrics(Report):
    commits_since_last_train: int
    files_changed: int
    lines_changed: int
    critical_paths_changed: bool
    critical_paths: list[str] = Field(default_factory=list)
    new_release_tags: list[str] = Field(default_factory=list)
    head_commit: str | None = None
    last_trained_commit: str | None = None


class MonitorReport(Report):
    """The seed's `/v1/retrain/monitor` shape."""

    should_retrain: bool
    reason: str
    metrics: MonitorMetrics
    checked_at: datetime


class IndexReport(Report):
    """What building or refreshing a project's repo index did (`forgeflow index build`, `index-repo`)."""

    FILE: ClassVar[str] = "index.json"
    commit: str
    mode: Literal["built", "refreshed", "current"]  # current: it was at the commit already
    files: int
    entries: int
    by_kind: dict[str, int]
    changed_files: int  # files whose blob differs from the index's (all of them when built)
    parsed_files: int  # of those, files not found in the per-blob cache
    removed_files: int
    elapsed_seconds: float


class ExtractedFiles(Report):
    total: int  # tracked files at the commit
    sources: int  # of those, files extraction reads (by language and size)
    parsed: int
    cached: int  # parsed before: results reused by blob SHA
    skipped: dict[str, int]  # why the others were left out


class ExtractedSamples(Report):
    total: int
    train: int
    eval: int
    by_task: dict[str, int]
    by_lang: dict[str, int]


class ExtractReport(Report):
    """`stats.json`: what extraction made of one commit, and what it left out and why."""

    FILE: ClassVar[str] = "stats.json"

    commit: str
    config_hash: str
    dataset_sha256: str  # core.hashing.dataset_sha256: the dataset hash of lineage
    files: ExtractedFiles
    samples: ExtractedSamples
    split: dict[str, float]
    dropped: dict[str, int]
    token_budget: dict[str, int]  # the budget (core.budget), samples cut to fit it, the longest kept
    commits: dict[str, int]
    # samples carrying retrieved context: with the answer's chunk (oracle), with distractors only
    context: dict[str, int] = Field(default_factory=dict)
    elapsed_seconds: float | None = None  # of the run that returned it; not written to stats.json


class ExpectationResult(Report):
    """The outcome of one expectation, in words a dataset author can act on."""

    name: str
    success: bool
    unexpected_count: int  # offending rows; for the count expectations, how many samples are missing
    detail: str  # one short line, e.g. "3 samples exceed 2048 tokens (max 2911)"


class ValidationReport(Report):
    """What `validate_dataset` found; `samples`, `train` and `eval` count lines that parse as a Sample."""

    FILE: ClassVar[str] = "validation.json"

    passed: bool
    samples: int
    train: int
    eval: int
    expectations: list[ExpectationResult]
    token_stats: dict[str, float] = Field(description="min / mean / p95 / max rendered tokens per sample")
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class FinetuneReport(Report):
    """What a training run did; `train.json` holds it (plus lineage) once the run completes."""

    FILE: ClassVar[str] = "train.json"

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
    resumed_from_step: int | None = None  # the checkpoint the last session continued from


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

    FILE: ClassVar[str] = "eval.json"

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


class KnowledgeScores(Report):
    """One model's repo knowledge through llama.cpp, with or without retrieval; None: no such question."""

    model: str  # the registry version or base model that answered
    retrieval: bool
    locate: float | None  # the answer names the definition's path and first line
    locate_held_out: float | None  # the same, on questions about held-out files
    locate_path: float | None  # the answer names the path, whatever the line
    explain_rouge_l: float | None  # ROUGE-L F1 against the docstring
    score: float | None  # mean of locate and explain_rouge_l: what the promote gate compares
    seconds: float

    def cells(self) -> tuple[str, str, str, str]:
        """locate, held-out, explain and score as a table shows them ("-": no such question)."""

        def pct(value: float | None) -> str:
            return "-" if value is None else f"{value:.0%}"

        def num(value: float | None) -> str:
            return "-" if value is None else f"{value:.3f}"

        return pct(self.locate), pct(self.locate_held_out), num(self.explain_rouge_l), num(self.score)


class KnowledgeReport(Report):
    """`knowledge.json`: repo knowledge of the candidate, the base and the champion, as served."""

    FILE: ClassVar[str] = "knowledge.json"

    commit: str | None  # the index commit retrieval read; None: no index, no retrieval columns
    questions: dict[str, int]  # locate, locate_held_out, explain
    recall_at_k: float | None  # share of locate questions whose definition retrieval found
    columns: dict[str, KnowledgeScores]  # "base", "tuned", "base + retrieval", "tuned + retrieval", ...
    samples: list[dict[str, str]]  # a few questions with the candidate's answers
    created_at: str

    RETRIEVAL: ClassVar[str] = " + retrieval"  # suffix of a column asked with retrieved context

    def gate_columns(self) -> tuple[str | None, str | None]:
        """(the candidate's column, the column it must match): as served, so with retrieval when
        there is an index; the champion when one was asked, else the base; None where there is none."""
        suffix = self.RETRIEVAL if self.commit else ""
        candidate = "tuned" + suffix if "tuned" + suffix in self.columns else None
        reference = next((c + suffix for c in ("champion", "base") if c + suffix in self.columns), None)
        return candidate, reference


class ParityResult(Report):
    """A GGUF against the HF model it came from, teacher-forced (tasks.export.parity), and the verdict.

    Gated: mean KL(P_hf || P_gguf) in nats and |ppl_gguf / ppl_hf - 1|, each against its quant's
    threshold, and no non-finite logits. Reported only: top-1 agreement.
    """

    kl: float
    kl_max: float
    max_kl: float
    ppl_hf: float
    ppl_gguf: float
    ppl_change: float
    max_ppl_change: float
    agreement: float
    matches: int
    positions: int
    prompts: int
    nonfinite: int  # positions where the GGUF's logits held NaN or inf
    passed: bool


class ExportedGGUF(Report):
    file: str
    sha256: str
    bytes: int
    tensors: int
    parity: ParityResult


class ExportReport(Report):
    """`export.json`: each GGUF's hash, size and parity, the lineage of the weights and the verdict."""

    FILE: ClassVar[str] = "export.json"

    passed: bool
    created_at: str
    source: dict[str, Any]
    tools: dict[str, str]
    ggufs: dict[str, ExportedGGUF]
    parity_setup: dict[str, Any]


class PrepareDataReport(Report):
    """What the prepare-data flow returns: the monitor's decision, then (unless it stopped) the dataset."""

    monitor: MonitorReport
    extract: ExtractReport | None = None
    validation: ValidationReport | None = None


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


class PromoteDecision(Report):
    """`promote.json`: what the promote gate decided, with the figures it decided on."""

    FILE: ClassVar[str] = "promote.json"

    promote: bool
    reason: str
    candidate: str  # name:version of the new model
    champion: str | None  # name:version serving as champion before
    tuned_perplexity: float
    base_perplexity: float
    champion_perplexity: float | None = None  # the champion scored on this eval set
    candidate_gguf_perplexity: float | None = None  # the candidate scored the same way
    candidate_knowledge: float | None = None  # KnowledgeScores.score of the candidate as served
    reference_knowledge: float | None = None  # ...of what it had to match: the champion, else the base
    reference: str | None = None  # which column that was
    margin: float
