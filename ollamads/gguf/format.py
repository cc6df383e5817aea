"""GGUF v3 reading and writing, standard library only.

Reading stops at the tensor infos: a 671B model's headers are a few megabytes while its
tensor data is hundreds of gigabytes, and nothing here needs the weights in memory.
Format facts (magic, type ids, block sizes, key names) are named constants in this module
only, mirroring gguf-py's ``constants.py`` and ggml's ``ggml.h``.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, BinaryIO

from ollamads.errors import GGUFFormatError, IncompleteHeaderError

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
# v2 has the same layout as v3 (v3 only allowed big-endian files); v1 used 32-bit counts.
GGUF_READABLE_VERSIONS = (2, 3)
GGUF_DEFAULT_ALIGNMENT = 32
GGML_MAX_DIMS = 4
#: ggml's GGML_MAX_NAME: a tensor name must be shorter (the terminating NUL takes the last byte).
GGML_MAX_NAME = 64
INT64_MAX = 2**63 - 1
# The fewest bytes each record can take: a count larger than what is left of the file divided
# by these is refused before anything is read or allocated for it.
_MIN_KV_BYTES = 8 + 4 + 1  # key length, type, a one-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # name length, n_dims, type, offset
_MIN_STRING_BYTES = 8  # its length
# Git-LFS pointer files ("version https://git-lfs.github.com/spec/v1 ...") start like this.
LFS_POINTER_MAGIC = b"vers"

KEY_ARCHITECTURE = "general.architecture"
KEY_FILE_TYPE = "general.file_type"
KEY_QUANTIZATION_VERSION = "general.quantization_version"
KEY_ALIGNMENT = "general.alignment"
KEY_CHAT_TEMPLATE = "tokenizer.chat_template"
KEY_SPLIT_NO = "split.no"
KEY_SPLIT_COUNT = "split.count"
KEY_SPLIT_TENSORS_COUNT = "split.tensors.count"


class GGUFValueType(IntEnum):
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# Keys whose type llama.cpp insists on (it aborts or mis-reads other types), so the writer
# uses these when the caller does not name a type.
KNOWN_KEY_TYPES: Mapping[str, GGUFValueType] = {
    KEY_ALIGNMENT: GGUFValueType.UINT32,
    KEY_SPLIT_NO: GGUFValueType.UINT16,
    KEY_SPLIT_COUNT: GGUFValueType.UINT16,
    KEY_SPLIT_TENSORS_COUNT: GGUFValueType.INT32,
}

_SCALAR_FORMATS: Mapping[GGUFValueType, str] = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "B",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}


class GGMLQuantizationType(IntEnum):
    # Gaps are ids ggml removed (Q4_2, Q4_3, Q4_0_4_4 ...); they must never be reused.
    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39
    NVFP4 = 40
    Q1_0 = 41
    Q2_0 = 42


_Q = GGMLQuantizationType
QK_K = 256
# (elements per block, bytes per block), from the block structs in ggml-common.h.
GGML_QUANT_SIZES: Mapping[GGMLQuantizationType, tuple[int, int]] = {
    _Q.F32: (1, 4),
    _Q.F16: (1, 2),
    _Q.Q4_0: (32, 2 + 16),
    _Q.Q4_1: (32, 2 + 2 + 16),
    _Q.Q5_0: (32, 2 + 4 + 16),
    _Q.Q5_1: (32, 2 + 2 + 4 + 16),
    _Q.Q8_0: (32, 2 + 32),
    _Q.Q8_1: (32, 4 + 4 + 32),
    _Q.Q2_K: (QK_K, 2 + 2 + QK_K // 16 + QK_K // 4),
    _Q.Q3_K: (QK_K, 2 + QK_K // 4 + QK_K // 8 + 12),
    _Q.Q4_K: (QK_K, 2 + 2 + QK_K // 2 + 12),
    _Q.Q5_K: (QK_K, 2 + 2 + QK_K // 2 + QK_K // 8 + 12),
    _Q.Q6_K: (QK_K, 2 + QK_K // 2 + QK_K // 4 + QK_K // 16),
    _Q.Q8_K: (QK_K, 4 + QK_K + QK_K // 8),
    _Q.IQ2_XXS: (QK_K, 2 + QK_K // 4),
    _Q.IQ2_XS: (QK_K, 2 + QK_K // 4 + QK_K // 32),
    _Q.IQ3_XXS: (QK_K, 2 + QK_K // 4 + QK_K // 8),
    _Q.IQ1_S: (QK_K, 2 + QK_K // 8 + QK_K // 16),
    _Q.IQ4_NL: (32, 2 + 16),
    _Q.IQ3_S: (QK_K, 2 + QK_K // 4 + QK_K // 8 + QK_K // 32 + 4),
    _Q.IQ2_S: (QK_K, 2 + QK_K // 4 + QK_K // 16),
    _Q.IQ4_XS: (QK_K, 2 + 2 + QK_K // 2 + QK_K // 64),
    _Q.I8: (1, 1),
    _Q.I16: (1, 2),
    _Q.I32: (1, 4),
    _Q.I64: (1, 8),
    _Q.F64: (1, 8),
    _Q.IQ1_M: (QK_K, QK_K // 8 + QK_K // 16 + QK_K // 32),
    _Q.BF16: (1, 2),
    _Q.TQ1_0: (QK_K, 2 + 4 * 13),
    _Q.TQ2_0: (QK_K, 2 + 64),
    _Q.MXFP4: (32, 1 + 16),
    _Q.NVFP4: (64, 4 + 32),
    _Q.Q1_0: (128, 2 + 16),
    _Q.Q2_0: (64, 2 + 16),
}


def align_up(n: int, alignment: int) -> int:
    """ggml's GGML_PAD: round ``n`` up to a multiple of ``alignment``."""
    return (n + alignment - 1) // alignment * alignment


