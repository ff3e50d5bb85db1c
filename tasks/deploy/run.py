"""Promote and deploy: a new model becomes the champion only when it beats the base and the champion.

`promote` registers the export as a new version and decides; `deploy` loads the winner on the
running API (which serves it as `name:champion`) and only then moves the `champion` alias, so a
failed deploy leaves the previous champion serving and named.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE

from core.base_models import EMBEDDED, base_gguf, load_tokenizer
from core.errors import ForgeflowError
from core.registry import CHAMPION, ModelInfo, Registry
from core.reports import EvalReport, ExportReport, KnowledgeReport, PromoteDecision
from core.settings import Settings
from tasks.deploy.score import gguf_perplexity

log = logging.getLogger(__name__)

SCORE_SAMPLES = 64  # eval samples both GGUFs are scored on when a champion exists


def promote(
    name: str,
    export_dir: Path,
    data_dir: Path,
    evaluation: EvalReport,
    export: ExportReport,
    settings: Settings,
    source_repo: str | None = None,
    knowledge: KnowledgeReport | None = None,
) -> PromoteDecision:
    """Register the export as a new version of `name` (trained from `source_repo`, whose index its
    answers retrieve from); decide whether it replaces the champion.

    Perplexity is a guard (the tuned model must beat its base on the eval split); the decision is
    repo knowledge as served (`knowledge`, see tasks.evaluate.knowledge): a candidate that knows the
    repository less than the champion, or than the base when there is no tuned champion, stays out,
    whatever its perplexity. Without knowledge questions, the GGUFs' perplexities decide.
    """
    margin = settings.jobs.promote_margin
    tuned, base = evaluation.metrics.perplexity, evaluation.base.perplexity
    with Registry.from_settings(settings) as registry:
        # a re-run of this flow: no new version
        candidate = registry.register_export(export_dir, name=name, source_repo=source_repo)
        target = registry.alias_target(name, CHAMPION)
        champion = registry.resolve(f"{name}:{target}") if target else None
    if champion is not None and (champion.key == candidate.key or champion.config.get("base")):
        champion_to_beat = None  # the base itself: the guard and the knowledge columns cover it
    else:
        champion_to_beat = champion
    decision = PromoteDecision(
        promote=False,
        reason="",
        candidate=candidate.key,
        champion=champion.key if champion else None,
        tuned_perplexity=tuned,
        base_perplexity=base,
        margin=margin,
    )
    if not export.passed:
        decision.reason = "the export failed its parity check"
        return decision
    if not tuned <= base * (1 - margin):
        decision.reason = f"tuned perplexity {tuned:.3f} does not beat the base's {base:.3f} by {margin:.1%}"
        return decision
    judged = _judge_knowledge(decision, knowledge, settings.jobs.knowledge_tolerance)
    if judged == "refused":
        return decision
    if champion_to_beat is None or judged == "champion":
        decision.promote = True
        decision.reason = f"beats the base ({tuned:.3f} vs {base:.3f} perplexity)"
        if judged is not None:
            decision.reason += (
                f"; repo knowledge {decision.candidate_knowledge:.3f} vs {decision.reference_knowledge:.3f} "
                f"({decision.reference})"
            )
        return decision
    _perplexity_against(decision, candidate, champion_to_beat, data_dir, settings)
    return decision


def _judge_knowledge(
    decision: PromoteDecision, knowledge: KnowledgeReport | None, tolerance: float
) -> Literal["refused", "champion", "base"] | None:
    """Record the knowledge figures on `decision` (candidate, reference and which column that was).
    "refused" (the reason says why): it scored below the reference by more than `tolerance`; else
    what it matched ("champion" or "base"); None: no knowledge to judge by."""
    if knowledge is None:
        return None
    ours_col, theirs_col = knowledge.gate_columns()
    if ours_col is None or theirs_col is None:
        return None
    ours, theirs = knowledge.columns[ours_col].score, knowledge.columns[theirs_col].score
    if ours is None or theirs is None:
        return None
    decision.candidate_knowledge, decision.reference_knowledge, decision.reference = ours, theirs, theirs_col
    if ours < theirs - tolerance:
        decision.reason = (
            f"knows the repo less than {theirs_col}: repo knowledge {ours:.3f} vs {theirs:.3f} "
            "(locate and explain, as served)"
        )
        return "refused"
    return "champion" if theirs_col.startswith(CHAMPION) else "base"


def _perplexity_against(
    decision: PromoteDecision, candidate: Any, champion: Any, data_dir: Path, settings: Settings
) -> None:
    """No knowledge figures: both GGUFs' perplexity on this eval set decides."""
    tuned, base, margin = decision.tuned_perplexity, decision.base_perplexity, decision.margin
    if champion.base_model != candidate.base_model:
        decision.reason = (
            f"the champion {champion.key} has another base model ({champion.base_model}): its perplexity is "
            "not comparable; move the alias by hand (`forgeflow models alias`)"
        )
        return
    tokenizer = load_tokenizer(candidate.base_model or settings.base_model, settings.cache_dir)
    n_ctx = settings.export.n_ctx
    ours = gguf_perplexity(_gguf(candidate), data_dir, tokenizer, max_samples=SCORE_SAMPLES, n_ctx=n_ctx)
    theirs = gguf_perplexity(_gguf(champion), data_dir, tokenizer, max_samples=SCORE_SAMPLES, n_ctx=n_ctx)
    decision.candidate_gguf_perplexity, decision.champion_perplexity = ours, theirs
    if ours <= theirs * (1 - margin):
        decision.promote = True
        decision.reason = (
            f"beats the base ({tuned:.3f} vs {base:.3f}) and {champion.key} ({ours:.3f} vs {theirs:.3f})"
        )
    else:
        decision.reason = (
            f"does not beat the champion {champion.key}: {ours:.3f} vs {theirs:.3f} on this eval set"
        )


