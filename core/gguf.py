"""The one GGUF reader: header validation, metadata, the chat template, and a real llama.cpp load.

The structural check is pure Python and reads only the header (metadata and tensor infos): it
proves that every tensor lies, aligned, inside the file, so a truncated or patched file is refused
with a message naming the first thing that is wrong, before anything serves it.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import InputError

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32  # the spec's default when general.alignment is absent
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME_BYTES = 63  # GGML_MAX_NAME is 64, with the terminating NUL
_HEADER = struct.Struct("<4sIQQ")
# Smallest possible encodings, used to refuse absurd counts before looping over them:
# a KV is a key (u64 length + 1 byte), a type (u32) and a value (>= 1 byte); a tensor info is a
# name (u64 length + 1 byte), n_dims (u32), one dim (u64), a type (u32) and an offset (u64).
_MIN_KV_BYTES = 8 + 1 + 4 + 1
_MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8

# GGUF metadata value types (the spec's gguf_metadata_value_type) -> struct format of a scalar
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B"}
_SCALARS |= {10: "<Q", 11: "<q", 12: "<d"}
_BOOL, _STRING, _ARRAY = 7, 8, 9
_STRUCTS = {t: struct.Struct(f) for t, f in _SCALARS.items()}
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")

Scalar = int | float | bool | str


class CorruptGGUF(InputError, status=422, code="CORRUPT_GGUF"):
    """A file that is not a valid GGUF, or one llama.cpp refuses to load."""


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: dims[0] is the contiguous one
    type: int  # ggml_type
    offset: int  # from the start of the data section
    nbytes: int


@dataclass(frozen=True, slots=True)
class GGUFSummary:
    version: int
    tensor_count: int
    metadata: dict[str, Scalar]  # scalar values only; arrays are in array_lengths
    array_lengths: dict[str, int]
    file_size: int
    data_offset: int  # where the tensor data section starts
    tensors: tuple[TensorInfo, ...]
    tokens: dict[int, str] = field(default_factory=dict)  # text of the vocabulary ids asked for


@dataclass(frozen=True, slots=True)
class GGUFChat:
    """The chat template a GGUF carries, with the text of its BOS and EOS tokens."""

    template: str
    bos_token: str
    eos_token: str


def inspect_gguf(path: Path, tokens: Iterable[int] = ()) -> GGUFSummary:
    """Parse and check a GGUF's header without reading tensor data.

    Args:
        path: the file.
        tokens: vocabulary ids whose text to keep in `GGUFSummary.tokens` (the list itself is not kept).

    Raises:
        InputError: the file does not exist.
        CorruptGGUF: the header is malformed or a tensor lies outside the file or misaligned.
    """
    if not path.is_file():
        raise InputError(f"{path.name} not found: export the model first")
    size = path.stat().st_size
    if size < _HEADER.size:
        raise CorruptGGUF(f"{path.name} is not a valid GGUF: {size} bytes is too small for a GGUF header")
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        return _Parser(buf, size, path.name, frozenset(tokens)).parse()


def chat_template(path: Path) -> GGUFChat:
    """The chat template of a GGUF and the text of its BOS and EOS tokens ("" when it has none).

    Raises:
        InputError: the file has no chat template, or its BOS/EOS ids are not in its vocabulary.
    """
    metadata = inspect_gguf(path).metadata
    template = metadata.get("tokenizer.chat_template")
    if not isinstance(template, str) or not template:
        raise InputError(f"{path.name} has no chat template (tokenizer.chat_template): export a chat model")
    ids = [metadata.get(f"tokenizer.ggml.{key}_token_id") for key in ("bos", "eos")]
    wanted = [i for i in ids if isinstance(i, int) and not isinstance(i, bool)]
    summary = inspect_gguf(path, tokens=wanted) if wanted else None
    if summary is not None and _TOKENS not in summary.array_lengths:
        raise InputError(f"{path.name} has no vocabulary ({_TOKENS}): export it again")
    if summary is not None and (missing := sorted(set(wanted) - summary.tokens.keys())):
        count = summary.array_lengths[_TOKENS]
        raise InputError(f"{path.name}: token id {missing[0]} is past its {count} tokens")
    found = summary.tokens if summary is not None else {}
    bos, eos = (found.get(i, "") if isinstance(i, int) else "" for i in ids)
    return GGUFChat(template, bos, eos)


def validate_gguf(path: Path, n_ctx: int = 512) -> GGUFSummary:
    """`inspect_gguf`, then load the file with llama.cpp: a GGUF that passes both can be served."""
    summary = inspect_gguf(path)
    check_loads(path, n_ctx)
    return summary


def check_loads(path: Path, n_ctx: int = 512) -> None:
    """Load the model with llama.cpp (weights and a context of `n_ctx`), then free it."""
    from llama_cpp import Llama

    try:
        llm = Llama(model_path=str(path), n_ctx=n_ctx, verbose=False)
    except (ValueError, RuntimeError, OSError) as exc:  # llama.cpp's reason goes to its (silenced) log
        raise CorruptGGUF(
            f"{path.name} is not a valid GGUF: llama.cpp refuses to load it (unsupported architecture, "
            "missing metadata or damaged weights): export it again"
        ) from exc
    llm.close()


@dataclass(frozen=True, slots=True)
class _Array:
    length: int


_TOKENS = "tokenizer.ggml.tokens"


class _Parser:
    def __init__(self, buf: mmap.mmap, size: int, name: str, wanted: frozenset[int] = frozenset()) -> None:
        self.buf, self.size, self.name, self.pos = buf, size, name, 0
        self.wanted, self.tokens = wanted, dict[int, str]()

    def fail(self, what: str) -> CorruptGGUF:
        return CorruptGGUF(f"{self.name} is not a valid GGUF: {what}")

    def parse(self) -> GGUFSummary:
        magic, version, n_tensors, n_kv = _HEADER.unpack_from(self.buf, 0)
        self.pos = _HEADER.size
        if magic != MAGIC:
            raise self.fail(f"it starts with {magic!r}, not {MAGIC!r}")
        if version not in SUPPORTED_VERSIONS:
            supported = " and ".join(map(str, SUPPORTED_VERSIONS))
            raise self.fail(f"version {version} is not supported (only {supported})")
        if _HEADER.size + n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_INFO_BYTES > self.size:
            raise self.fail(
                f"the header claims {n_tensors} tensors and {n_kv} metadata keys, "
                f"more than a {self.size}-byte file can hold"
            )
        metadata: dict[str, Scalar] = {}
        arrays: dict[str, int] = {}
        for _ in range(n_kv):
            key = self.string("a metadata key")
            value = self.value(self.u32(f"the type of {key}"), key)
            if isinstance(value, _Array):
                arrays[key] = value.length
            else:
                metadata[key] = value
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment <= 0:
            raise self.fail(f"general.alignment is {alignment!r}, not a positive integer")
        if alignment & (alignment - 1):
            raise self.fail(f"general.alignment is {alignment}, not a power of two")
        infos = [self.tensor_info(alignment) for _ in range(n_tensors)]
        data_offset = -(-self.pos // alignment) * alignment
        self.check_tensors(infos, data_offset)
        return GGUFSummary(
            version, n_tensors, metadata, arrays, self.size, data_offset, tuple(infos), self.tokens
        )

    def take(self, n: int, what: str) -> int:
        start = self.pos
        if n < 0 or start + n > self.size:
            raise self.fail(f"the header ends inside {what} (byte {start}, file is {self.size} bytes)")
        self.pos = start + n
        return start

    def u32(self, what: str) -> int:
        return int(_U32.unpack_from(self.buf, self.take(4, what))[0])

    def u64(self, what: str) -> int:
        return int(_U64.unpack_from(self.buf, self.take(8, what))[0])

    def string(self, what: str) -> str:
        n = self.u64(what)
        start = self.take(n, what)
        try:
            return self.buf[start : start + n].decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} at byte {start} is not UTF-8") from None

    def value(self, vtype: int, key: str) -> Scalar | _Array:
        if vtype in _STRUCTS:
            fmt = _STRUCTS[vtype]
            raw = fmt.unpack_from(self.buf, self.take(fmt.size, f"the value of {key}"))[0]
            return bool(raw) if vtype == _BOOL else raw
        if vtype == _STRING:
            return self.string(f"the value of {key}")
        if vtype == _ARRAY:
            item_type, count = self.u32(f"the array type of {key}"), self.u64(f"the length of {key}")
            if item_type in _STRUCTS:  # fixed-size items: skipped, never read
                self.take(count * _STRUCTS[item_type].size, f"the array {key}")
            elif count > self.size - self.pos:  # every item takes at least one byte
                raise self.fail(f"the array {key} claims {count} items, past the end of the file")
            else:  # strings and nested arrays: walked, not kept (token lists are large), but asked-for tokens
                keep = self.wanted if key == _TOKENS and item_type == _STRING else frozenset()
                for i in range(count):
                    item = self.value(item_type, key)
                    if i in keep and isinstance(item, str):
                        self.tokens[i] = item
            return _Array(count)
        raise self.fail(f"metadata key {key} has unknown value type {vtype}")

    def tensor_info(self, alignment: int) -> TensorInfo:
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        name = self.string("a tensor name")
        if len(name.encode()) > MAX_NAME_BYTES:
            raise self.fail(f"tensor name {name[:40]}... is longer than {MAX_NAME_BYTES} bytes")
        n_dims = self.u32(f"the dimension count of tensor {name}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise self.fail(f"tensor {name} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")
        shape = tuple(self.u64(f"the shape of tensor {name}") for _ in range(n_dims))
        ggml_type, offset = self.u32(f"the type of tensor {name}"), self.u64(f"the offset of tensor {name}")
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
        except (ValueError, KeyError):
            raise self.fail(f"tensor {name} has unknown ggml type {ggml_type}") from None
        elements = 1
        for dim in shape:
            elements *= dim
        if shape[0] % block:
            raise self.fail(f"tensor {name}: a row of {shape[0]} is not a multiple of the block size {block}")
        if offset % alignment:
            raise self.fail(f"tensor {name} starts at data offset {offset}, not aligned to {alignment}")
        return TensorInfo(name, shape, ggml_type, offset, elements // block * type_size)

    def check_tensors(self, infos: list[TensorInfo], data_offset: int) -> None:
        seen: set[str] = set()
        for info in infos:
            if info.name in seen:
                raise self.fail(f"tensor {info.name} appears twice")
            seen.add(info.name)
            end = data_offset + info.offset + info.nbytes
            if end > self.size:
                raise self.fail(
                    f"tensor {info.name} ends at byte {end}, past the end of the file ({self.size} bytes)"
                )
