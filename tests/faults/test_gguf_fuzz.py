"""Hostile and corrupt GGUF headers: structured mutations of real ones, through the reader, the
shard-set validation and both merge layouts.

The seeds are the tiny DeepSeek model split in three (shard 1 with every key/value, one seed
with ``general.alignment`` set). A walker written here, independent of ollamads' reader, finds
every field of each header: the counts, key and string lengths, value types, array element
types and lengths, tensor name lengths, dimension counts, dimensions, ggml types, offsets and
the alignment. Each example overwrites one to three of them with values chosen to hurt (0, 1,
the file's size and around it, 2**31, 2**32, 2**60, 2**63, 2**64 - 1, negatives, neighbours of
the true value), sometimes truncates the file, and runs everything on it. Expected:

* only ollamads' own GGUF errors come out (``GGUFFormatError``, ``ShardSetError``);
* no hang (a deadline per example) and no allocation larger than the file (the reader's peak
  memory is bounded by the file's size, checked with tracemalloc: a count of 2**60 must not
  make a list);
* the merger refuses before writing: when it fails, the output folder is empty.

CI runs a short fixed-seed pass. The long run (10,000 examples, random seeds) is
``OLLAMADS_FUZZ_EXAMPLES=10000 .venv/bin/python -m pytest -q -p no:cacheprovider tests/faults/test_gguf_fuzz.py``.
"""

from __future__ import annotations

import os
import struct
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ollamads.errors import GGUFFormatError, ShardSetError
from ollamads.gguf.format import (
    GGUF_DEFAULT_ALIGNMENT,
    KEY_ALIGNMENT,
    GGUFValueType,
    align_up,
    pack_header,
    read_gguf,
)
from ollamads.gguf.merge import merge_builtin, write_merged
from ollamads.gguf.shards import open_shard_set
from ollamads.tiny import write_tiny_shards

EXAMPLES_ENV = "OLLAMADS_FUZZ_EXAMPLES"
CI_EXAMPLES = 300
OURS = (GGUFFormatError, ShardSetError)
#: The reader may hold the file's bytes and the Python objects made from them; nothing more.
MEMORY_PER_FILE_BYTE = 8
MEMORY_SLACK = 512 << 10

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B", 10: "<Q", 11: "<q", 12: "<d"}


@dataclass(frozen=True)
class Field:
    """One integer field of a header: where it is, how it is packed, what it means."""

    kind: str
    offset: int
    fmt: str
    value: int


def walk(raw: bytes) -> list[Field]:
    """Every integer field of a well-formed GGUF header, in file order."""
    fields: list[Field] = []
    pos = 0

    def take(kind: str, fmt: str) -> int:
        nonlocal pos
        (value,) = struct.unpack_from(fmt, raw, pos)
        if kind:
            fields.append(Field(kind, pos, fmt, int(value)))
        pos += struct.calcsize(fmt)
        return int(value)

    def string(kind: str) -> str:
        nonlocal pos
        n = take(kind, "<Q")
        text = raw[pos : pos + n].decode("utf-8", "replace")
        pos += n
        return text

    def value(vtype: int, key: str) -> None:
        if vtype == GGUFValueType.STRING:
            string("string length")
        elif vtype == GGUFValueType.ARRAY:
            elem = take("array element type", "<I")
            count = take("array length", "<Q")
            for _ in range(count):
                value(elem, key)
        elif key == KEY_ALIGNMENT:
            take("alignment", _SCALARS[vtype])
        elif vtype in (GGUFValueType.UINT16, GGUFValueType.INT32) and key.startswith("split."):
            take(key, _SCALARS[vtype])
        else:
            take("", _SCALARS[vtype])

    pos = 4
    take("version", "<I")
    n_tensors = take("tensor count", "<Q")
    n_kv = take("key/value count", "<Q")
    for _ in range(n_kv):
        key = string("key length")
        vtype = take("value type", "<I")
        value(vtype, key)
    for _ in range(n_tensors):
        string("tensor name length")
        n_dims = take("dimension count", "<I")
        for _ in range(n_dims):
            take("dimension", "<q")
        take("ggml type", "<i")
        take("tensor offset", "<Q")
    return fields


