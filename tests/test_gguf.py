"""ollamads.gguf against gguf-py, the reference Python implementation."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest

from ollamads.errors import GGUFFormatError
from ollamads.gguf.format import (
    GGML_QUANT_SIZES,
    GGUF_MAGIC,
    KEY_ALIGNMENT,
    GGMLQuantizationType,
    GGUFValueType,
    GGUFWriter,
    TensorInfo,
    ggml_n_dims,
    pack_value,
    read_gguf,
    tensor_nbytes,
)
from tests.support.llama_tools import LFS_POINTER, model_kv, model_tensors, write_model


def test_enums_match_gguf_py() -> None:
    for t in GGUFValueType:
        assert gguf.GGUFValueType[t.name] == t
    for q in GGMLQuantizationType:
        if q.name in gguf.GGMLQuantizationType.__members__:
            assert gguf.GGMLQuantizationType[q.name] == q


def test_block_sizes_match_gguf_py() -> None:
    theirs = {q.name: v for q, v in gguf.constants.GGML_QUANT_SIZES.items()}
    for q in GGMLQuantizationType:
        assert q in GGML_QUANT_SIZES, q
        if q.name in theirs:
            assert GGML_QUANT_SIZES[q] == theirs[q.name], q.name


@pytest.mark.parametrize("q", list(GGMLQuantizationType))
def test_tensor_nbytes_every_type(q: GGMLQuantizationType) -> None:
    block, size = GGML_QUANT_SIZES[q]
    assert tensor_nbytes(q, (block * 3, 2, 5)) == 3 * 2 * 5 * size


def test_tensor_nbytes_rejects_partial_blocks_and_unknown_types() -> None:
    with pytest.raises(ValueError, match="block size 32"):
        tensor_nbytes(GGMLQuantizationType.Q8_0, (33,))
    with pytest.raises(ValueError, match="unknown ggml type 4"):
        tensor_nbytes(4, (32,))


def test_ggml_n_dims_drops_trailing_ones() -> None:
    assert ggml_n_dims((7, 1)) == 1
    assert ggml_n_dims((1, 1, 1)) == 1
    assert ggml_n_dims((5, 1, 3, 1)) == 3
    assert ggml_n_dims((1,)) == 1


def test_written_file_reads_back_and_matches_gguf_py(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.gguf")
    ours = read_gguf(path)
    theirs = gguf.GGUFReader(path)

    want = {k: v for k, v, _ in model_kv()}
    assert list(ours.kv) == list(want)
    assert ours.value("general.name") == "Tiny DeepSeek ｜▁ naïve ünïcode"
    assert ours.kv["deepseek2.expert_weights_norm"] == (GGUFValueType.BOOL, True)
    assert ours.kv["deepseek2.block_count"] == (GGUFValueType.UINT32, 2)
    assert ours.kv["deepseek2.leading_dense_block_count"] == (GGUFValueType.INT64, -1)
    assert ours.kv["tokenizer.ggml.tokens"][1] == (
        GGUFValueType.STRING,
        want["tokenizer.ggml.tokens"],
    )
    assert ours.kv["tokenizer.ggml.token_type"][1][0] == GGUFValueType.INT32
    assert ours.value("tokenizer.ggml.flags") == [True, False, True]
    assert ours.value("tokenizer.ggml.empty") == []
    assert ours.value("missing", 42) == 42

    fields = {k: f for k, f in theirs.fields.items() if not k.startswith("GGUF.")}
    assert list(fields) == list(ours.kv)
    for key, (vtype, _) in ours.kv.items():
        assert fields[key].types[0] == vtype, key
        value = ours.value(key)
        if isinstance(value, float) or (
            isinstance(value, list) and value and isinstance(value[0], float)
        ):
            assert np.allclose(fields[key].contents(), value)
        else:
            assert fields[key].contents() == value, key

    assert ours.version == 3 and ours.alignment == 32 and ours.data_offset % 32 == 0
    assert ours.file_size == path.stat().st_size
    assert len(ours.tensors) == len(theirs.tensors)
    raw = path.read_bytes()
    for (name, shape, ggml_type, data), mine, ref in zip(
        model_tensors(), ours.tensors, theirs.tensors
    ):
        assert mine == TensorInfo(name, shape, ggml_type, mine.offset)
        assert mine.offset % 32 == 0
        assert (mine.name, list(mine.shape), mine.ggml_type) == (
            ref.name,
            list(ref.shape),
            ref.tensor_type,
        )
        assert ours.data_offset + mine.offset == ref.data_offset
        assert mine.nbytes == ref.n_bytes == len(data)
        start = ours.data_offset + mine.offset
        assert raw[start : start + mine.nbytes] == data


def test_reads_files_written_by_gguf_py(tmp_path: Path) -> None:
    path = tmp_path / "ref.gguf"
    w = gguf.GGUFWriter(path, "deepseek2")
    w.add_string("general.name", "réf")
    w.add_array("tokenizer.ggml.tokens", ["x", "yé"])
    w.add_bool("b", False)
    w.add_tensor("a", np.arange(7, dtype=np.float32).reshape(1, 7))
    w.add_tensor("b", np.ones((3, 33), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    ours = read_gguf(path)
    assert ours.value("general.architecture") == "deepseek2"
    assert ours.value("tokenizer.ggml.tokens") == ["x", "yé"]
    assert ours.value("b") is False
    assert [(t.name, t.shape, t.ggml_type) for t in ours.tensors] == [
        ("a", (7, 1), 0),
        ("b", (33, 3), 1),
    ]
    theirs = gguf.GGUFReader(path)
    assert [ours.data_offset + t.offset for t in ours.tensors] == [
        t.data_offset for t in theirs.tensors
    ]


def test_alignment_key_is_applied(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.gguf", kv=model_kv(alignment=64))
    ours = read_gguf(path)
    assert ours.kv[KEY_ALIGNMENT] == (GGUFValueType.UINT32, 64)
    assert ours.alignment == 64 and ours.data_offset % 64 == 0
    assert all(t.offset % 64 == 0 for t in ours.tensors)
    theirs = gguf.GGUFReader(path)
    assert [ours.data_offset + t.offset for t in ours.tensors] == [
        t.data_offset for t in theirs.tensors
    ]
    for t, (_, _, _, data) in zip(theirs.tensors, model_tensors()):
        assert bytes(t.data.tobytes()) == data


def test_writer_type_inference_and_explicit_types(tmp_path: Path) -> None:
    w = GGUFWriter()
    w.add("s", "x")
    w.add("i", 3)
    w.add("u64", 3, GGUFValueType.UINT64)
    w.add("f", 0.5)
    w.add("b", False)
    w.add("ai", [1, 2])
    w.add("au8", [1, 2], GGUFValueType.UINT8)
    w.add("af64", [1.0], GGUFValueType.ARRAY, elem_type=GGUFValueType.FLOAT64)
    w.add("split.count", 3)  # llama.cpp reads it as u16
    w.add("general.alignment", 32)  # llama.cpp insists on u32
    assert {k: t for k, (t, _) in w.kv.items()} == {
        "s": GGUFValueType.STRING,
        "i": GGUFValueType.INT32,
        "u64": GGUFValueType.UINT64,
        "f": GGUFValueType.FLOAT32,
        "b": GGUFValueType.BOOL,
        "ai": GGUFValueType.ARRAY,
        "au8": GGUFValueType.ARRAY,
        "af64": GGUFValueType.ARRAY,
        "split.count": GGUFValueType.UINT16,
        "general.alignment": GGUFValueType.UINT32,
    }
    assert w.kv["au8"][1][0] == GGUFValueType.UINT8
    assert w.kv["af64"][1][0] == GGUFValueType.FLOAT64
    w.write(tmp_path / "t.gguf")
    assert read_gguf(tmp_path / "t.gguf").kv == w.kv


def test_writer_rejects_mistakes() -> None:
    w = GGUFWriter()
    w.add("k", 1)
    with pytest.raises(ValueError, match="duplicate key"):
        w.add("k", 2)
    with pytest.raises(ValueError, match="explicit elem_type"):
        w.add("e", [])
    with pytest.raises(TypeError):
        w.add("d", {"a": 1})
    with pytest.raises(ValueError, match="shape needs 28"):
        w.add_tensor("t", (7,), GGMLQuantizationType.F32, b"\0" * 27)
    w.add_tensor("t", (7,), GGMLQuantizationType.F32, b"\0" * 28)
    with pytest.raises(ValueError, match="duplicate tensor"):
        w.add_tensor("t", (7,), GGMLQuantizationType.F32, b"\0" * 28)


def test_pack_value_bools_are_0_and_1() -> None:
    assert pack_value(GGUFValueType.BOOL, True) == b"\x01"
    assert pack_value(GGUFValueType.ARRAY, (GGUFValueType.BOOL, [True, False])) == (
        struct.pack("<IQ", 7, 2) + b"\x01\x00"
    )


def test_non_utf8_string_bytes_survive_round_trip(tmp_path: Path) -> None:
    w = GGUFWriter()
    w.add("raw", b"ok\xff\xfe".decode("utf-8", "surrogateescape"))
    w.write(tmp_path / "t.gguf")
    value = read_gguf(tmp_path / "t.gguf").value("raw")
    assert value.encode("utf-8", "surrogateescape") == b"ok\xff\xfe"


# --- errors -------------------------------------------------------------------------------


def _error(path: Path) -> GGUFFormatError:
    with pytest.raises(GGUFFormatError) as info:
        read_gguf(path)
    assert str(path) in info.value.message and info.value.hint
    return info.value


def test_lfs_pointer_file(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(LFS_POINTER)
    err = _error(path)
    assert "git-LFS pointer" in err.message
    assert "huggingface_hub" in err.hint and "git lfs pull" in err.hint


@pytest.mark.parametrize("content", [b"<!DOCTYPE html><html>", b"GG", b""])
def test_not_gguf(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(content)
    assert "not a GGUF file" in _error(path).message


@pytest.mark.parametrize(
    ("version", "words"), [(1, "version 1"), (4, "version 4"), (3 << 24, "big-endian")]
)
def test_unsupported_version(tmp_path: Path, version: int, words: str) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(GGUF_MAGIC + struct.pack("<IQQ", version, 0, 0))
    assert words in _error(path).message


def test_truncated_header(tmp_path: Path) -> None:
    full = write_model(tmp_path / "full.gguf").read_bytes()
    path = tmp_path / "m.gguf"
    for cut in (6, 20, 100, read_gguf(tmp_path / "full.gguf").data_offset - 40):
        path.write_bytes(full[:cut])
        err = _error(path)
        assert "truncated" in err.message and "header" in err.message
        assert "download" in err.hint


def test_truncated_data(tmp_path: Path) -> None:
    full = write_model(tmp_path / "full.gguf")
    gf = read_gguf(full)
    path = tmp_path / "m.gguf"
    path.write_bytes(full.read_bytes()[: gf.data_offset + gf.data_size - 1])
    err = _error(path)
    assert "truncated" in err.message and str(gf.data_offset + gf.data_size) in err.message
    # Without the last tensor's padding the file is still complete.
    path.write_bytes(full.read_bytes()[: gf.data_offset + gf.data_size])
    assert read_gguf(path).tensors == gf.tensors


def test_unknown_tensor_type_and_bad_alignment(tmp_path: Path) -> None:
    w = GGUFWriter()
    w.add_tensor("t", (32,), GGMLQuantizationType.F32, b"\0" * 128)
    w.write(tmp_path / "ok.gguf")
    raw = bytearray((tmp_path / "ok.gguf").read_bytes())
    info = raw.index(b"t\x01\x00\x00\x00")  # name "t", n_dims 1
    struct.pack_into("<i", raw, info + 5 + 8, 31)  # a type id ggml removed
    (tmp_path / "bad.gguf").write_bytes(bytes(raw))
    assert "unknown ggml type 31" in _error(tmp_path / "bad.gguf").message

    w = GGUFWriter()
    w.add(KEY_ALIGNMENT, 48)
    w.write(tmp_path / "align.gguf")
    assert "power-of-two" in _error(tmp_path / "align.gguf").message


def test_misaligned_tensor_offset(tmp_path: Path) -> None:
    w = GGUFWriter()
    w.add_tensor("a", (7,), GGMLQuantizationType.F32, b"\0" * 28)
    w.add_tensor("b", (8,), GGMLQuantizationType.F32, b"\0" * 32)
    w.write(tmp_path / "ok.gguf")
    raw = bytearray((tmp_path / "ok.gguf").read_bytes())
    info = raw.index(b"b\x01\x00\x00\x00")
    struct.pack_into("<Q", raw, info + 5 + 8 + 4, 16)
    (tmp_path / "bad.gguf").write_bytes(bytes(raw))
    assert "offset 16 is not aligned to 32" in _error(tmp_path / "bad.gguf").message
