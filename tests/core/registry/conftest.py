"""Registry fixtures: a registry confined to the test's temp dir, and real GGUFs placed inside it."""

from __future__ import annotations

import shutil
import sqlite3
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.registry import Registry
from core.settings import Settings


@pytest.fixture
def registry(settings: Settings) -> Iterator[Registry]:
    reg = Registry.from_settings(settings)
    yield reg
    reg.close()


@pytest.fixture
def make_gguf(tiny_gguf: Path, tmp_path: Path) -> Callable[..., Path]:
    """Factory: the tiny GGUF copied under tmp_path (an allowed root), optionally with another general.name.

    A different name of the same length changes the file's bytes (and sha256), not its validity.
    """

    def make(filename: str = "tiny.gguf", general_name: str | None = None) -> Path:
        target = tmp_path / "models-in" / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tiny_gguf, target)
        if general_name is not None:
            data = bytearray(target.read_bytes())
            key = b"general.name"
            at = data.index(struct.pack("<Q", len(key)) + key) + 8 + len(key)
            vtype, length = struct.unpack_from("<IQ", data, at)
            assert vtype == 8 and length == len(general_name), "the new name must keep the length"
            data[at + 12 : at + 12 + length] = general_name.encode()
            target.write_bytes(bytes(data))
        return target

    return make


@pytest.fixture
def snapshot(settings: Settings) -> Callable[[], tuple[str, list[str]]]:
    """The registry database's rows and the store's file names: equal before and after a refused change."""

    def take() -> tuple[str, list[str]]:
        with sqlite3.connect(settings.home / "registry.db") as conn:
            dump = "\n".join(conn.iterdump())
        store = settings.home / "models"
        files = sorted(str(p.relative_to(store)) for p in store.rglob("*")) if store.exists() else []
        return dump, files

    return take