def tensor_nbytes(ggml_type: int, shape: Iterable[int]) -> int:
    """Bytes of tensor data, as ggml_nbytes computes it for a contiguous tensor."""
    try:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except ValueError:
        raise ValueError(f"unknown ggml type {ggml_type}") from None
    dims = tuple(shape)
    if dims and dims[0] % block:
        raise ValueError(f"first dimension {dims[0]} is not a multiple of the block size {block}")
    return math.prod(dims) // block * size


def ggml_n_dims(shape: Iterable[int]) -> int:
    """ggml_n_dims: trailing size-1 dimensions do not count, but there is always one."""
    dims = list(shape)
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    return max(len(dims), 1)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ne order (fastest-varying first), exactly as stored
    ggml_type: int
    offset: int  # relative to the start of the data section

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.ggml_type, self.shape)


KVMap = dict[str, tuple[GGUFValueType, object]]


@dataclass(frozen=True)
class GGUFFile:
    path: Path
    version: int
    kv: KVMap  # file order; arrays are (ARRAY, (elem_type, [values]))
    tensors: tuple[TensorInfo, ...]
    data_offset: int
    alignment: int
    file_size: int

    def value(self, key: str, default: object = None) -> object:
        """The plain value of ``key`` (a list for arrays), or ``default``."""
        if key not in self.kv:
            return default
        vtype, val = self.kv[key]
        if vtype == GGUFValueType.ARRAY:
            return array_value(val)[1]
        return val

    @property
    def data_size(self) -> int:
        """Bytes the tensor data section must hold (without the last tensor's padding)."""
        return max((t.offset + t.nbytes for t in self.tensors), default=0)


# --- serialisation -----------------------------------------------------------------------


def _pack_string(s: str) -> bytes:
    # surrogateescape keeps non-UTF-8 bytes intact through a read/write round trip.
    raw = s.encode("utf-8", "surrogateescape")
    return struct.pack("<Q", len(raw)) + raw


def array_value(value: object) -> tuple[GGUFValueType, Sequence[Any]]:
    """An ARRAY key/value's ``(element type, items)``."""
    if not (isinstance(value, tuple) and len(value) == 2):
        raise TypeError(f"a GGUF array is (element type, items), not {value!r}")
    elem_type, items = value
    return GGUFValueType(elem_type), items


