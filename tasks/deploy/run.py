"""Promote and deploy: a new model becomes the champion only when it beats the base and the champion.

`promote` registers the export as a new version and decides; `deploy` loads the winner on the
running API (which serves it as `name:champion`) and only then moves the `champion` alias, so a
failed deploy leaves the previous champion serving and named.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE

from core.base_models import load_tokenizer
from core.errors import ForgeflowError
from core.registry import Registry
from core.reports import EvalReport, ExportReport, PromoteDecision
from core.settings import Settings
from tasks.deploy.score import gguf_perplexity

log = logging.getLogger(__name__)

CHAMPION = "champion"
SCORE_SAMPLES = 64  # eval samples both GGUFs are scored on when a champion exists


def promote(
    name: str,
    export_dir: Path,
    data_dir: Path,
    evaluation: EvalReport,
    export: ExportReport,
    settings: Settings,
    source_repo: str | None = None,
) -> PromoteDecision:
    """Register the export as a new version of `name` (trained from `source_repo`, whose index its
    answers retrieve from); decide whether it replaces the champion."""
    margin = settings.jobs.promote_margin
    tuned, base = evaluation.metrics.perplexity, evaluation.base.perplexity
    with Registry.from_settings(settings) as registry:
        # a re-run of this flow: no new version
        candidate = registry.register_export(export_dir, name=name, source_repo=source_repo)
        target = registry.alias_target(name, CHAMPION)
        champion = registry.resolve(f"{name}:{target}") if target else None
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
    if champion is None or champion.key == candidate.key:
        decision.promote = True
        decision.reason = f"beats the base ({tuned:.3f} vs {base:.3f}); no champion yet"
        return decision
    if champion.base_model != candidate.base_model:
        decision.reason = (
            f"the champion {champion.key} has another base model ({champion.base_model}): its perplexity is "
            "not comparable; move the alias by hand (`forgeflow models alias`)"
        )
        return decision
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
    return decision


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
) -> PromoteDecision:
    """Prefect task: register and decide (see `promote`)."""
    decision = promote(name, Path(export_dir), Path(data_dir), evaluation, export, settings, source_repo)
    (log.info if decision.promote else log.warning)("promote %s: %s", decision.candidate, decision.reason)
    return decision


@task(name="deploy-model", retries=2, retry_delay_seconds=[5, 15], cache_policy=NO_CACHE)
def deploy_task(decision: PromoteDecision, settings: Settings, serve: bool) -> str:
    """Prefect task: deploy the champion (HTTP to the API: retried)."""
    return deploy(decision, settings, serve=serve)
