"""The built-in merger: correct output, byte-identical to llama-gguf-split, safe failures."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
from pathlib import Path

import gguf
import numpy as np
import pytest

from ollamads.errors import (
    GGUFFormatError,
    InsufficientSpaceError,
    MergeToolError,
    OllamadsError,
    OutputExistsError,
    ShardSetError,
    ToolNotFoundError,
)
from ollamads.gguf import merge as merge_mod
from ollamads.gguf.format import (
    KEY_SPLIT_COUNT,
    KEY_SPLIT_NO,
    KEY_SPLIT_TENSORS_COUNT,
    GGUFValueType,
    read_gguf,
)
from ollamads.gguf.merge import (
    find_llama_gguf_split,
    merge,
    merge_builtin,
    merge_plan,
    merge_with_llama_gguf_split,
)
from ollamads.gguf.shards import open_shard_set, shard_name
from tests.support.llama_tools import (
    model_kv,
    model_tensors,
    require_gguf_split,
    split_evenly,
    write_model,
    write_split_set,
)

PREFIX = "DeepSeek-V3.1-UD-TQ1_0"


@pytest.fixture
def gguf_split_bin() -> str:
    return require_gguf_split()


@pytest.fixture
def shards(tmp_path: Path) -> list[Path]:
    (tmp_path / "in").mkdir()
    return write_split_set(tmp_path / "in", PREFIX, split_evenly(model_tensors(), 3))


def _files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


# --- what the merged file holds ---------------------------------------------------------


def test_merged_file_content(shards: list[Path], tmp_path: Path) -> None:
    out = merge_builtin(open_shard_set(shards[0]), tmp_path / "merged.gguf")
    merged = read_gguf(out)
    # Shard 1's KVs in order, split.count moved to the end as u16 0 (llama-gguf-split's rule).
    assert list(merged.kv) == [k for k, _, _ in model_kv()] + [
        KEY_SPLIT_NO,
        KEY_SPLIT_TENSORS_COUNT,
        KEY_SPLIT_COUNT,
    ]
    assert merged.kv[KEY_SPLIT_COUNT] == (GGUFValueType.UINT16, 0)
    assert merged.kv[KEY_SPLIT_NO] == (GGUFValueType.UINT16, 0)
    assert merged.kv[KEY_SPLIT_TENSORS_COUNT] == (GGUFValueType.INT32, 8)
    assert open_shard_set(out).is_split is False
    # Trailing size-1 dimensions are dropped, as ggml_n_dims does.
    shapes = {t.name: t.shape for t in merged.tensors}
    assert shapes["output_norm.weight"] == (7,) and shapes["blk.1.attn_norm.weight"] == (5,)
    theirs = gguf.GGUFReader(out)
    assert [t.name for t in theirs.tensors] == [t[0] for t in model_tensors()]
    for ref, (_, _, _, data) in zip(theirs.tensors, model_tensors()):
        assert ref.data_offset % 32 == 0
        assert ref.data.tobytes() == data
    assert theirs.fields["general.name"].contents() == "Tiny DeepSeek ｜▁ naïve ünïcode"


def test_output_does_not_depend_on_how_the_model_was_split(tmp_path: Path) -> None:
    outs = []
    for n in (1, 2, 3, 8):
        d = tmp_path / f"s{n}"
        d.mkdir()
        paths = write_split_set(d, PREFIX, split_evenly(model_tensors(), n))
        outs.append(merge_builtin(open_shard_set(paths[0]), d / "out.gguf").read_bytes())
    assert all(o == outs[0] for o in outs)


def test_alignment_key_is_applied_unlike_llama_gguf_split(tmp_path: Path) -> None:
    paths = write_split_set(
        tmp_path, PREFIX, split_evenly(model_tensors(), 2), kv=model_kv(alignment=64)
    )
    out = merge_builtin(open_shard_set(paths[0]), tmp_path / "out.gguf")
    theirs = gguf.GGUFReader(out)
    assert all(t.data_offset % 64 == 0 for t in theirs.tensors)
    assert [t.data.tobytes() for t in theirs.tensors] == [t[3] for t in model_tensors()]


def test_progress_reports_bytes_written(shards: list[Path], tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    out = merge_builtin(
        open_shard_set(shards[0]), tmp_path / "out.gguf", progress=lambda d, t: calls.append((d, t))
    )
    total = out.stat().st_size
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_read_write_fallback_gives_the_same_bytes(
    shards: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = open_shard_set(shards[0])
    want = merge_builtin(s, tmp_path / "a.gguf").read_bytes()
    calls = []

    def refuse(*args: object, **kwargs: object) -> int:
        calls.append(args)
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "copy_file_range", refuse, raising=False)
    assert merge_builtin(s, tmp_path / "b.gguf").read_bytes() == want
    assert len(calls) == 1  # it gives up on copy_file_range after the first refusal
    monkeypatch.delattr(os, "copy_file_range")
    assert merge_builtin(s, tmp_path / "c.gguf").read_bytes() == want


def test_merged_file_is_readable_by_others(shards: list[Path], tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        out = merge_builtin(open_shard_set(shards[0]), tmp_path / "out.gguf")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644  # an ollama service user must read it


# --- refusing and cleaning up -----------------------------------------------------------


def test_existing_output_needs_force(shards: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out.gguf"
    out.write_text("keep me")
    with pytest.raises(OutputExistsError) as info:
        merge(shards[0], out)
    assert "--force" in info.value.hint and out.read_text() == "keep me"
    with pytest.raises(OutputExistsError):
        merge_plan(shards[0], out)
    result = merge(shards[0], out, force=True)
    assert read_gguf(result.out).tensors and result.nbytes == out.stat().st_size


def test_output_must_not_be_a_shard(shards: list[Path]) -> None:
    before = shards[1].read_bytes()
    with pytest.raises(OutputExistsError, match="one of the input shards"):
        merge(shards[0], shards[1], force=True)
    assert shards[1].read_bytes() == before


def test_missing_output_directory(shards: list[Path], tmp_path: Path) -> None:
    with pytest.raises(OllamadsError, match="does not exist"):
        merge(shards[0], tmp_path / "nope" / "out.gguf")


@pytest.mark.parametrize("exc", [OSError(errno.EIO, "I/O error"), KeyboardInterrupt()])
def test_nothing_left_behind_after_failure(
    shards: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    from ollamads.fileio import Copier

    real_copy = Copier.copy
    calls = []

    def failing_copy(self: Copier, *args: object) -> None:
        calls.append(args)
        if len(calls) == 3:
            raise exc
        real_copy(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Copier, "copy", failing_copy)
    before = _files(tmp_path)
    with pytest.raises(type(exc)):
        merge(shards[0], tmp_path / "out.gguf")
    assert _files(tmp_path) == before


def test_nothing_written_for_an_invalid_set(shards: list[Path], tmp_path: Path) -> None:
    shards[2].unlink()
    with pytest.raises(ShardSetError, match="missing"):
        merge(shards[0], tmp_path / "out.gguf")
    assert _files(tmp_path) == {"in"}


def test_not_enough_disk_space(
    shards: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ollamads.units

    monkeypatch.setattr(ollamads.units, "disk_free", lambda _: 1000)
    monkeypatch.setattr(merge_mod, "disk_free", lambda _: 1000)
    with pytest.raises(InsufficientSpaceError) as info:
        merge(shards[0], tmp_path / "out.gguf")
    assert info.value.message.startswith("not enough disk for the merge: merged file ")
    assert f"in {tmp_path}" in info.value.message and info.value.message.endswith("1000 B free")
    assert info.value.hint
    assert _files(tmp_path) == {"in"}
    assert merge_plan(shards[0], tmp_path / "out.gguf").enough_space is False


def test_single_file_has_nothing_to_merge(tmp_path: Path) -> None:
    path = write_model(tmp_path / "model.gguf")
    with pytest.raises(ShardSetError, match="nothing to merge"):
        merge(path, tmp_path / "out.gguf")
    assert _files(tmp_path) == {"model.gguf"}


def test_plan_writes_nothing(shards: list[Path], tmp_path: Path) -> None:
    plan = merge_plan(shards[0], tmp_path / "out.gguf")
    assert (plan.method, plan.binary, plan.out, plan.shards.count) == (
        "builtin",
        None,
        tmp_path / "out.gguf",
        3,
    )
    assert plan.enough_space and plan.disk_free > 0
    assert _files(tmp_path) == {"in"}
    assert merge(shards[0], plan.out).nbytes == plan.nbytes


# --- finding and running llama-gguf-split -------------------------------------------------


def _fake_tool(directory: Path, name: str, script: str = "exit 0") -> Path:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return path


def test_find_llama_gguf_split_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path = _fake_tool(tmp_path, "llama-gguf-split")
    from_env = _fake_tool(tmp_path, "env-tool")
    explicit = _fake_tool(tmp_path, "explicit-tool")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("OLLAMADS_GGUF_SPLIT", raising=False)
    assert find_llama_gguf_split() == str(on_path)
    monkeypatch.setenv("OLLAMADS_GGUF_SPLIT", str(from_env))
    assert find_llama_gguf_split() == str(from_env)
    assert find_llama_gguf_split(str(explicit)) == str(explicit)
    monkeypatch.setenv("OLLAMADS_GGUF_SPLIT", str(tmp_path / "gone"))
    with pytest.raises(ToolNotFoundError, match="OLLAMADS_GGUF_SPLIT"):
        find_llama_gguf_split()
    with pytest.raises(ToolNotFoundError):
        find_llama_gguf_split(str(tmp_path / "gone"))


def test_llama_gguf_split_not_found(
    shards: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("OLLAMADS_GGUF_SPLIT", raising=False)
    assert find_llama_gguf_split() is None
    with pytest.raises(ToolNotFoundError) as info:
        merge(shards[0], tmp_path / "out.gguf", method="llama-gguf-split")
    assert "OLLAMADS_GGUF_SPLIT" in info.value.hint and "builtin" in info.value.hint
    assert _files(tmp_path) == {"in"}


def test_llama_gguf_split_failure_is_reported_and_cleaned_up(
    shards: list[Path], tmp_path: Path
) -> None:
    # The real tool rarely fails on valid input; a stand-in shows how a failure is reported.
    tool = _fake_tool(
        tmp_path,
        "tool",
        'printf "partial" > "$3"\n'
        'echo "gguf_merge: reading ... done" >&2\n'
        'echo "error: disk on fire" >&2\n'
        "exit 3",
    )
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(MergeToolError) as info:
        merge(shards[0], out_dir / "out.gguf", method="llama-gguf-split", binary=str(tool))
    assert info.value.message.endswith("(exit 3): error: disk on fire")
    assert _files(out_dir) == set()


def test_interrupted_tool_is_killed_and_cleaned_up(shards: list[Path], tmp_path: Path) -> None:
    tool = _fake_tool(tmp_path, "tool", 'printf "partial" > "$3"\nexec sleep 30')
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    seen: list[set[str]] = []

    def interrupt(done: int, total: int) -> None:
        seen.append(_files(out_dir))
        if len(seen) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        merge(
            shards[0],
            out_dir / "out.gguf",
            method="llama-gguf-split",
            binary=str(tool),
            progress=interrupt,
        )
    assert any(names for names in seen)  # the partial file did exist
    assert _files(out_dir) == set()


# --- byte identity with the real llama-gguf-split -------------------------------------------


def _run(binary: str, *args: object) -> None:
    subprocess.run([binary, *map(str, args)], check=True, capture_output=True)


def _assert_identical(first: Path, out_dir: Path, binary: str) -> bytes:
    s = open_shard_set(first)
    ours = merge_builtin(s, out_dir / "builtin.gguf")
    calls: list[tuple[int, int]] = []
    theirs = merge_with_llama_gguf_split(
        s, out_dir / "tool.gguf", binary=binary, progress=lambda d, t: calls.append((d, t))
    )
    assert ours.read_bytes() == theirs.read_bytes()
    assert calls[-1][0] == calls[-1][1] > 0
    return ours.read_bytes()


@pytest.mark.parametrize(
    "split_args",
    [
        ["--split-max-tensors", "2"],
        ["--split-max-tensors", "5"],
        ["--split-max-size", "1M"],
        ["--split-max-tensors", "3", "--no-tensor-first-split"],
    ],
    ids=["max-tensors-2", "max-tensors-5", "max-size-1M", "no-tensor-first-split"],
)
def test_identical_to_llama_gguf_split_on_its_own_splits(
    tmp_path: Path, gguf_split_bin: str, split_args: list[str]
) -> None:
    model = write_model(tmp_path / "model.gguf", tensors=model_tensors(big=True))
    (tmp_path / "split").mkdir()
    _run(gguf_split_bin, "--split", *split_args, model, tmp_path / "split" / "m")
    first = (
        tmp_path / "split" / "m-00001-of-{:05d}.gguf".format(len(os.listdir(tmp_path / "split")))
    )
    assert open_shard_set(first).count > 1
    merged = _assert_identical(first, tmp_path, gguf_split_bin)
    # Splitting then merging gives back the model's data (n_dims aside).
    assert [t.data.tobytes() for t in gguf.GGUFReader(tmp_path / "builtin.gguf").tensors] == [
        t[3] for t in model_tensors(big=True)
    ]
    assert len(merged) > 3_000_000


@pytest.mark.parametrize(
    "split_keys_at", [None, 0, 5], ids=["keys-last", "keys-first", "keys-middle"]
)
@pytest.mark.parametrize("n", [2, 3, 8])
def test_identical_to_llama_gguf_split_on_our_shards(
    tmp_path: Path, gguf_split_bin: str, n: int, split_keys_at: int | None
) -> None:
    (tmp_path / "in").mkdir()
    paths = write_split_set(
        tmp_path / "in", PREFIX, split_evenly(model_tensors(seed=n), n), split_keys_at=split_keys_at
    )
    _assert_identical(paths[0], tmp_path, gguf_split_bin)


def test_identical_to_llama_gguf_split_on_gguf_py_shards(
    tmp_path: Path, gguf_split_bin: str
) -> None:
    (tmp_path / "in").mkdir()
    w = gguf.GGUFWriter(tmp_path / "in" / "ref.gguf", "deepseek2", split_max_tensors=2)
    w.add_string("general.name", "gguf-py ｜▁")
    w.add_array("tokenizer.ggml.tokens", ["a", "ü"])
    w.add_bool("deepseek2.expert_weights_norm", True)
    w.add_uint32("deepseek2.block_count", 1)
    rng = np.random.default_rng(1)
    w.add_tensor("a", rng.standard_normal((1, 7), dtype=np.float32))  # shape [7, 1]: 2 dims on disk
    w.add_tensor("b", rng.standard_normal((3, 33)).astype(np.float16))
    w.add_tensor("c", rng.standard_normal((1, 1, 5), dtype=np.float32))
    w.add_tensor("d", rng.standard_normal((2, 64), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    first = tmp_path / "in" / shard_name("ref", 1, 2)
    assert [t.shape for t in read_gguf(first).tensors] == [(7, 1), (33, 3)]
    _assert_identical(first, tmp_path, gguf_split_bin)


def test_llama_gguf_split_ignores_general_alignment(tmp_path: Path, gguf_split_bin: str) -> None:
    # Upstream bug: the tool copies general.alignment=64 but pads to 32, so its output is
    # rejected (by llama.cpp too); the built-in merger applies the alignment instead.
    (tmp_path / "in").mkdir()
    kv = model_kv(alignment=64)
    paths = write_split_set(tmp_path / "in", PREFIX, split_evenly(model_tensors(), 2), kv=kv)
    s = open_shard_set(paths[0])
    theirs = merge_with_llama_gguf_split(s, tmp_path / "tool.gguf", binary=gguf_split_bin)
    with pytest.raises(GGUFFormatError, match="not aligned to 64"):
        read_gguf(theirs)
    ours = read_gguf(merge_builtin(s, tmp_path / "builtin.gguf"))
    assert ours.alignment == 64 and len(ours.tensors) == 8


def test_merge_with_the_real_tool_via_merge(
    shards: list[Path], tmp_path: Path, gguf_split_bin: str
) -> None:
    result = merge(
        shards[0], tmp_path / "out.gguf", method="llama-gguf-split", binary=gguf_split_bin
    )
    assert result.method == "llama-gguf-split"
    assert result.out.read_bytes() == merge(shards[0], tmp_path / "b.gguf").out.read_bytes()
    assert _files(tmp_path) == {"in", "out.gguf", "b.gguf"}
    assert merge_plan(
        shards[0], tmp_path / "c.gguf", method="llama-gguf-split", binary=gguf_split_bin
    ).binary == str(Path(shutil.which(gguf_split_bin) or gguf_split_bin))
