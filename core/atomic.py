"""Atomic publish of files and directories: build under a temp name beside the target, then rename.

Readers never see half a file or half a directory, and a failure leaves the old content (or nothing).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temp file next to `path`; on success it replaces `path`, on error it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        binary = "b" in mode
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    """Atomically write a text file."""
    with atomic_open(path) as fh:
        fh.write(text)


def write_json(path: Path, obj: Any) -> None:
    """Atomically write pretty, key-sorted JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, rows: Iterable[Any]) -> int:
    """Atomically write one compact, key-sorted JSON object per line (UTF-8); returns the line count."""
    n = 0
    with atomic_open(path, "wb") as fh:
        for row in rows:
            fh.write(orjson.dumps(row, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE))
            n += 1
    return n


def temp_dir_beside(target: Path, tag: str = "") -> Path:
    """A new empty hidden directory next to `target` (same filesystem, so a rename publishes it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.{tag}", dir=target.parent))


def publish_dir(target: Path, fill: Callable[[Path], object]) -> None:
    """Build a directory with `fill(tmp)` in a temp sibling, then rename it to `target` (absent before).

    If another process published `target` first, theirs is kept.
    """
    tmp = temp_dir_beside(target)
    try:
        fill(tmp)
        tmp.replace(target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(target: Path, fill: Callable[[Path], object]) -> None:
    """Publish a fresh `target` built by `fill`; an older one is moved aside, and restored if `fill` fails."""
    aside = temp_dir_beside(target, "old.")
    old = aside / target.name
    try:
        if target.exists():
            target.replace(old)
        try:
            publish_dir(target, fill)
        except BaseException:
            if old.exists() and not target.exists():
                old.replace(target)
            raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
