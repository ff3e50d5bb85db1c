"""The content-addressed artifact store: `<sha256>.gguf` files and `<sha256>/` model directories.

A copy is staged under a temp name (hashed while it is copied), then renamed into place, so readers
never see half an artifact and equal content is kept once. The registry publishes and removes
entries only inside its write transaction, which serialises them across processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.hashing import dir_sha256, file_sha256
from core.registry.sources import PICKLE_SUFFIXES

_BLOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class Staged:
    """A copy waiting to be published: its temp path, content hash and size in bytes."""

    tmp: Path
    sha256: str
    size: int
    is_dir: bool

    @property
    def entry(self) -> str:
        """Its name in the store once published."""
        return self.sha256 if self.is_dir else f"{self.sha256}.gguf"


def model_files(model_dir: Path) -> list[Path]:
    """The files of a model directory that are kept: not hidden, not pickled weights; sorted."""
    return sorted(
        p
        for p in model_dir.rglob("*")
        if p.is_file()
        and p.suffix not in PICKLE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(model_dir).parts)
    )


def describe_in_place(path: Path) -> dict[str, Any]:
    """The artifact record of a file or model directory that stays where it is: path, sha256, size."""
    if path.is_dir():
        size = sum(p.stat().st_size for p in model_files(path))
        return {"path": str(path), "sha256": dir_sha256(path, model_files(path)), "size": size}
    return {"path": str(path), "sha256": file_sha256(path), "size": path.stat().st_size}


class ModelStore:
    """Artifacts under `root`, named by content."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, entry: str) -> Path:
        return self.root / entry

    def stage(self, source: Path) -> Staged:
        """Copy a GGUF file or a model directory to a temp name in the store, hashing it on the way."""
        self.root.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            tmp = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
            try:
                size = 0
                for file in model_files(source):
                    target = tmp / file.relative_to(source)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(file, target)
                    size += target.stat().st_size
                return Staged(tmp, dir_sha256(tmp, model_files(tmp)), size, is_dir=True)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        fd, name = tempfile.mkstemp(prefix=".staging-", suffix=".gguf", dir=self.root)
        try:
            h, size = hashlib.sha256(), 0
            with source.open("rb") as src, os.fdopen(fd, "wb") as dst:
                for block in iter(lambda: src.read(_BLOCK), b""):
                    h.update(block)
                    dst.write(block)
                    size += len(block)
                dst.flush()
                os.fsync(dst.fileno())
            return Staged(Path(name), h.hexdigest(), size, is_dir=False)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
            raise

    def publish(self, staged: Staged) -> bool:
        """Move a staged copy to its content name; True if it is new, False if equal content was there."""
        target = self.path(staged.entry)
        if target.exists():
            self.discard(staged)
            return False
        staged.tmp.replace(target)
        return True

    def discard(self, staged: Staged) -> None:
        """Drop a staged copy that will not be published."""
        self.purge(staged.tmp)

    def remove(self, entry: str) -> None:
        """Delete a published entry (no error if it is already gone)."""
        self.purge(self.path(entry))

    def set_aside(self, entry: str) -> Path | None:
        """Move an entry to a hidden name, to be deleted (`purge`) or put back (`restore`); None if absent."""
        target = self.path(entry)
        if not target.exists():
            return None
        aside = self.root / f".removing-{entry}"
        target.replace(aside)
        return aside

    def restore(self, aside: Path, entry: str) -> None:
        aside.replace(self.path(entry))

    @staticmethod
    def purge(path: Path) -> None:
        """Delete a file or directory (set aside, or staged); no error if it is gone."""
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