def ensure_champion(name: str, base_model: str, source_repo: str, settings: Settings) -> ModelInfo | None:
    """`name:champion` before any tuned model won: the base model answering from the project's index.

    None when the base has no GGUF to serve (a Hugging Face base): the first promoted model is the
    project's first champion then.
    """
    gguf = base_gguf(base_model)
    if gguf is None:
        return None
    with Registry.from_settings(settings) as registry:
        return registry.ensure_alias_to_base(
            name,
            CHAMPION,
            gguf,
            base_model=base_model,
            source_repo=source_repo,
            trusted=base_model in EMBEDDED,
        )


def deploy(decision: PromoteDecision, settings: Settings, *, serve: bool) -> str:
    """Make the candidate the champion: load it on the running API first when `serve`, then move the alias.

    Raises:
        ForgeflowError: the API did not load the model; the alias still names the old champion.
    """
    name, version = decision.candidate.split(":", 1)
    if not serve:
        with Registry.from_settings(settings) as registry:
            registry.set_alias(name, CHAMPION, version)
        return decision.candidate
    base = settings.api_url
    headers = {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"} if settings.api_key else {}
    for path, body in (
        (f"/models/{name}/deploy", {"version": version}),  # load it: a failure leaves the alias alone
        (f"/models/{name}/aliases", {"alias": CHAMPION, "version": version}),  # the API's caches follow
    ):
        try:
            reply = httpx.post(f"{base}{path}", json=body, headers=headers, timeout=600)
        except httpx.HTTPError as exc:
            raise ForgeflowError(f"no forgeflow API answers at {base} ({type(exc).__name__})") from None
        if reply.status_code != 200:
            raise ForgeflowError(f"the API refused {path} for {decision.candidate}: {_message(reply)}")
    log.info("%s is the champion now", decision.candidate)
    return decision.candidate


def _gguf(info: Any) -> Path:
    return Path(info.artifacts["gguf"].path)


def _message(reply: httpx.Response) -> str:
    try:
        return str(reply.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return reply.text[:200]


@task(name="promote-model", retries=0, cache_policy=NO_CACHE)
def promote_task(
    name: str,
    export_dir: str,
    data_dir: str,
    evaluation: EvalReport,
    export: ExportReport,
    settings: Settings,
    source_repo: str | None = None,
    knowledge: KnowledgeReport | None = None,
) -> PromoteDecision:
    """Prefect task: register and decide (see `promote`)."""
    decision = promote(
        name, Path(export_dir), Path(data_dir), evaluation, export, settings, source_repo, knowledge
    )
    (log.info if decision.promote else log.warning)("promote %s: %s", decision.candidate, decision.reason)
    return decision


@task(name="deploy-model", retries=2, retry_delay_seconds=[5, 15], cache_policy=NO_CACHE)
def deploy_task(decision: PromoteDecision, settings: Settings, serve: bool) -> str:
    """Prefect task: deploy the champion (HTTP to the API: retried)."""
    return deploy(decision, settings, serve=serve)


@task(name="ensure-champion", retries=2, retry_delay_seconds=[2, 5], cache_policy=NO_CACHE)
def ensure_champion_task(name: str, base_model: str, source_repo: str, settings: Settings) -> str | None:
    """Prefect task: `name:champion` exists (see `ensure_champion`); its key, or None."""
    info = ensure_champion(name, base_model, source_repo, settings)
    return info.key if info is not None else None