@dataclass
class Seed:
    """A shard set on disk, and the fields of each shard's header."""

    paths: list[Path]
    originals: list[bytes] = field(repr=False)
    fields: list[list[Field]] = field(repr=False)


def _with_alignment_key(path: Path) -> None:
    """Shard 1 rewritten with an explicit ``general.alignment`` (32, so its data is unchanged)."""
    gf = read_gguf(path)
    kv = {**gf.kv, KEY_ALIGNMENT: (GGUFValueType.UINT32, GGUF_DEFAULT_ALIGNMENT)}
    header = pack_header(kv, gf.tensors)
    header += bytes(align_up(len(header), GGUF_DEFAULT_ALIGNMENT) - len(header))
    path.write_bytes(header + path.read_bytes()[gf.data_offset :])


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> list[Seed]:
    made = []
    for name, aligned in (("plain", False), ("aligned", True)):
        paths = write_tiny_shards(tmp_path_factory.mktemp(f"fuzz-{name}"), "v3.1", n_shards=3)
        if aligned:
            _with_alignment_key(paths[0])
        originals = [p.read_bytes() for p in paths]
        made.append(Seed(paths, originals, [walk(raw) for raw in originals]))
    assert any(f.kind == "alignment" for f in made[1].fields[0])
    return made


def test_the_walker_finds_every_kind_of_field(seeds: list[Seed]) -> None:
    kinds = {f.kind for seed in seeds for fields in seed.fields for f in fields}
    assert kinds >= {
        "version", "tensor count", "key/value count", "key length", "value type", "string length",
        "array element type", "array length", "tensor name length", "dimension count",
        "dimension", "ggml type", "tensor offset", "alignment", "split.count", "split.no",
        "split.tensors.count",
    }


_LIMITS = {"<B": (0, 2**8 - 1), "<b": (-(2**7), 2**7 - 1), "<H": (0, 2**16 - 1), "<h": (-(2**15), 2**15 - 1),
           "<I": (0, 2**32 - 1), "<i": (-(2**31), 2**31 - 1), "<Q": (0, 2**64 - 1), "<q": (-(2**63), 2**63 - 1)}


