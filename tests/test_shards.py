"""Shard naming and whole-set validation (every error a user can meet)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ollamads.errors import GGUFFormatError, ShardSetError
from ollamads.gguf.format import KEY_SPLIT_COUNT, KEY_SPLIT_NO, KEY_SPLIT_TENSORS_COUNT, GGUFWriter
from ollamads.gguf.shards import SHARD_NAME_FORMAT, open_shard_set, parse_shard_name, shard_name
from tests.support.llama_tools import (
    LFS_POINTER,
    model_kv,
    model_tensors,
    split_evenly,
    write_model,
    write_split_set,
)

PREFIX = "DeepSeek-V3.1-UD-TQ1_0"


def test_shard_names() -> None:
    assert SHARD_NAME_FORMAT == "{prefix}-{no:05d}-of-{count:05d}.gguf"
    assert shard_name(PREFIX, 1, 4) == "DeepSeek-V3.1-UD-TQ1_0-00001-of-00004.gguf"
    assert parse_shard_name("DeepSeek-V3.1-UD-TQ1_0-00003-of-00004.gguf") == (PREFIX, 3, 4)
    assert parse_shard_name("a-b-00001-of-00002-00001-of-00002.gguf") == (
        "a-b-00001-of-00002",
        1,
        2,
    )
    assert parse_shard_name("m-123456-of-123456.gguf") == ("m", 123456, 123456)
    for name in (
        "m.gguf",
        "m-1-of-3.gguf",
        "m-000001-of-00003.gguf",
        "m-00001-of-00003.bin",
        "-00001-of-00001.gguf",
    ):
        assert parse_shard_name(name) is None, name


@pytest.fixture
def three(tmp_path: Path) -> list[Path]:
    return write_split_set(tmp_path, PREFIX, split_evenly(model_tensors(), 3))


def test_valid_set(three: list[Path]) -> None:
    (three[0].parent / "unrelated-00001-of-00002.gguf").write_bytes(b"other model")
    (three[0].parent / "notes.txt").write_text("x")
    s = open_shard_set(three[0])
    assert s.first == three[0]
    assert s.paths == tuple(three)
    assert (s.count, s.tensor_count, s.is_split) == (3, len(model_tensors()), True)
    assert s.total_bytes == sum(p.stat().st_size for p in three)
    assert [h.path for h in s.headers] == three
    assert "3 shards" in s.describe() and "8 tensors" in s.describe()


def test_single_file_model(tmp_path: Path) -> None:
    path = write_model(tmp_path / "DeepSeek-R1-UD-IQ1_S.gguf")
    s = open_shard_set(path)
    assert (s.count, s.paths, s.is_split, s.tensor_count) == (1, (path,), False, 8)
    assert "single GGUF file" in s.describe()


def test_one_shard_set_is_split(tmp_path: Path) -> None:
    (path,) = write_split_set(tmp_path, PREFIX, [model_tensors()])
    s = open_shard_set(path)
    assert (s.count, s.is_split) == (1, True)


def test_file_merged_by_llama_gguf_split_is_whole(tmp_path: Path) -> None:
    # A merged file keeps split.no/split.tensors.count and has split.count = 0.
    kv = model_kv() + [
        (KEY_SPLIT_NO, 0, None),
        (KEY_SPLIT_TENSORS_COUNT, 8, None),
        (KEY_SPLIT_COUNT, 0, None),
    ]
    path = write_model(tmp_path / "merged.gguf", kv=kv)
    assert open_shard_set(path).is_split is False


def _error(path: Path, *words: str) -> ShardSetError:
    with pytest.raises(ShardSetError) as info:
        open_shard_set(path)
    for word in words:
        assert word in info.value.message, info.value.message
    assert info.value.hint
    return info.value


def test_first_shard_does_not_exist(tmp_path: Path) -> None:
    _error(tmp_path / shard_name(PREFIX, 1, 3), "does not exist")


def test_shard_renamed_away_from_pattern(three: list[Path]) -> None:
    renamed = three[0].with_name("model.gguf")
    three[0].rename(renamed)
    _error(renamed, "shard 1 of a 3-shard set", "-00001-of-00003.gguf")


def test_not_the_first_shard(three: list[Path]) -> None:
    err = _error(three[1], "shard 2 of 3, not the first")
    assert three[0].name in err.hint


def test_missing_shard(three: list[Path]) -> None:
    three[1].unlink()
    err = _error(three[0], "incomplete", "1 of 3 missing", three[1].name)
    assert str(three[0].parent) in err.hint


def test_many_missing_shards_are_listed_briefly(tmp_path: Path) -> None:
    first = write_split_set(tmp_path, PREFIX, [model_tensors()])[0].rename(
        tmp_path / shard_name(PREFIX, 1, 9)
    )
    _error(first, "8 of 9 missing", shard_name(PREFIX, 2, 9), "and 3 more")


@pytest.mark.parametrize(
    "extra", [shard_name(PREFIX, 1, 2), shard_name(PREFIX, 4, 3), shard_name(PREFIX, 0, 3)]
)
def test_extra_shard(three: list[Path], extra: str) -> None:
    (three[0].parent / extra).write_bytes(three[0].read_bytes())
    _error(three[0], "not part of the 3-shard set", extra)


def test_split_count_mismatch(tmp_path: Path) -> None:
    paths = write_split_set(
        tmp_path, PREFIX, split_evenly(model_tensors(), 3), overrides={2: {KEY_SPLIT_COUNT: 4}}
    )
    _error(paths[0], paths[2].name, "split.count=4", "3 shards")


def test_split_count_missing(tmp_path: Path) -> None:
    paths = write_split_set(
        tmp_path, PREFIX, split_evenly(model_tensors(), 3), overrides={1: {KEY_SPLIT_COUNT: None}}
    )
    _error(paths[0], paths[1].name, "no split.count key")


def test_multi_shard_names_without_split_keys(tmp_path: Path) -> None:
    w = GGUFWriter()
    w.add("general.architecture", "deepseek2")
    paths = [tmp_path / shard_name(PREFIX, i, 2) for i in (1, 2)]
    for p in paths:
        w.write(p)
    _error(paths[0], paths[0].name, "not a shard of a split GGUF")


def test_wrong_split_no(tmp_path: Path) -> None:
    paths = write_split_set(
        tmp_path, PREFIX, split_evenly(model_tensors(), 3), overrides={2: {KEY_SPLIT_NO: 1}}
    )
    _error(paths[0], paths[2].name, "split.no=1", "expected 2")


def test_tensors_count_differs_between_shards(tmp_path: Path) -> None:
    paths = write_split_set(
        tmp_path,
        PREFIX,
        split_evenly(model_tensors(), 3),
        overrides={1: {KEY_SPLIT_TENSORS_COUNT: 9}},
    )
    _error(paths[0], paths[1].name, "split.tensors.count=9", "says 8")


def test_tensors_count_differs_from_tensors_present(tmp_path: Path) -> None:
    groups = split_evenly(model_tensors(), 3)
    overrides = {i: {KEY_SPLIT_TENSORS_COUNT: 10} for i in range(3)}
    paths = write_split_set(tmp_path, PREFIX, groups, overrides=overrides)
    _error(paths[0], "hold 8 tensors", "says 10")


def test_duplicate_tensor_across_shards(tmp_path: Path) -> None:
    tensors = model_tensors()
    groups = [tensors[:4], tensors[3:]]
    overrides = {i: {KEY_SPLIT_TENSORS_COUNT: 9} for i in range(2)}
    paths = write_split_set(tmp_path, PREFIX, groups, overrides=overrides)
    _error(paths[0], repr(tensors[3][0]), paths[0].name, paths[1].name)


def _format_error(path: Path, *words: str) -> None:
    with pytest.raises(GGUFFormatError) as info:
        open_shard_set(path)
    for word in words:
        assert word in info.value.message, info.value.message


def test_truncated_shard(three: list[Path]) -> None:
    with open(three[1], "r+b") as f:
        f.truncate(os.path.getsize(three[1]) - 100)
    _format_error(three[0], three[1].name, "truncated")


def test_shard_is_not_gguf(three: list[Path]) -> None:
    three[2].write_text("<html>Rate limit exceeded</html>")
    _format_error(three[0], three[2].name, "not a GGUF file")


def test_shard_is_lfs_pointer(three: list[Path]) -> None:
    three[1].write_bytes(LFS_POINTER)
    _format_error(three[0], three[1].name, "git-LFS pointer")
