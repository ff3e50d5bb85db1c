"""Decode speed of the portable llama.cpp build against a build for the CPU at hand (GGML_NATIVE=ON).

Usage: .venv/bin/python benchmarks/cpu_build.py --native-wheel PATH.whl [--model PATH.gguf]
       [--tokens 128] [--rounds 5] [--threads 2]
Writes benchmarks/results/cpu_build.json.

The portable build is the llama-cpp-python installed in this environment (scripts/build-llama-cpp.sh:
AVX, AVX2, FMA, F16C, BMI2, nothing newer). The native one is a llama-cpp-python wheel of the same
version built with pip's defaults (`pip wheel --no-binary :all: llama-cpp-python==X`, which is
GGML_NATIVE=ON); only its shared libraries are used, loaded through LLAMA_CPP_LIB_PATH by the same
Python code. Each round runs both builds, in alternating order, in fresh processes: a greedy
completion of `--tokens` tokens after a warm-up, decode tokens/s = (tokens - 1) / (time of the last
token - time of the first), so prompt processing and model loading are left out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.base_models import embedded_gguf  # noqa: E402

_PROBE = r"""
import json, sys, time
import llama_cpp
from llama_cpp import Llama
path, tokens, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
llm = Llama(model_path=path, n_ctx=512, n_threads=threads, n_threads_batch=threads, verbose=False)
prompt = "def fibonacci(n):\n    "
list(llm.create_completion(prompt, max_tokens=8, temperature=0, stream=True))  # warm-up
stamps = []
for _ in llm.create_completion(prompt, max_tokens=tokens, temperature=0, stream=True):
    stamps.append(time.perf_counter())
info = llama_cpp.llama_print_system_info().decode()
print(json.dumps({"tokens": len(stamps), "decode_tps": (len(stamps) - 1) / (stamps[-1] - stamps[0]),
                  "system_info": info}))
"""


def _run(model: Path, tokens: int, threads: int, lib_dir: Path | None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_CPP_LIB_PATH"}
    if lib_dir is not None:
        env["LLAMA_CPP_LIB_PATH"] = str(lib_dir)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(model), str(tokens), str(threads)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--native-wheel", type=Path, required=True, help="llama-cpp-python built natively")
    parser.add_argument("--model", type=Path, default=None, help="GGUF (default: embedded SmolLM2-135M)")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cpu_build.json")
    args = parser.parse_args()
    model = args.model or embedded_gguf("smollm2-135m")

    with tempfile.TemporaryDirectory(prefix="forgeflow-native-") as tmp:
        with zipfile.ZipFile(args.native_wheel) as wheel:
            wheel.extractall(tmp)
        native_lib = Path(tmp) / "llama_cpp" / "lib"
        portable: list[float] = []
        native: list[float] = []
        info: dict[str, str] = {}
        for i in range(args.rounds):
            order = [("portable", None), ("native", native_lib)]
            for name, lib in order if i % 2 == 0 else reversed(order):
                result = _run(model, args.tokens, args.threads, lib)
                (portable if name == "portable" else native).append(float(result["decode_tps"]))  # type: ignore[arg-type]
                info[name] = str(result["system_info"])
            print(f"round {i + 1}: portable {portable[-1]:.1f} tok/s, native {native[-1]:.1f} tok/s")

    p50_portable, p50_native = statistics.median(portable), statistics.median(native)
    report = {
        "benchmark": "cpu_build",
        "model": model.name,
        "tokens": args.tokens,
        "rounds": args.rounds,
        "threads": args.threads,
        "portable": {"decode_tps": [round(x, 2) for x in portable], "p50": round(p50_portable, 2)},
        "native": {"decode_tps": [round(x, 2) for x in native], "p50": round(p50_native, 2)},
        "ratio_p50": round(p50_portable / p50_native, 3),
        "goal": {"ratio_p50": ">= 0.95", "met": p50_portable / p50_native >= 0.95},
        "system_info": info,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "cpu": _cpu_model()},
        "command": " ".join(["benchmarks/cpu_build.py", *sys.argv[1:]]).replace(str(Path.home()), "~"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tmp_out.replace(args.out)
    print(json.dumps({k: report[k] for k in ("ratio_p50", "goal")}))
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
