"""Calibrate the export's parity gate: KL, perplexity change and top-1 agreement of real exports.

Usage: .venv/bin/python benchmarks/parity_calibration.py --case NAME EXPORT_DIR DATASET_DIR [--case ...]
       [--prompts 8] [--tokens 32] [--batches 2] [--start-batch 0] [--corrupt f16 q8_0]
       [--work /tmp/parity-cal/work] [--out benchmarks/results/parity_calibration.json] [--append]
Writes benchmarks/results/parity_calibration.json (--append: adds these cases and batches to it).

Each EXPORT_DIR is what `forgeflow export` wrote (merged/ and model-<quant>.gguf); DATASET_DIR holds
the eval split the parity prompts come from. Per case and per batch of --prompts eval prompts (batch
i takes prompts i*n .. i*n+n-1, the export itself uses batch 0), the merged HF model's references
are built once, as the export builds them, then every GGUF is measured with the export's own code
(tasks.export.parity), and so are broken copies of the --corrupt quants:

- swap:<a>=<b>: the data of two tensors of the same shape and type exchanged (byte surgery at the
  offsets core.gguf reads), from subtle (the same role in adjacent layers) to gross;
- template: the chat template in the metadata changed at equal length ("assistant" -> "ASSISTANT").
  Both models read the same token ids, so its figures must equal the intact file's: the template is
  checked on the metadata when the GGUF is built, not by parity.

The thresholds in core/config.py (export.max_kl, export.max_ppl_change) are chosen from this table:
above the worst intact export with a margin, below the mildest corruption.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.gguf import inspect_gguf  # noqa: E402
from tasks.export import parity as par  # noqa: E402
from tasks.export.report import gguf_name  # noqa: E402

QUANTS = ("f16", "q8_0", "q4_k_m")


def swaps(n_layers: int) -> list[tuple[str, str]]:
    """Pairs of tensors to exchange, mildest first; layers picked relative to the model's depth."""
    mid, last = n_layers // 2, n_layers - 1
    return [
        (f"blk.{mid}.attn_k.weight", f"blk.{mid + 1}.attn_k.weight"),  # same role, neighbouring layers
        (f"blk.{mid}.attn_q.weight", f"blk.{mid + 1}.attn_q.weight"),
        (f"blk.{last - 1}.ffn_down.weight", f"blk.{last}.ffn_down.weight"),
        (f"blk.{mid}.ffn_gate.weight", f"blk.{mid}.ffn_up.weight"),  # two roles in one layer
        (f"blk.{mid}.attn_q.weight", f"blk.{mid}.attn_output.weight"),
        (f"blk.{mid}.attn_norm.weight", f"blk.{mid}.ffn_norm.weight"),
        ("blk.0.attn_v.weight", "blk.1.attn_v.weight"),
    ]


def swap_tensors(src: Path, dst: Path, a: str, b: str) -> bool:
    """Copy `src` to `dst` with the data of tensors `a` and `b` exchanged; False when they cannot be."""
    summary = inspect_gguf(src)
    infos = {t.name: t for t in summary.tensors}
    ta, tb = infos.get(a), infos.get(b)
    if ta is None or tb is None or (ta.shape, ta.type, ta.nbytes) != (tb.shape, tb.type, tb.nbytes):
        return False
    shutil.copyfile(src, dst)
    with dst.open("r+b") as fh:
        chunks = []
        for t in (ta, tb):
            fh.seek(summary.data_offset + t.offset)
            chunks.append(fh.read(t.nbytes))
        for t, chunk in zip((ta, tb), reversed(chunks), strict=True):
            fh.seek(summary.data_offset + t.offset)
            fh.write(chunk)
    return True


def change_template(src: Path, dst: Path) -> bool:
    """Copy `src` to `dst` with "assistant" upper-cased in its chat template (same length: offsets hold)."""
    template = inspect_gguf(src).metadata.get("tokenizer.chat_template")
    if not isinstance(template, str) or "assistant" not in template:
        return False
    old = template.encode()
    new = template.replace("assistant", "ASSISTANT").encode()
    data = bytearray(src.read_bytes()[: inspect_gguf(src).data_offset])
    at = data.find(old)
    if at < 0:
        return False
    shutil.copyfile(src, dst)
    with dst.open("r+b") as fh:
        fh.seek(at)
        fh.write(new)
    return inspect_gguf(dst).metadata.get("tokenizer.chat_template") != template


def figures(result: par.Parity, seconds: float) -> dict[str, Any]:
    return {
        "kl": result.kl,
        "kl_max": result.kl_max,
        "ppl_hf": result.ppl_hf,
        "ppl_gguf": result.ppl_gguf,
        "ppl_change": result.ppl_change,
        "agreement": result.agreement,
        "positions": result.positions,
        "prompts": result.prompts,
        "nonfinite": result.nonfinite,
        "seconds": round(seconds, 1),
    }


def measure(gguf: Path, refs: list[par.Reference]) -> dict[str, Any]:
    start = time.perf_counter()
    result = par.gguf_parity(gguf, refs)
    return figures(result, time.perf_counter() - start)


