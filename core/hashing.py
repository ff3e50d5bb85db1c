"""Content hashes for lineage and caches: one function per concept, used by every stage.

Lineage hashes content, never paths: the same bytes give the same hash wherever they lie.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

DATASET_SPLITS = ("train.jsonl", "eval.jsonl")
_BLOCK = 1 << 20


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's content, read in 1 MiB blocks."""
    h = hashlib.sha256()
    _feed(h, path)
    return h.hexdigest()


def dir_sha256(root: Path, files: Iterable[Path] | None = None) -> str:
    """Hash of a directory: the relative path and sha256 of each file, in path order.

    Args:
        root: the directory.
        files: the files under `root` that count; by default every file not hidden at any depth.
    """
    chosen = files if files is not None else _visible_files(root)
    h = hashlib.sha256()
    for file in sorted(chosen, key=lambda p: p.relative_to(root).as_posix()):
        h.update(f"{file.relative_to(root).as_posix()}\0{file_sha256(file)}\n".encode())
    return h.hexdigest()


def dataset_sha256(dataset_dir: Path) -> str:
    """The dataset hash of lineage: sha256 over train.jsonl's bytes, then eval.jsonl's (those present).

    Extraction records it, training keys its cache and resume check on it, and it travels through
    train.json, lineage.json and the registry unchanged.
    """
    h = hashlib.sha256()
    for name in DATASET_SPLITS:
        if (dataset_dir / name).is_file():
            _feed(h, dataset_dir / name)
    return h.hexdigest()


def config_sha256(config: Any) -> str:
    """Short hash (16 hex) of a JSON-able configuration, independent of key order."""
    return hashlib.sha256(orjson.dumps(config, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _visible_files(root: Path) -> list[Path]:
    return [
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]


def _feed(h: Any, path: Path) -> None:
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            h.update(block)
