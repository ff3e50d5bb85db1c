"""Typed configuration of each pipeline step (bounded, unknown keys rejected)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Language = Literal["python", "javascript", "typescript", "go", "rust", "java", "markdown", "rst"]
ALL_LANGUAGES: tuple[Language, ...] = (
    "python",
    "javascript",
    "typescript",
    "go",
    "rust",
    "java",
    "markdown",
    "rst",
)


class StepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MonitorConfig(StepConfig):
    """When a repository has changed enough to retrain."""

    min_commits: int = Field(10, ge=1, le=1_000_000, description="retrain after this many new commits")
    min_files_changed: int = Field(20, ge=1, le=1_000_000, description="... or this many changed files")
    min_lines_changed: int = Field(1000, ge=1, le=100_000_000, description="... or this many changed lines")
    critical_paths: list[str] = Field(
        default_factory=lambda: ["pyproject.toml", "setup.py", "package.json", "go.mod", "Cargo.toml"],
        description="glob patterns; any change to a matching file triggers retraining",
    )
    release_tag_patterns: list[str] = Field(default_factory=lambda: ["v*", "release/*"])
    fetch_retries: int = Field(3, ge=0, le=10, description="retries of clone/fetch on network errors")
    fetch_backoff_seconds: float = Field(2.0, ge=0, le=300)
    fetch_timeout_seconds: float = Field(
        1800, ge=1, le=86_400, description="a clone or fetch running longer is killed (then retried)"
    )


class ExtractConfig(StepConfig):
    """What becomes a training sample, and what never does."""

    languages: list[Language] = Field(default_factory=lambda: list(ALL_LANGUAGES))
    eval_fraction: float = Field(0.1, ge=0.0, le=0.5, description="share of files held out for eval")
    split_seed: str = Field("forgeflow", min_length=1, max_length=64)
    max_file_bytes: int = Field(512_000, ge=1_000, le=50_000_000, description="larger files are skipped")
    max_symbol_lines: int = Field(200, ge=5, le=5_000, description="longer symbols are not used as answers")
    min_body_lines: int = Field(3, ge=1, le=100, description="shorter bodies make no implement task")
    history: bool = Field(True, description="use commit messages and diffs")
    max_commits: int = Field(2_000, ge=0, le=1_000_000)
    max_diff_bytes: int = Field(5_000, ge=200, le=1_000_000, description="larger diffs are skipped")
    max_sample_chars: int = Field(
        6_000, ge=200, le=1_000_000, description="cheap prefilter: longer ones go before tokens are counted"
    )
    min_commit_message_chars: int = Field(12, ge=1, le=1_000)
    max_doc_section_chars: int = Field(4_000, ge=100, le=100_000)
    min_doc_section_chars: int = Field(80, ge=1, le=10_000)
    near_duplicate_threshold: float = Field(0.85, ge=0.5, le=1.0, description="Jaccard similarity")
    entropy_threshold: float = Field(4.0, ge=2.5, le=8.0, description="bits/char for base64-like tokens")
    workers: int = Field(0, ge=0, le=64, description="parser processes; 0 = one per CPU")
    context_share: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="share of locate/explain/doc samples that carry retrieved repo context (RAFT), "
        "rendered as serving renders it",
    )
    distractor_share: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="of those, the share whose context lacks the answer (distractors only)",
    )
    skip_dirs: list[str] = Field(
        default_factory=lambda: [
            "node_modules",
            "vendor",
            "dist",
            "build",
            "third_party",
            "site-packages",
            ".venv",
            "venv",
            "__pycache__",
            ".tox",
            ".mypy_cache",
            "target",
            "generated",
        ]
    )


class ValidateConfig(StepConfig):
    """Expectations a dataset must meet before training.

    `min_tokens..max_tokens` is the token budget (core.budget) of the whole pipeline: extraction cuts or
    drops samples outside it, validation checks it, both counting with `base_model`'s chat template.
    """

    min_samples: int = Field(20, ge=1, le=10_000_000)
    min_eval_samples: int = Field(1, ge=0, le=1_000_000)
    min_tokens: int = Field(8, ge=1, le=100_000, description="token budget: rendered lower bound")
    max_tokens: int = Field(2048, ge=16, le=1_000_000, description="token budget: rendered upper bound")
    max_duplicate_prompt_fraction: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="before")
    @classmethod
    def _no_tokenizer_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and "tokenizer" in data:
            raise ValueError("validation.tokenizer is gone: tokens are counted with base_model's tokenizer")
        return data


Method = Literal["lora", "pissa", "dora", "qlora"]
Quant = Literal["f16", "q8_0", "q4_k_m"]
DEFAULT_QUANTS: list[Quant] = ["f16", "q8_0", "q4_k_m"]
# The parity gate (tasks.export.parity), calibrated on SmolLM2-135M by benchmarks/parity_calibration.py:
# mean KL(P_hf || P_gguf) of the next-token distributions in nats, and |ppl_gguf / ppl_hf - 1|.
DEFAULT_MAX_KL: dict[Quant, float] = {"f16": 0.002, "q8_0": 0.01, "q4_k_m": 0.10}
DEFAULT_MAX_PPL_CHANGE: dict[Quant, float] = {"f16": 0.01, "q8_0": 0.04, "q4_k_m": 0.20}
DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class TrainConfig(StepConfig):
    """How an adapter is trained; profiles in configs/train/*.yaml set these."""

    method: Method = "lora"
    rank: int = Field(16, ge=1, le=1024, description="higher: more capacity, more memory")
    alpha: int = Field(32, ge=1, le=4096, description="update scale = alpha / rank")
    dropout: float = Field(0.05, ge=0.0, le=0.5)
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGETS), min_length=1)
    pissa_niter: int = Field(4, ge=0, le=64, description="fast-SVD iterations for PiSSA; 0 = exact SVD")
    learning_rate: float = Field(2e-4, gt=0.0, le=1.0)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0.0, le=0.5)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    max_grad_norm: float = Field(1.0, gt=0.0, le=100.0)
    epochs: float = Field(1.0, gt=0.0, le=100.0)
    max_steps: int | None = Field(None, ge=1, le=10_000_000, description="overrides epochs when set")
    batch_size: int = Field(4, ge=1, le=1024, description="sequences per step per device")
    grad_accum: int = Field(4, ge=1, le=1024)
    max_length: int = Field(1024, ge=32, le=131_072, description="tokens per (packed) sequence")
    packing: bool = Field(True, description="pack samples into full rows: no padding computed")
    seed: int = Field(42, ge=0, le=2**31 - 1)
    save_steps: int = Field(50, ge=1, le=1_000_000, description="checkpoint every N optimizer steps")
    keep_checkpoints: int = Field(2, ge=1, le=100)
    gradient_checkpointing: bool = Field(False, description="less activation memory, ~30% slower")
    backend: Literal["auto", "peft", "unsloth"] = Field("auto", description="auto: unsloth with CUDA")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="auto: fp32 on CPU")


class EvalConfig(StepConfig):
    """Tuned vs base on the eval split."""

    margin: float = Field(
        0.0, ge=0.0, le=0.99, description="pass when tuned perplexity <= base perplexity * (1 - margin)"
    )
    max_samples: int = Field(128, ge=0, le=1_000_000, description="eval samples scored for NLL; 0 = all")
    batch_size: int = Field(8, ge=1, le=1024)
    max_length: int = Field(1024, ge=32, le=131_072)
    generation_samples: int = Field(
        0, ge=0, le=10_000, description="held-out samples per generation task (HF models; 0: off)"
    )
    max_new_tokens: int = Field(48, ge=1, le=4096)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    knowledge_questions: int = Field(
        6,
        ge=0,
        le=1_000,
        description="repo-knowledge questions per kind (held-out locate, train locate, explain)",
    )
    knowledge_max_tokens: int = Field(
        48, ge=8, le=1_024, description="tokens a repo-knowledge answer may take"
    )


class ExportConfig(StepConfig):
    """Merged weights to GGUF, and the parity a GGUF must reach to be accepted."""

    quants: list[Quant] = Field(default_factory=lambda: list(DEFAULT_QUANTS), min_length=1)
    parity_prompts: int = Field(8, ge=1, le=1_000, description="eval prompts used for the parity check")
    parity_tokens: int = Field(32, ge=1, le=1_024, description="greedy tokens compared per prompt")
    max_kl: dict[Quant, Annotated[float, Field(ge=0.0, le=10.0)]] = Field(
        default_factory=lambda: dict(DEFAULT_MAX_KL),
        description="most mean KL(HF || GGUF) of the next-token distributions, in nats, a GGUF may have",
    )
    max_ppl_change: dict[Quant, Annotated[float, Field(ge=0.0, le=10.0)]] = Field(
        default_factory=lambda: dict(DEFAULT_MAX_PPL_CHANGE),
        description="most |ppl_gguf / ppl_hf - 1| on the reference continuations a GGUF may have",
    )
    n_ctx: int = Field(2048, ge=128, le=131_072)

    @model_validator(mode="before")
    @classmethod
    def _no_min_agreement_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and "min_agreement" in data:
            raise ValueError(
                "export.min_agreement is gone: top-1 agreement is only reported; the parity gate is "
                "export.max_kl and export.max_ppl_change"
            )
        return data


BackendName = Literal["llamacpp", "ollama"]


class ServeConfig(StepConfig):
    """The HTTP API and the serving backends behind it."""

    host: str = Field("127.0.0.1", description="loopback by default: expose deliberately")
    port: int = Field(8000, ge=1, le=65_535)
    backend: BackendName = Field("llamacpp", description="where text-generation models are deployed")
    ollama_host: str = Field("http://127.0.0.1:11434", description="OLLAMA_HOST also sets it")
    max_loaded_models: int = Field(2, ge=1, le=64, description="llama.cpp processes; LRU unload beyond")
    n_ctx: int = Field(2048, ge=128, le=131_072, description="context of each request (per llama.cpp slot)")
    n_threads: int = Field(0, ge=0, le=512, description="llama.cpp threads per model; 0 = all cores")
    parallel: int = Field(
        4,
        ge=1,
        le=64,
        description="llama.cpp slots per model: requests decoded together (continuous batching)",
    )
    max_queue: int = Field(
        16, ge=0, le=4096, description="requests a model holds waiting for a slot; beyond: 503 + Retry-After"
    )
    llama_server: str | None = Field(
        None, description="the llama-server binary; default: the one `make install` put beside this Python"
    )
    start_timeout_s: float = Field(120, gt=0, le=3600, description="a model server must answer by then")
    request_timeout_s: float = Field(120, gt=0, le=3600, description="longer inferences get 504")
    max_request_bytes: int = Field(1_048_576, ge=1024, le=1 << 30, description="larger bodies get 413")
    cors_origins: list[str] = Field(default_factory=list, description="exact origins; '*' is refused")


class IndexConfig(StepConfig):
    """The repo index and grounded answers: what chat to a project's model retrieves."""

    retrieval: bool = Field(
        True, description="project models answer from their repo index by default (a request can turn it off)"
    )
    top_k: int = Field(5, ge=1, le=50, description="chunks retrieved per question")
    max_context_tokens: int = Field(
        320,
        ge=64,
        le=32_768,
        description="most of the slot's context the retrieved chunks may take (training samples' too)",
    )
    recent_commits: int = Field(200, ge=0, le=100_000, description="newest commits indexed (message, files)")
    refresh_timeout_s: float = Field(
        5.0, ge=0, le=600, description="a question waits this long for a stale index to catch up"
    )


class CpuConfig(StepConfig):
    """How training and serving share one machine's cores (`forgeflow up` runs both)."""

    shared: bool = Field(
        False, description="training and serving run on this machine together: split the threads"
    )
    serve_threads: int = Field(1, ge=1, le=512, description="llama.cpp threads per model when shared")
    train_nice: int = Field(10, ge=0, le=19, description="training's CPU niceness when shared: serving wins")


class JobsConfig(StepConfig):
    """Jobs: Prefect flow runs of forgeflow's deployments, started by the API, hooks and schedules."""

    prefect_port: int = Field(4200, ge=1, le=65_535, description="the embedded Prefect server (UI)")
    max_training_runs: int = Field(
        1, ge=1, le=64, description="FORGEFLOW_MAX_TRAINING_RUNS: training runs at once; the rest queue"
    )
    monitor_interval_minutes: int = Field(
        0, ge=0, le=10_080, description="the scheduled monitor of the watched repos; 0 = no schedule"
    )
    watched_repos: list[str] = Field(default_factory=list, description="repos the scheduled monitor checks")
    profile: str = Field("cpu-quick", min_length=1, max_length=256, description="retrain's training profile")
    promote_margin: float = Field(
        0.0, ge=0, lt=1, description="a new champion beats the base's perplexity by this fraction (a guard)"
    )
    knowledge_tolerance: float = Field(
        0.02, ge=0, le=1, description="a candidate may score this much below the champion's repo knowledge"
    )
    crash_after_s: float = Field(
        15, gt=0, le=3600, description="a running job whose process is gone is marked crashed by then"
    )
    pause_timeout_s: int = Field(7 * 86_400, ge=60, le=30 * 86_400, description="a paused job fails after")
    start_timeout_s: float = Field(
        180, gt=0, le=3600, description="`forgeflow up`: each part must answer by then"
    )


class BenchConfig(StepConfig):
    """Benchmarks of served models (`forgeflow bench`, `/benchmarks`, the retrain flow's speed gate)."""

    suite: str = Field("default", min_length=1, max_length=64, description="the suite run when none is named")
    request_timeout_s: float = Field(
        120, gt=0, le=3600, description="a request past this counts as a timeout"
    )
    time_bound_s: float = Field(
        1800, gt=0, le=86_400, description="a run stops here; what is left is not sent (the run is partial)"
    )
    ttft_ms: float | None = Field(2000, gt=0, description="goodput: a good request's first token by then")
    tpot_ms: float | None = Field(250, gt=0, description="goodput: ... and its time per output token")
    retrain: bool = Field(True, description="the retrain flow benchmarks candidate and champion")
    retrain_suite: str = Field("repo", min_length=1, max_length=64, description="the suite it runs")
    max_regression: float = Field(
        0.25,
        ge=0,
        le=10,
        description="promotion is blocked when the candidate's tokens/s is lower, or its TTFT p50 higher, "
        "than the champion's by more than this fraction",
    )