def pack_value(vtype: GGUFValueType, value: object) -> bytes:
    """One KV value as GGUF bytes (no key, no type tag); arrays as (elem_type, items)."""
    vtype = GGUFValueType(vtype)
    if vtype == GGUFValueType.STRING:
        if not isinstance(value, str):
            raise TypeError(f"a GGUF string value must be a str, not {value!r}")
        return _pack_string(value)
    if vtype == GGUFValueType.ARRAY:
        elem_type, items = array_value(value)
        head = struct.pack("<IQ", elem_type, len(items))
        if elem_type in _SCALAR_FORMATS:
            if elem_type == GGUFValueType.BOOL:
                items = [1 if v else 0 for v in items]
            return head + struct.pack(f"<{len(items)}{_SCALAR_FORMATS[elem_type]}", *items)
        return head + b"".join(pack_value(elem_type, v) for v in items)
    if vtype == GGUFValueType.BOOL:
        value = 1 if value else 0
    return struct.pack("<" + _SCALAR_FORMATS[vtype], value)


def pack_kv(key: str, vtype: GGUFValueType, value: object) -> bytes:
    return _pack_string(key) + struct.pack("<I", vtype) + pack_value(vtype, value)


def pack_tensor_info(name: str, shape: Iterable[int], ggml_type: int, offset: int) -> bytes:
    dims = tuple(shape)
    return (
        _pack_string(name)
        + struct.pack(f"<I{len(dims)}q", len(dims), *dims)
        + struct.pack("<iQ", ggml_type, offset)
    )


def pack_header(kv: KVMap, tensors: Iterable[TensorInfo], version: int = GGUF_VERSION) -> bytes:
    """Magic, version, counts, KVs and tensor infos; the caller pads to the alignment."""
    tensor_list = list(tensors)
    parts = [GGUF_MAGIC, struct.pack("<IQQ", version, len(tensor_list), len(kv))]
    parts += [pack_kv(k, t, v) for k, (t, v) in kv.items()]
    parts += [pack_tensor_info(t.name, t.shape, t.ggml_type, t.offset) for t in tensor_list]
    return b"".join(parts)


# --- reading ------------------------------------------------------------------------------


class _Truncated(Exception):
    pass


class _Corrupt(Exception):
    """A header that claims what no GGUF can hold; the message says what."""


