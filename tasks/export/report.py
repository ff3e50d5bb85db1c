"""What an export produced, for machines (export.json) and people (export.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from core.config import DEFAULT_AGREEMENT, ExportConfig
from core.trained import TrainedRun
from tasks.export.parity import Parity

REPORT_JSON = "export.json"
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
    thresholds: dict[str, float] = {str(q): v for q, v in (DEFAULT_AGREEMENT | cfg.min_agreement).items()}
    entries = {}
    for quant, gguf in ggufs.items():
        result, threshold = results[quant], thresholds[quant]
        entries[quant] = gguf | {
            "parity": {
                "agreement": round(result.agreement, 4),
                "matches": result.matches,
                "positions": result.positions,
                "prompts": result.prompts,
                "min_agreement": threshold,
                "passed": result.agreement >= threshold,
            }
        }
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


def render_report_markdown(manifest: dict[str, Any]) -> str:
    """export.md: the verdict, where the model came from, and one row per GGUF."""
    source = manifest["source"]
    rows = []
    for gguf in manifest["ggufs"].values():
        p = gguf["parity"]
        check = f"{p['agreement']:.1%} | {p['min_agreement']:.0%} | {'pass' if p['passed'] else '**FAIL**'}"
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
            "at most) by the HF model, then the share of positions where the GGUF's top token "
            "(teacher-forced) is the same.",
            "",
            "| file | size | sha256 | agreement | needed | result |",
            "| --- | ---: | --- | ---: | ---: | --- |",
            *rows,
            "",
        ]
    )


def parity_failure_message(manifest: dict[str, Any]) -> str:
    """One line naming each GGUF below its parity threshold, and what to do about it."""
    failed = [(g["file"], g["parity"]) for g in manifest["ggufs"].values() if not g["parity"]["passed"]]
    parts = [
        f"{file} agrees on {p['agreement']:.1%} of top tokens (needs {p['min_agreement']:.0%})"
        for file, p in failed
    ]
    return (
        f"export failed parity: {'; '.join(parts)}; the GGUF does not behave like the model it came "
        f"from (see {REPORT_MD}): drop that quant from export.quants, or lower export.min_agreement knowingly"
    )
