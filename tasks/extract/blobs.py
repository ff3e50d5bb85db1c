"""Reading many git blobs through one long-lived `git cat-file --batch` process."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO


class BlobReader:
    """Context manager yielding blob contents by SHA, in request order."""

    def __init__(self, repo: Path) -> None:
        self._proc = subprocess.Popen(
            ["git", "-C", str(repo), "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def read_many(self, shas: Iterable[str], window: int = 64) -> Iterator[bytes]:
        """Contents of the blobs, pipelined `window` requests ahead so git never waits on us."""
        stdin, stdout = self._proc.stdin, self._proc.stdout
        assert stdin is not None and stdout is not None
        pending: list[str] = []
        for sha in shas:
            stdin.write(sha.encode() + b"\n")
            pending.append(sha)
            if len(pending) >= window:
                stdin.flush()
                yield _read_one(stdout)
                pending.pop(0)
        stdin.flush()
        for _ in pending:
            yield _read_one(stdout)

    def close(self) -> None:
        if self._proc.stdin:
            self._proc.stdin.close()
        self._proc.wait(timeout=30)


def _read_one(stdout: IO[bytes]) -> bytes:
    header = stdout.readline().split()
    if len(header) < 3 or header[1] == b"missing":
        raise FileNotFoundError(f"git object {header[0].decode(errors='replace') if header else '?'} missing")
    size = int(header[2])
    data = stdout.read(size)
    stdout.read(1)  # trailing newline
    return data
