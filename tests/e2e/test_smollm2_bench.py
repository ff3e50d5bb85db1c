"""SmolLM2-135M at Q8_0 and Q4_K_M, benchmarked through forgeflow's API on real llama.cpp: batching at
concurrency 4 must give more aggregate tokens/s than one request at a time, for both quantizations."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from core.base_models import materialize
from core.bench.params import BenchParams
from core.config import ServeConfig
from core.registry import Registry
from core.settings import Settings
from tasks.benchmark.run import benchmark
from tasks.export.convert import convert_to_gguf, quantize_gguf
from tests.helpers.api_server import free_port, running_api


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_concurrency_sweep_shows_batching_for_q8_0_and_q4_k_m(tmp_path: Path) -> None:
    hf = materialize("smollm2-135m", tmp_path / "cache")
    f16 = tmp_path / "smollm2-f16.gguf"
    convert_to_gguf(hf, f16, name="smollm2")
    port = free_port()
    serve = ServeConfig(port=port, n_ctx=1024, parallel=4, max_loaded_models=2, start_timeout_s=120)
    settings = Settings(home=tmp_path / "ws", allowed_roots=[tmp_path], serve=serve)
    with Registry.from_settings(settings) as registry:
        for quant in ("q8_0", "q4_k_m"):
            path = tmp_path / f"smollm2-{quant}.gguf"
            quantize_gguf(f16, path, quant)
            registry.register(path, name=f"smollm2-{quant.replace('_', '-')}")
    with running_api(settings, port=port):
        report = benchmark(
            BenchParams(
                models=["smollm2-q8-0", "smollm2-q4-k-m"],
                scenarios=["short-qa"],
                concurrency=[1, 4],
                requests=8,
                max_tokens=32,
                warmup=1,
            ),
            settings,
            str(uuid.uuid4()),
        )
    assert report.status == "completed", report.notes
    for model in report.models:
        levels = {r.concurrency: r for r in report.results if r.model == model}
        assert levels[1].completed == levels[4].completed == 8
        assert levels[4].output_throughput > levels[1].output_throughput, (model, levels)
        assert levels[1].output_tokens.min == 32  # ignore_eos: every request generated max_tokens
    assert {i["quantization"] for i in report.info["models"].values()} == {"Q8_0", "Q4_K_M"}