def run_case(name: str, export_dir: Path, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = export_dir / "merged" if (export_dir / "merged").is_dir() else export_dir
    tokenizer = AutoTokenizer.from_pretrained(str(merged))
    model = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32).eval()
    n_layers = int(model.config.num_hidden_layers)
    conversations = par.parity_conversations(data, args.prompts * (args.start_batch + args.batches))
    encoded = par.fit_prompts(par.encode_prompts(tokenizer, conversations), args.tokens, args.n_ctx)
    work = args.work / name
    work.mkdir(parents=True, exist_ok=True)
    case: dict[str, Any] = {"export": str(export_dir), "data": str(data), "layers": n_layers, "batches": []}
    for i in range(args.start_batch, args.start_batch + args.batches):
        prompts = encoded[i * args.prompts : (i + 1) * args.prompts]
        if not prompts:
            break
        refs = par.hf_references(model, prompts, args.tokens)
        batch: dict[str, Any] = {"batch": i, "intact": {}, "corrupted": {}}
        for quant in QUANTS:
            gguf = export_dir / gguf_name(quant)
            if gguf.is_file():
                batch["intact"][quant] = row = measure(gguf, refs)
                _print(name, i, quant, "intact", row)
        for quant in args.corrupt if i == 0 else ():  # corruptions: on the export's own prompts only
            src = export_dir / gguf_name(quant)
            if not src.is_file():
                continue
            broken = work / f"broken-{quant}.gguf"
            variants: list[tuple[str, Any]] = [(f"swap:{a}={b}", (a, b)) for a, b in swaps(n_layers)]
            variants.append(("template", None))
            for label, pair in variants:
                made = swap_tensors(src, broken, *pair) if pair else change_template(src, broken)
                if not made:
                    print(f"{name}: {quant} {label}: not applicable, skipped", flush=True)
                    continue
                batch["corrupted"].setdefault(quant, {})[label] = row = measure(broken, refs)
                _print(name, i, quant, label, row)
                broken.unlink()
        case["batches"].append(batch)
    shutil.rmtree(work, ignore_errors=True)
    return case


def _print(case: str, batch: int, quant: str, label: str, row: dict[str, Any]) -> None:
    print(
        f"{case:>12} b{batch} {quant:>6} {label:<48} KL {row['kl']:.6f} (max {row['kl_max']:.4f})  "
        f"ppl {row['ppl_gguf']:.4f}/{row['ppl_hf']:.4f} change {row['ppl_change']:.4%}  "
        f"top-1 {row['agreement']:.1%} of {row['positions']}",
        flush=True,
    )


def summary(cases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per quant: the worst intact figures over every case and batch, the mildest corrupted ones."""
    out: dict[str, Any] = {}
    for quant in QUANTS:
        intact = [b["intact"][quant] for c in cases.values() for b in c["batches"] if quant in b["intact"]]
        swapped = [
            row
            for c in cases.values()
            for b in c["batches"]
            for label, row in b["corrupted"].get(quant, {}).items()
            if label.startswith("swap:")
        ]
        entry: dict[str, Any] = {}
        if intact:
            entry["intact_worst"] = _extreme(intact, worst=True)
        if swapped:
            entry["swapped_mildest"] = _extreme(swapped, worst=False)
        if entry:
            out[quant] = entry
    return out


def _extreme(rows: list[dict[str, Any]], *, worst: bool) -> dict[str, Any]:
    """The worst figures of intact exports (highest KL and perplexity change, lowest agreement), or
    the mildest of corrupted ones (the opposite)."""
    high, low = (max, min) if worst else (min, max)
    return {
        "kl": high(r["kl"] for r in rows),
        "ppl_change": high(r["ppl_change"] for r in rows),
        "agreement": low(r["agreement"] for r in rows),
        "measurements": len(rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--case", nargs=3, action="append", required=True, metavar=("NAME", "EXPORT_DIR", "DATASET_DIR")
    )
    parser.add_argument("--prompts", type=int, default=8, help="prompts per batch (export.parity_prompts)")
    parser.add_argument(
        "--tokens", type=int, default=32, help="greedy tokens per prompt (export.parity_tokens)"
    )
    parser.add_argument("--batches", type=int, default=2, help="disjoint batches of eval prompts per case")
    parser.add_argument("--start-batch", type=int, default=0, help="first batch; corruptions run on batch 0")
    parser.add_argument("--append", action="store_true", help="add to --out instead of replacing it")
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--corrupt", nargs="*", default=["f16", "q8_0"], choices=QUANTS)
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/parity-cal/work"), help="broken copies go here"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "parity_calibration.json"
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    started = time.perf_counter()
    previous = json.loads(args.out.read_text(encoding="utf-8")) if args.append and args.out.is_file() else {}
    cases: dict[str, Any] = previous.get("cases", {})
    for name, export_dir, data in args.case:
        case = run_case(name, Path(export_dir), Path(data), args)
        if name in cases:  # the same case again: its batches are added, those measured again replaced
            new = {b["batch"] for b in case["batches"]}
            kept = [b for b in cases[name]["batches"] if b["batch"] not in new]
            case["batches"] = sorted(kept + case["batches"], key=lambda b: b["batch"])
        cases[name] = case
    command = " ".join(["benchmarks/parity_calibration.py", *sys.argv[1:]])
    document = {
        "commands": [
            *previous.get("commands", [previous["command"]] if "command" in previous else []),
            command,
        ],
        "setup": {"prompts": args.prompts, "tokens": args.tokens},
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "seconds": round(previous.get("seconds", 0) + time.perf_counter() - started, 1),
        "summary": summary(cases),
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(document["summary"], indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
