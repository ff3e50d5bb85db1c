"""What an export produced, for machines (export.json) and people (export.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from core.config import DEFAULT_MAX_KL, DEFAULT_MAX_PPL_CHANGE, ExportConfig
from core.reports import ExportReport
from core.trained import TrainedRun
from tasks.export.parity import Parity

REPORT_JSON = ExportReport.FILE
REPORT_MD = "export.md"


def gguf_name(quant: str) -> str:
    return f"model-{quant}.gguf"


def build_manifest(
    source: dict[str, Any],
    run: TrainedRun | None,
    ggufs: dict[str, dict[str, Any]],
    results: dict[str, Parity],
    cfg: ExportConfig,
    tools: dict[str, str],
    prompts_from: str,
) -> dict[str, Any]:
    """The export.json document: lineage, each GGUF's hash, size and parity, and the verdict.

    Args:
        source: `dir` and `weights_sha256` of the exported model.
        prompts_from: where the parity prompts came from ("eval split" or "built-in").
    """
    train = run.manifest if run else {}
    max_kl: dict[str, float] = {str(q): v for q, v in (DEFAULT_MAX_KL | cfg.max_kl).items()}
    max_ppl: dict[str, float] = {str(q): v for q, v in (DEFAULT_MAX_PPL_CHANGE | cfg.max_ppl_change).items()}
    entries = {}
    for quant, gguf in ggufs.items():
        entries[quant] = gguf | {"parity": parity_entry(results[quant], max_kl[quant], max_ppl[quant])}
    lineage = {
        "kind": "finetune" if run else "model",
        "base_model": run.base_model if run else source["dir"],
        "method": run.method if run else None,
        "config_hash": train.get("config_hash"),
        "dataset_hash": train.get("dataset_hash"),
        "source_commit": train.get("source_commit"),
    }
    return {
        "passed": all(g["parity"]["passed"] for g in entries.values()),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source | lineage,
        "tools": tools,
        "ggufs": entries,
        "parity_setup": {"prompts_from": prompts_from, "new_tokens": cfg.parity_tokens},
    }


def parity_entry(result: Parity, max_kl: float, max_ppl_change: float) -> dict[str, Any]:
    """One GGUF's parity block of export.json: the figures, its thresholds and the verdict."""
    return {
        "kl": _sig(result.kl),
        "kl_max": _sig(result.kl_max),
        "max_kl": max_kl,
        "ppl_hf": _sig(result.ppl_hf),
        "ppl_gguf": _sig(result.ppl_gguf),
        "ppl_change": _sig(result.ppl_change),
        "max_ppl_change": max_ppl_change,
        "agreement": round(result.agreement, 4),
        "matches": result.matches,
        "positions": result.positions,
        "prompts": result.prompts,
        "nonfinite": result.nonfinite,
        # judged on the exact figures, not on the rounded ones written beside them
        "passed": result.nonfinite == 0 and result.kl <= max_kl and result.ppl_change <= max_ppl_change,
    }


def _sig(x: float) -> float:
    return float(f"{x:.4g}")  # 4 significant digits: a KL of 3e-05 is not rounded to 0


def render_report_markdown(manifest: dict[str, Any]) -> str:
    """export.md: the verdict, where the model came from, and one row per GGUF."""
    source = manifest["source"]
    rows = []
    for gguf in manifest["ggufs"].values():
        p = gguf["parity"]
        check = (
            f"{p['kl']:.4g} | {p['max_kl']:g} | {p['ppl_change']:.2%} | {p['max_ppl_change']:.0%} | "
            f"{p['agreement']:.1%} | {'pass' if p['passed'] else '**FAIL**'}"
        )
        size = f"{gguf['bytes'] / 2**20:.1f} MiB"
        rows.append(f"| `{gguf['file']}` | {size} | `{gguf['sha256'][:16]}` | {check} |")
    origin = (
        f"finetune run `{source['dir']}` ({source['method']} on `{source['base_model']}`, "
        f"config {source['config_hash']}, source commit {source['source_commit'] or 'unknown'})"
        if source["kind"] == "finetune"
        else f"model directory `{source['dir']}`"
    )
    setup = manifest["parity_setup"]
    return "\n".join(
        [
            f"# Export: {'passed' if manifest['passed'] else 'FAILED'}",
            "",
            f"From {origin}; weights sha256 `{source['weights_sha256'][:16]}`, "
            f"exported {manifest['created_at']}.",
            "",
            f"Parity: greedy continuations of {setup['prompts_from']} prompts ({setup['new_tokens']} tokens "
            "at most) by the HF model, read teacher-forced by both models; at every continuation position, "
            "the KL divergence KL(HF || GGUF) of their next-token distributions (mean, nats), and the "
            "relative change of perplexity on the continuation tokens. Top-1 agreement is reported, "
            "not gated.",
            "",
            "| file | size | sha256 | mean KL | KL limit | ppl change | change limit | top-1 | result |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
            *rows,
            "",
        ]
    )


def parity_failure_message(manifest: dict[str, Any]) -> str:
    """One line naming each GGUF past a parity threshold, the figure and the threshold, and what to do."""
    parts = []
    for gguf in manifest["ggufs"].values():
        p, why = gguf["parity"], []
        if p["passed"]:
            continue
        if p["nonfinite"]:
            why.append(f"non-finite logits at {p['nonfinite']} of {p['positions']} positions")
        if p["kl"] > p["max_kl"]:
            why.append(f"mean KL {p['kl']:.4g} nats (max {p['max_kl']:g})")
        if p["ppl_change"] > p["max_ppl_change"]:
            why.append(f"perplexity change {p['ppl_change']:.2%} (max {p['max_ppl_change']:.0%})")
        parts.append(f"{gguf['file']} has {', '.join(why or ['failed parity'])}")
    return (
        f"export failed parity: {'; '.join(parts)}; the GGUF does not behave like the model it came "
        f"from (see {REPORT_MD}): drop that quant from export.quants, or raise export.max_kl / "
        "export.max_ppl_change knowingly"
    )
