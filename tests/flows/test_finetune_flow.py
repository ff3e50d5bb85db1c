"""The finetune flow through a real Prefect server: train → evaluate → export → parity → lineage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prefect.settings import PREFECT_API_URL

from core.hashing import dataset_sha256, file_sha256
from core.jobs.progress import TRAINING_PROGRESS_KEY as PROGRESS_KEY
from core.registry import Registry
from core.settings import get_settings
from flows.finetune import FinetuneParams, finetune_flow
from tests.helpers.datasets import EVAL, NAMES, conversation, write_dataset


@pytest.fixture(scope="module")
def tiny(reciting_base: Path, cache_dir: Path) -> tuple[Path, Path]:
    """The session's tiny base that recites the eval answers: clear top-1 winners for parity."""
    return reciting_base, cache_dir


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny: tuple[Path, Path]) -> Iterator[Path]:
    base, cache = tiny
    write_dataset(tmp_path / "data", {"train": [conversation(n) for n in NAMES], "eval": EVAL})
    profile = tmp_path / "tiny.yaml"
    profile.write_text(
        "# forgeflow finetune --profile tiny.yaml\nrank: 8\nalpha: 16\nlearning_rate: 5.0e-3\n"
        "lr_scheduler: constant\nwarmup_ratio: 0.0\nmax_steps: 12\nbatch_size: 2\nmax_length: 128\n"
        "save_steps: 6\n"
    )
    for key, value in {
        "FORGEFLOW_HOME": str(tmp_path / "ws"),
        "FORGEFLOW_BASE_MODEL": str(base),
        "FORGEFLOW_VALIDATION__MIN_SAMPLES": "5",
        "FORGEFLOW_EVALUATE__GENERATION_SAMPLES": "2",
        "FORGEFLOW_EVALUATE__MAX_NEW_TOKENS": "8",
        "FORGEFLOW_EXPORT__QUANTS": '["f16", "q8_0"]',
        "FORGEFLOW_EXPORT__PARITY_PROMPTS": "2",
        "FORGEFLOW_EXPORT__PARITY_TOKENS": "16",
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _progress(flow_run_id: object) -> list[dict]:
    body = {"artifacts": {"key": {"any_": [PROGRESS_KEY]}, "flow_run_id": {"any_": [str(flow_run_id)]}}}
    response = httpx.post(
        f"{PREFECT_API_URL.value()}/artifacts/filter", json={**body, "limit": 5, "offset": 0}
    )
    response.raise_for_status()
    return response.json()


def test_finetune_flow_trains_evaluates_exports_and_records_lineage(env: Path) -> None:
    params = FinetuneParams(
        data_dir=str(env / "data"), out_dir=str(env / "run"), profile=str(env / "tiny.yaml")
    )
    state = finetune_flow(params, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result.train.status == "completed" and result.train.steps == 12
    evaluation = result.evaluate  # its numbers are tested in tests/evaluate; here: it ran on this run
    assert evaluation.lineage["config_hash"] == result.train.config_hash
    assert (env / "run" / "eval.json").is_file() and evaluation.tuned.tokens > 0
    assert set(result.export.ggufs) == {"f16", "q8_0"}
    lineage = json.loads((env / "run" / "lineage.json").read_text())
    assert lineage["source_commit"] == "a" * 40
    assert lineage["dataset_hash"] == dataset_sha256(env / "data") == result.train.dataset_hash
    for quant, gguf in lineage["ggufs"].items():
        assert gguf["sha256"] == file_sha256(env / "run" / "export" / gguf["file"]), quant
    progress = _progress(state.state_details.flow_run_id)
    assert progress and progress[0]["data"] == 100.0
    assert "step 12/12" in json.dumps(progress) or "completed at step 12" in json.dumps(progress)

    # a retried run redoes nothing: training is cached by content hash, GGUFs by their sidecars
    f16 = env / "run" / "export" / lineage["ggufs"]["f16"]["file"]
    stamp = f16.stat().st_mtime_ns
    again = finetune_flow(params, return_state=True)
    assert again.is_completed(), again.message
    assert again.result().train.status == "cached"
    assert f16.stat().st_mtime_ns == stamp

    # the export is in the registry once, with its lineage; the retried run added no version
    assert result.registered.key == again.result().registered.key == "forgeflow:1.0.0"
    with Registry.from_settings(get_settings()) as registry:
        info = registry.resolve("forgeflow")
        assert registry.list(name="forgeflow").total == 1
    assert info.source_commit == "a" * 40 and info.dataset_hash == lineage["dataset_hash"]
    assert info.artifacts["gguf"].sha256 in {g["sha256"] for g in lineage["ggufs"].values()}


def test_finetune_flow_without_a_dataset_fails_clearly(env: Path) -> None:
    params = FinetuneParams(
        data_dir=str(env / "nowhere"), out_dir=str(env / "run"), profile=str(env / "tiny.yaml")
    )
    state = finetune_flow(params, return_state=True)
    assert state.is_failed()
    assert "has no train.jsonl" in state.message or "has no train.jsonl" in str(
        state.result(raise_on_failure=False)
    )
