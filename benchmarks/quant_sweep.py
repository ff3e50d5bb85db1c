"""SmolLM2-135M at Q8_0 and Q4_K_M through forgeflow's benchmark job: a concurrency sweep per quantization.

Usage: .venv/bin/python benchmarks/quant_sweep.py [--concurrency 1 2 4 8] [--requests 16]
       [--max-tokens 64] [--scenarios short-qa code-explain] [--parallel 4] [--threads 2]
       [--out benchmarks/results/quant_sweep.json]

What it does, with the same code paths as `forgeflow bench`:
- converts the embedded SmolLM2-135M-Instruct to an f16 GGUF, quantizes it to Q8_0 and Q4_K_M, and
  registers both in a throwaway workspace;
- serves them with forgeflow's API (llama-server backend, `--parallel` slots, `--threads` threads);
- runs the `default` suite's scenarios named by --scenarios at every --concurrency level, --requests
  measured requests each (after the suite's warm-up), max_tokens fixed and EOS ignored, so every
  request generates exactly --max-tokens tokens (from the server's `usage`).

The JSON keeps, per model, scenario and concurrency: aggregate output tokens/s over the level's wall
time, TTFT / TPOT / ITL / e2e percentiles (over per-request values), CPU and RAM of the serving tree,
and llama.cpp's own decode speed next to the client's. Run it on a quiet machine: on 2 shared cores,
anything else running moves every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.base_models import materialize  # noqa: E402
from core.bench.params import BenchParams  # noqa: E402
from core.config import ServeConfig  # noqa: E402
from core.registry import Registry  # noqa: E402
from core.settings import Settings  # noqa: E402
from tasks.benchmark.run import benchmark  # noqa: E402
from tasks.export.convert import convert_to_gguf, quantize_gguf  # noqa: E402
from tests.helpers.api_server import free_port, running_api  # noqa: E402

QUANTS = ("q8_0", "q4_k_m")


def _level(r: Any) -> dict[str, Any]:
    def d(dist: Any) -> dict[str, float | None]:
        return {k: getattr(dist, k) for k in ("mean", "p50", "p90", "p95", "p99")}

    cc = r.cross_check
    counts = ("model", "scenario", "concurrency", "requests", "completed", "errors", "timeouts")
    return {
        **r.model_dump(include=set(counts)),
        "wall_s": round(r.wall_s, 3),
        "output_tokens_per_s": round(r.output_throughput, 2),
        "requests_per_s": round(r.request_throughput, 3),
        "output_tokens_min": r.output_tokens.min,
        "ttft_ms": d(r.ttft_ms),
        "tpot_ms": d(r.tpot_ms),
        "itl_ms": d(r.itl_ms),
        "e2e_ms": d(r.e2e_ms),
        "cpu_avg_pct": r.cpu_avg,
        "ram_avg_mb": r.ram_avg_mb,
        "server_decode_tps_diff_pct": cc.decode_tps_diff_pct if cc else None,
        "partial": r.partial,
        "notes": r.notes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--scenarios", nargs="+", default=["short-qa", "code-explain"])
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/quant_sweep.json"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="forgeflow-quant-sweep-") as tmp_str:
        tmp = Path(tmp_str)
        started = time.perf_counter()
        hf = materialize("smollm2-135m", tmp / "cache")
        f16 = tmp / "smollm2-f16.gguf"
        convert_to_gguf(hf, f16, name="smollm2")
        port = free_port()
        serve = ServeConfig(
            port=port,
            n_ctx=2048,
            parallel=args.parallel,
            n_threads=args.threads,
            max_loaded_models=2,
            start_timeout_s=120,
        )
        settings = Settings(home=tmp / "ws", allowed_roots=[tmp], serve=serve)
        names = []
        with Registry.from_settings(settings) as registry:
            for quant in QUANTS:
                path = tmp / f"smollm2-{quant}.gguf"
                quantize_gguf(f16, path, quant)
                name = f"smollm2-{quant.replace('_', '-')}"
                registry.register(path, name=name)
                names.append(name)
        prepared_s = time.perf_counter() - started
        params = BenchParams(
            models=names,
            suite="default",
            scenarios=args.scenarios,
            concurrency=args.concurrency,
            requests=args.requests,
            max_tokens=args.max_tokens,
        )
        with running_api(settings, port=port):
            report = benchmark(params, settings, str(uuid.uuid4()))

    levels = [_level(r) for r in report.results]
    by_model: dict[str, dict[str, dict[int, float]]] = {}
    for lv in levels:
        by_model.setdefault(lv["model"], {}).setdefault(lv["scenario"], {})[lv["concurrency"]] = lv[
            "output_tokens_per_s"
        ]
    out = {
        "command": "python benchmarks/quant_sweep.py " + " ".join(sys.argv[1:]),
        "status": report.status,
        "prepare_s": round(prepared_s, 1),
        "settings": {
            "concurrency": args.concurrency,
            "requests": args.requests,
            "max_tokens": args.max_tokens,
            "scenarios": args.scenarios,
            "parallel": args.parallel,
            "threads": args.threads,
        },
        "machine": report.info,
        "cold_start": {m: c.model_dump() for m, c in report.cold.items()} if report.cold else {},
        "tokens_per_s": by_model,
        "levels": levels,
        "notes": report.notes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(out, indent=2, default=str) + "\n")
    tmp_out.replace(args.out)
    for model, scenarios in by_model.items():
        for scenario, tps in scenarios.items():
            row = "  ".join(f"c{c}={v:.1f}" for c, v in sorted(tps.items()))
            print(f"{model:16} {scenario:14} tokens/s {row}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
