"""The GGUF validator: real files from the tiny model pass, patched and truncated copies are refused."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from core.errors import InputError
from core.gguf import CorruptGGUF, inspect_gguf, validate_gguf


@pytest.fixture(scope="module")
def f16_bytes(tiny_gguf: Path) -> bytes:
    return tiny_gguf.read_bytes()


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(data)
    return path


def _offset_field(data: bytes, name: str) -> int:
    """Byte position of a tensor's data offset in the header (name, n_dims, dims, type, then offset)."""
    pos = data.index(struct.pack("<Q", len(name)) + name.encode()) + 8 + len(name)
    (n_dims,) = struct.unpack_from("<I", data, pos)
    return pos + 4 + 8 * n_dims + 4


def test_exported_gguf_passes_and_is_summarised(tiny_gguf: Path) -> None:
    summary = validate_gguf(tiny_gguf)
    assert summary.version == 3
    assert summary.tensor_count == len(summary.tensors) > 0
    assert summary.metadata["general.architecture"] == "llama"
    assert summary.array_lengths["tokenizer.ggml.tokens"] == 49152
    assert summary.file_size == tiny_gguf.stat().st_size
    assert summary.data_offset % 32 == 0


def test_every_metadata_value_type_is_parsed(tmp_path: Path) -> None:
    from gguf import GGUFWriter

    path = tmp_path / "types.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_uint8("t.u8", 200)
    writer.add_int8("t.i8", -5)
    writer.add_uint16("t.u16", 60_000)
    writer.add_int16("t.i16", -30_000)
    writer.add_uint32("t.u32", 4_000_000_000)
    writer.add_int32("t.i32", -2_000_000_000)
    writer.add_float32("t.f32", 0.5)
    writer.add_bool("t.bool", True)
    writer.add_string("t.str", "héllo")
    writer.add_uint64("t.u64", 2**63)
    writer.add_int64("t.i64", -(2**40))
    writer.add_float64("t.f64", 0.1)
    writer.add_array("t.ints", [1, 2, 3])
    writer.add_array("t.strs", ["a", "bc", ""])
    writer.add_array("t.nested", [[1, 2], [3]])
    writer.add_string("t.after_arrays", "still in step")
    writer.add_tensor("w", np.ones((4, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    summary = inspect_gguf(path)

    expected = {"t.u8": 200, "t.i8": -5, "t.u16": 60_000, "t.i16": -30_000, "t.u32": 4_000_000_000}
    expected |= {"t.i32": -2_000_000_000, "t.f32": 0.5, "t.bool": True, "t.str": "héllo", "t.u64": 2**63}
    expected |= {"t.i64": -(2**40), "t.f64": 0.1, "t.after_arrays": "still in step"}
    assert {k: summary.metadata[k] for k in expected} == expected
    assert {k: v for k, v in summary.array_lengths.items() if k.startswith("t.")} == {
        "t.ints": 3,
        "t.strs": 3,
        "t.nested": 2,
    }
    (tensor,) = summary.tensors
    assert (tensor.name, tensor.shape, tensor.nbytes) == ("w", (32, 4), 4 * 32 * 4)


def test_bad_magic_is_refused(tmp_path: Path, f16_bytes: bytes) -> None:
    path = _write(tmp_path, b"GGML" + f16_bytes[4:])
    with pytest.raises(CorruptGGUF, match=r"model.gguf is not a valid GGUF: it starts with b'GGML'"):
        inspect_gguf(path)


@pytest.mark.parametrize("version", [1, 4, 0x03000000])
def test_unsupported_version_is_refused(tmp_path: Path, f16_bytes: bytes, version: int) -> None:
    path = _write(tmp_path, f16_bytes[:4] + struct.pack("<I", version) + f16_bytes[8:])
    with pytest.raises(CorruptGGUF, match=f"version {version} is not supported"):
        inspect_gguf(path)


def test_truncated_tensor_data_is_refused(tmp_path: Path, f16_bytes: bytes) -> None:
    path = _write(tmp_path, f16_bytes[:-1000])
    with pytest.raises(CorruptGGUF, match=r"past the end of the file \(\d+ bytes\)"):
        inspect_gguf(path)


def test_truncated_header_is_refused(tmp_path: Path, f16_bytes: bytes, tiny_gguf: Path) -> None:
    with pytest.raises(CorruptGGUF, match="the array tokenizer.ggml.tokens claims 49152 items, past the end"):
        inspect_gguf(_write(tmp_path, f16_bytes[:5000]))
    data_offset = inspect_gguf(tiny_gguf).data_offset
    with pytest.raises(CorruptGGUF, match="the header ends inside"):  # in the last tensor info
        inspect_gguf(_write(tmp_path, f16_bytes[: data_offset - 40]))


def test_tensor_offset_past_the_end_is_refused(tmp_path: Path, f16_bytes: bytes) -> None:
    data = bytearray(f16_bytes)
    name = "blk.0.attn_q.weight"
    field = _offset_field(f16_bytes, name)
    struct.pack_into("<Q", data, field, len(data))  # aligned, but the tensor now starts past the end
    with pytest.raises(CorruptGGUF) as err:
        inspect_gguf(_write(tmp_path, bytes(data)))
    assert str(err.value).startswith(f"model.gguf is not a valid GGUF: tensor {name} ends at byte ")
    assert str(err.value).endswith(f", past the end of the file ({len(data)} bytes)")


def test_misaligned_tensor_offset_is_refused(tmp_path: Path, f16_bytes: bytes) -> None:
    data = bytearray(f16_bytes)
    field = _offset_field(f16_bytes, "blk.1.ffn_up.weight")
    struct.pack_into("<Q", data, field, struct.unpack_from("<Q", data, field)[0] + 2)
    with pytest.raises(CorruptGGUF, match="blk.1.ffn_up.weight starts at data offset .* not aligned to 32"):
        inspect_gguf(_write(tmp_path, bytes(data)))


def test_absurd_tensor_count_is_refused(tmp_path: Path, f16_bytes: bytes) -> None:
    path = _write(tmp_path, f16_bytes[:8] + struct.pack("<Q", 2**40) + f16_bytes[16:])
    with pytest.raises(CorruptGGUF, match="more than a .*-byte file can hold"):
        inspect_gguf(path)


def test_file_llama_cpp_cannot_load_is_refused(tmp_path: Path, f16_bytes: bytes) -> None:
    key = b"general.architecture"
    arch = key + struct.pack("<IQ", 8, 5) + b"llama"
    assert arch in f16_bytes
    path = _write(tmp_path, f16_bytes.replace(arch, key + struct.pack("<IQ", 8, 5) + b"llamx"))
    inspect_gguf(path)  # structurally fine ...
    with pytest.raises(CorruptGGUF, match="llama.cpp refuses to load it"):
        validate_gguf(path)  # ... but no llama.cpp architecture is called llamx


def test_missing_or_tiny_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing.gguf not found"):
        inspect_gguf(tmp_path / "missing.gguf")
    with pytest.raises(CorruptGGUF, match="too small"):
        inspect_gguf(_write(tmp_path, b""))