def hostile_values(target: Field, file_size: int) -> st.SearchStrategy[int]:
    low, high = _LIMITS[target.fmt]
    v = target.value
    picks = [0, 1, 2, 3, 4, 7, 8, 12, 13, 31, 32, 33, 64, 255, 256, 4096, file_size - 1, file_size,
             file_size + 1, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**60, 2**62, 2**63 - 1, 2**63,
             2**64 - 1, -1, -2, -(2**31), -(2**63), v - 1, v + 1, v * 2, v * 256, v // 2, v ^ (1 << 40)]
    ok = sorted({p for p in picks if low <= p <= high})
    return st.one_of(st.sampled_from(ok), st.integers(low, high))


def _run_everything(seed: Seed, work: Path) -> None:
    """Reader, shard set, both merge layouts; only our errors, nothing written on a refusal."""
    for path in seed.paths:
        try:
            read_gguf(path)
        except GGUFFormatError:
            pass
    try:
        shards = open_shard_set(seed.paths[0])
    except OURS:
        return
    out_dir = work / "out"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / "merged.gguf"
    try:
        merge_builtin(shards, out)
    except OURS:
        assert list(out_dir.iterdir()) == [], "the merger wrote before refusing"
    else:
        merged = read_gguf(out)  # what the merger writes is a GGUF that reads back
        assert len(merged.tensors) == shards.tensor_count
        out.unlink()
    copy = out_dir / "copy.gguf"
    fd = os.open(copy, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_merged(shards, fd, style="quantize-copy")
    except OURS:
        assert copy.stat().st_size == 0, "the quantize-copy layout wrote before refusing"
    finally:
        os.close(fd)
        copy.unlink()


class Hang(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise Hang("one example ran for more than 10 seconds")


def _by_kind(fields: list[Field]) -> dict[str, list[Field]]:
    grouped: dict[str, list[Field]] = {}
    for f in fields:
        grouped.setdefault(f.kind, []).append(f)
    return grouped


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-work")


_LONG = bool(os.environ.get(EXAMPLES_ENV))


@settings(
    max_examples=int(os.environ.get(EXAMPLES_ENV) or CI_EXAMPLES),
    derandomize=not _LONG,  # CI: the same examples every run
    deadline=None,  # a hang is caught by the alarm below; CI machines are too noisy for timings
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_mutated_headers_raise_only_ollamads_errors(seeds: list[Seed], work: Path, data: st.DataObject) -> None:
    import signal

    seed = seeds[data.draw(st.integers(0, len(seeds) - 1), label="seed")]
    shard = data.draw(st.integers(0, len(seed.paths) - 1), label="shard")
    raw = bytearray(seed.originals[shard])
    grouped = _by_kind(seed.fields[shard])
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        kind = data.draw(st.sampled_from(sorted(grouped)), label="kind")
        target = data.draw(st.sampled_from(grouped[kind]), label="field")
        struct.pack_into(target.fmt, raw, target.offset, data.draw(hostile_values(target, len(raw)), label=kind))
    if data.draw(st.integers(0, 3), label="truncate?") == 0:
        raw = raw[: data.draw(st.integers(0, len(raw)), label="cut at")]
    path = seed.paths[shard]
    path.write_bytes(raw)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, 10.0)
    try:
        tracemalloc.start()
        try:
            read_gguf(path)
        except GGUFFormatError:
            pass
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak <= MEMORY_PER_FILE_BYTE * len(raw) + MEMORY_SLACK, (
            f"reading a {len(raw)}-byte file took {peak} bytes of memory")
        _run_everything(seed, work)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        path.write_bytes(seed.originals[shard])


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("key/value count", 2**60),
        ("tensor count", 2**60),
        ("array length", 2**60),
        ("string length", 2**60),
        ("array length", 2**64 - 1),
    ],
)
def test_absurd_counts_are_refused_before_anything_is_allocated(
    seeds: list[Seed], kind: str, value: int
) -> None:
    seed = seeds[0]
    raw = bytearray(seed.originals[0])
    target = next(f for f in seed.fields[0] if f.kind == kind)
    struct.pack_into(target.fmt, raw, target.offset, value)
    path = seed.paths[0]
    path.write_bytes(raw)
    try:
        tracemalloc.start()
        with pytest.raises(GGUFFormatError) as err:
            read_gguf(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        path.write_bytes(seed.originals[0])
    assert str(path) in err.value.message
    assert peak < len(raw) + MEMORY_SLACK, f"{peak} bytes allocated for a {len(raw)}-byte file"


def test_a_deeply_nested_array_is_refused(tmp_path: Path) -> None:
    """An array of arrays of arrays...: llama.cpp refuses nested arrays; so must the reader,
    without recursing once per level."""
    depth = 100_000
    body = struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<I", GGUFValueType.ARRAY)
    body += struct.pack("<IQ", GGUFValueType.ARRAY, 1) * depth + struct.pack("<IQ", GGUFValueType.UINT8, 0)
    path = tmp_path / "nested.gguf"
    path.write_bytes(b"GGUF" + body)
    with pytest.raises(GGUFFormatError) as err:
        read_gguf(path)
    assert "nested" in err.value.message


def test_overlapping_tensor_data_is_refused(seeds: list[Seed], tmp_path: Path) -> None:
    """Two tensors pointing at the same bytes would merge into a valid-looking file with the wrong
    weights; llama.cpp wants each tensor right after the previous one."""
    seed = seeds[0]
    raw = bytearray(seed.originals[1])
    offsets = [f for f in seed.fields[1] if f.kind == "tensor offset"]
    struct.pack_into("<Q", raw, offsets[2].offset, offsets[1].value)
    path = tmp_path / seed.paths[1].name
    path.write_bytes(raw)
    with pytest.raises(GGUFFormatError) as err:
        read_gguf(path)
    assert f"offset {offsets[1].value}, expected {offsets[2].value}" in err.value.message