class _HeaderReader:
    """Reads the header through a growing buffer: millions of small struct reads stay fast.

    ``available`` bytes can be read (all of a file, or the prefix fetched of it); counts are
    judged against ``file_size``, what the whole file holds."""

    _CHUNK = 1 << 20

    def __init__(self, f: BinaryIO, available: int, file_size: int | None = None) -> None:
        self.f = f
        self.available = available
        self.file_size = available if file_size is None else file_size
        self.buf = bytearray()
        self.pos = 0

    def _need(self, n: int) -> None:
        end = self.pos + n
        if end > self.available:
            raise _Truncated
        if end > len(self.buf):
            # Never ask for more than there is: a read buffer is allocated at its size.
            want = min(max(end - len(self.buf), self._CHUNK), self.available - len(self.buf))
            more = self.f.read(want)
            self.buf += more
            if end > len(self.buf):
                raise _Truncated

    def count(self, n: int, min_bytes: int, what: str) -> int:
        """``n`` records of at least ``min_bytes`` each must fit in what is left of the file."""
        if n * min_bytes > self.file_size - self.pos:
            raise _Corrupt(f"it claims {n} {what}, more than its {self.file_size} bytes can hold")
        return n

    def unpack(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        self._need(size)
        vals = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return vals

    def string(self) -> str:
        (n,) = self.unpack("<Q")
        self._need(n)
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return raw.decode("utf-8", "surrogateescape")

    def value(self, vtype: int) -> object:
        if vtype == GGUFValueType.STRING:
            return self.string()
        if vtype == GGUFValueType.ARRAY:
            elem_type, count = self.unpack("<IQ")
            elem = _value_type(elem_type)
            if elem == GGUFValueType.ARRAY:  # llama.cpp refuses them too
                raise _Corrupt("it has an array of arrays (nested arrays are not GGUF)")
            if elem in _SCALAR_FORMATS:
                fmt = _SCALAR_FORMATS[elem]
                self.count(count, struct.calcsize(fmt), "array items")
                items = list(self.unpack(f"<{count}{fmt}"))
                if elem == GGUFValueType.BOOL:
                    items = [bool(v) for v in items]
            else:
                self.count(count, _MIN_STRING_BYTES, "strings in an array")
                items = [self.string() for _ in range(count)]
            return (elem, items)
        fmt = _SCALAR_FORMATS[_value_type(vtype)]
        (val,) = self.unpack("<" + fmt)
        return bool(val) if vtype == GGUFValueType.BOOL else val


class _BadValueType(Exception):
    def __init__(self, vtype: int) -> None:
        self.vtype = vtype


def _value_type(vtype: int) -> GGUFValueType:
    try:
        return GGUFValueType(vtype)
    except ValueError:
        raise _BadValueType(vtype) from None


def _redownload(path: Path, what: str) -> GGUFFormatError:
    return GGUFFormatError(
        f"{path} is truncated: {what}",
        "the download is incomplete; download this file again",
    )


def _check_magic(path: Path, magic: bytes) -> None:
    if magic == LFS_POINTER_MAGIC:
        raise GGUFFormatError(
            f"{path} is a git-LFS pointer file, not the model data",
            "download the real file with huggingface_hub (`hf download`) or run `git lfs pull`",
        )
    if magic != GGUF_MAGIC:
        raise GGUFFormatError(
            f"{path} is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r})",
            "pass a .gguf model file",
        )


def read_gguf(path: str | os.PathLike[str]) -> GGUFFile:
    """Parse the header, key/values and tensor infos of a GGUF file; never the tensor data.

    The file must be whole: one shorter than its tensor table says is refused as truncated."""
    path = Path(path)
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        return _parse(f, path, file_size=file_size, available=file_size)


def read_gguf_prefix(
    prefix: str | os.PathLike[str], *, file_size: int, name: str | os.PathLike[str]
) -> GGUFFile:
    """Parse the header of a ``file_size``-byte GGUF file from its first bytes only.

    ``prefix`` holds the start of the file (a Range download); ``name`` is what messages call
    it. Raises :class:`IncompleteHeaderError` when the prefix ends before the header does, so
    the caller can fetch more; a prefix holding the whole file that still ends early is a
    truncated file (:class:`GGUFFormatError`)."""
    prefix = Path(prefix)
    available = min(prefix.stat().st_size, file_size)
    with open(prefix, "rb") as f:
        return _parse(f, Path(name), file_size=file_size, available=available)


def _parse(f: BinaryIO, path: Path, *, file_size: int, available: int) -> GGUFFile:
    r = _HeaderReader(f, available, file_size)

    def short() -> GGUFFormatError:
        if available < file_size:
            return IncompleteHeaderError(
                f"the first {available} bytes of {path} end inside its GGUF header",
                "read more of the file", have=available,
            )
        return _redownload(path, f"its GGUF header ends early ({file_size} bytes)")

    try:
        (magic,) = r.unpack("4s")
    except _Truncated:
        if available < file_size:
            raise short() from None
        raise GGUFFormatError(
            f"{path} is not a GGUF file ({file_size} bytes)", "pass a .gguf model file"
        ) from None
    _check_magic(path, magic)
    try:
        (version,) = r.unpack("<I")
        if version not in GGUF_READABLE_VERSIONS:
            # A big-endian v2/v3 file reads as 0x02000000 / 0x03000000 here.
            endian = " (a big-endian file)" if version and not version & 0xFFFF else ""
            raise GGUFFormatError(
                f"{path} has unsupported GGUF version {version}{endian}",
                f"convert it to little-endian GGUF v{GGUF_VERSION} with current llama.cpp",
            )
        kv, tensors = _read_metadata(r, path)
    except _Truncated:
        raise short() from None
    except _BadValueType as e:
        raise GGUFFormatError(
            f"{path} has a key/value of unknown type {e.vtype}", "the file is corrupt"
        ) from None
    except _Corrupt as e:
        raise GGUFFormatError(f"{path}: {e}", "the file is corrupt; download it again") from None
    alignment = _alignment(path, kv)
    data_offset = align_up(r.pos, alignment) if tensors else r.pos
    expected = 0
    for t in tensors:
        # llama.cpp refuses such files; so does llama-gguf-split's own merge output when
        # general.alignment is not 32.
        if t.offset % alignment:
            raise GGUFFormatError(
                f"{path}: tensor {t.name!r} at offset {t.offset} is not aligned to {alignment}",
                "the file was written by a broken tool; get or make it again",
            )
        # As llama.cpp checks: each tensor's data right after the previous one's. Anything else
        # (overlaps, gaps) would be merged into a valid-looking file with the wrong weights.
        if t.offset != expected:
            raise GGUFFormatError(
                f"{path}: tensor {t.name!r} has offset {t.offset}, expected {expected}",
                "the file is corrupt; download it again",
            )
        expected += align_up(t.nbytes, alignment)
    gf = GGUFFile(path, version, kv, tensors, data_offset, alignment, file_size)
    if tensors and file_size < data_offset + gf.data_size:
        raise _redownload(
            path, f"{file_size} bytes, but its tensors need {data_offset + gf.data_size}"
        )
    return gf


def _read_metadata(r: _HeaderReader, path: Path) -> tuple[KVMap, tuple[TensorInfo, ...]]:
    n_tensors, n_kv = r.unpack("<QQ")
    # Both counts against the file's size before anything is parsed for either.
    r.count(n_kv, _MIN_KV_BYTES, "key/values")
    r.count(n_tensors, _MIN_TENSOR_INFO_BYTES, "tensors")
    kv: KVMap = {}
    for _ in range(n_kv):
        key = r.string()
        (vtype,) = r.unpack("<I")
        if not key:
            raise GGUFFormatError(f"{path} has a key/value with an empty key", "the file is corrupt")
        if key in kv:
            raise GGUFFormatError(f"{path} has the key {key!r} twice", "the file is corrupt")
        kv[key] = (_value_type(vtype), r.value(vtype))
    r.count(n_tensors, _MIN_TENSOR_INFO_BYTES, "tensors")
    tensors = []
    names: set[str] = set()
    for _ in range(n_tensors):
        name = r.string()
        if len(name.encode("utf-8", "surrogateescape")) >= GGML_MAX_NAME or name in names:
            raise GGUFFormatError(
                f"{path}: tensor name {name[:GGML_MAX_NAME]!r} is "
                + ("used twice" if name in names else f"{GGML_MAX_NAME} bytes or longer"),
                "the file is corrupt",
            )
        names.add(name)
        (n_dims,) = r.unpack("<I")
        if n_dims > GGML_MAX_DIMS:
            raise GGUFFormatError(
                f"{path}: tensor {name!r} has {n_dims} dimensions (ggml allows {GGML_MAX_DIMS})",
                "the file is corrupt",
            )
        shape = r.unpack(f"<{n_dims}q")
        if any(d < 0 for d in shape) or math.prod(shape) > INT64_MAX:
            raise GGUFFormatError(
                f"{path}: tensor {name!r} has an impossible shape {list(shape)}", "the file is corrupt"
            )
        ggml_type, offset = r.unpack("<iQ")
        try:
            tensor_nbytes(ggml_type, shape)
        except ValueError as e:
            raise GGUFFormatError(
                f"{path}: tensor {name!r}: {e}",
                "the file may need a newer llama.cpp/ollamads, or it is corrupt",
            ) from None
        info = TensorInfo(name, tuple(shape), ggml_type, offset)
        tensors.append(info)
    return kv, tuple(tensors)


def _alignment(path: Path, kv: KVMap) -> int:
    if KEY_ALIGNMENT not in kv:
        return GGUF_DEFAULT_ALIGNMENT
    vtype, val = kv[KEY_ALIGNMENT]
    if vtype != GGUFValueType.UINT32 or not isinstance(val, int) or val <= 0 or val & (val - 1):
        raise GGUFFormatError(
            f"{path}: {KEY_ALIGNMENT} must be a power-of-two uint32, got {val!r}",
            "the file is corrupt",
        )
    return val


# --- writing ------------------------------------------------------------------------------


def infer_value_type(value: object) -> GGUFValueType:
    # bool before int: bool is a subclass of int.
    if isinstance(value, bool):
        return GGUFValueType.BOOL
    if isinstance(value, int):
        return GGUFValueType.INT32
    if isinstance(value, float):
        return GGUFValueType.FLOAT32
    if isinstance(value, str):
        return GGUFValueType.STRING
    if isinstance(value, (list, tuple)):
        return GGUFValueType.ARRAY
    raise TypeError(f"cannot store {type(value).__name__} in GGUF")


class GGUFWriter:
    """Builds a GGUF v3 file in memory and writes it in one go (for small and test models).

    Tensor shapes are written exactly as given (gguf-py style: ``[7, 1]`` stays 2-D).
    """

    def __init__(self) -> None:
        self.kv: KVMap = {}
        self._tensors: list[tuple[str, tuple[int, ...], int, bytes]] = []

    def add(
        self,
        key: str,
        value: object,
        vtype: GGUFValueType | None = None,
        *,
        elem_type: GGUFValueType | None = None,
    ) -> None:
        """Add a key/value. Lists become arrays; for a list, ``vtype`` may name the element
        type directly, or be ARRAY with ``elem_type`` set."""
        if key in self.kv:
            raise ValueError(f"duplicate key {key!r}")
        if vtype is None:
            vtype = KNOWN_KEY_TYPES.get(key) or infer_value_type(value)
        if isinstance(value, (list, tuple)):
            if vtype != GGUFValueType.ARRAY:
                elem_type, vtype = vtype, GGUFValueType.ARRAY
            if elem_type is None:
                if not value:
                    raise ValueError(f"empty array {key!r} needs an explicit elem_type")
                elem_type = infer_value_type(value[0])
            if elem_type == GGUFValueType.ARRAY:
                raise ValueError("nested arrays are not supported by llama.cpp")
            self.kv[key] = (GGUFValueType.ARRAY, (GGUFValueType(elem_type), list(value)))
        else:
            self.kv[key] = (GGUFValueType(vtype), value)

    def add_tensor(self, name: str, shape: Iterable[int], ggml_type: int, data: bytes) -> None:
        dims = tuple(int(d) for d in shape)
        if not 1 <= len(dims) <= GGML_MAX_DIMS:
            raise ValueError(f"tensor {name!r}: 1 to {GGML_MAX_DIMS} dimensions, got {dims}")
        if any(t[0] == name for t in self._tensors):
            raise ValueError(f"duplicate tensor {name!r}")
        want = tensor_nbytes(ggml_type, dims)
        if len(data) != want:
            raise ValueError(f"tensor {name!r}: {len(data)} bytes of data, shape needs {want}")
        self._tensors.append((name, dims, int(ggml_type), bytes(data)))

    @property
    def alignment(self) -> int:
        value = self.kv[KEY_ALIGNMENT][1] if KEY_ALIGNMENT in self.kv else GGUF_DEFAULT_ALIGNMENT
        if not isinstance(value, int):
            raise TypeError(f"{KEY_ALIGNMENT} must be an int, not {value!r}")
        return value

    def tensor_infos(self) -> tuple[TensorInfo, ...]:
        infos, offset = [], 0
        for name, dims, ggml_type, data in self._tensors:
            infos.append(TensorInfo(name, dims, ggml_type, offset))
            offset += align_up(len(data), self.alignment)
        return tuple(infos)

    def write(self, path: str | os.PathLike[str]) -> None:
        align = self.alignment
        header = pack_header(self.kv, self.tensor_infos())
        with open(path, "wb") as f:
            f.write(header)
            f.write(bytes(align_up(len(header), align) - len(header)))
            for _, _, _, data in self._tensors:
                f.write(data)
                f.write(bytes(align_up(len(data), align) - len(data)))
