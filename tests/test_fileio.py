"""The shared writer: copies, writeback pushed while writing, and the trailing hasher."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ollamads.fileio import Copier, TrailingHasher, Writeback

MiB = 1 << 20


class RecordedSyncRange:
    """The real sync_file_range, with each call's range and flags recorded."""

    def __init__(self) -> None:
        from ollamads.fileio import _sync_file_range

        self.real = _sync_file_range()
        assert self.real is not None, "sync_file_range is in every Linux libc"
        self.calls: list[tuple[int, int, int]] = []

    def __call__(self, fd: int, offset: int, nbytes: int, flags: int) -> int:
        self.calls.append((offset, nbytes, flags))
        return int(self.real(fd, offset, nbytes, flags))


def test_writeback_is_pushed_in_steps_and_waits_beyond_the_window(tmp_path: Path) -> None:
    data = os.urandom(16 * MiB)
    recorder = RecordedSyncRange()
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        writer = Writeback(fd, sync_range=recorder, step=MiB, window=4 * MiB)
        for piece in range(0, len(data), MiB // 2):
            os.write(fd, data[piece:piece + MiB // 2])
            writer.advance(MiB // 2)
    finally:
        os.close(fd)
    starts = [(o, n) for o, n, flags in recorder.calls if flags == 2]
    waits = [(o, n) for o, n, flags in recorder.calls if flags == 7]
    # Every byte is handed to the disk once, in order, a step at a time.
    assert starts[0][0] == 0
    assert all(a[0] + a[1] == b[0] for a, b in zip(starts, starts[1:]))
    assert sum(n for _, n in starts) == len(data)
    assert all(n == MiB for _, n in starts)
    # The writer waited for old bytes, so no more than the window was ever in flight.
    assert waits and waits[0][0] == 0
    assert all(a[0] + a[1] == b[0] for a, b in zip(waits, waits[1:]))
    in_flight_at_wait = [sum(n for _, n in starts[:i + 1]) - (w[0] + w[1])
                         for i, w in enumerate(waits)]
    assert max(in_flight_at_wait) <= 4 * MiB
    assert (tmp_path / "out").read_bytes() == data


def test_a_refused_sync_range_turns_pushing_off(tmp_path: Path) -> None:
    calls = []

    def refuses(fd: int, offset: int, nbytes: int, flags: int) -> int:
        calls.append(offset)
        return -1

    writer = Writeback(0, sync_range=refuses, step=1, window=1)
    for _ in range(5):
        writer.advance(10)
    assert calls == [0]


def test_copier_output_and_progress(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.write_bytes(os.urandom(3 * MiB + 17))
    out = tmp_path / "out"
    reported = []
    fd = os.open(out, os.O_RDWR | os.O_CREAT, 0o644)
    src = os.open(source, os.O_RDONLY)
    try:
        os.write(fd, b"head")
        copier = Copier(fd, reported.append)
        assert copier.writeback.position == 4  # it starts where the file's position is
        copier.copy(src, 5, 2 * MiB, lambda: AssertionError("short"))
        copier.write(b"\0" * 3)
        copier.copy(src, 2 * MiB + 5, MiB + 12, lambda: AssertionError("short"))
        with pytest.raises(ValueError, match="ended"):
            copier.copy(src, 3 * MiB + 17, 1, lambda: ValueError("source ended"))
    finally:
        os.close(src)
        os.close(fd)
    body = source.read_bytes()
    assert out.read_bytes() == b"head" + body[5:2 * MiB + 5] + b"\0" * 3 + body[2 * MiB + 5:]
    assert sum(reported) == 3 * MiB + 15


def test_trailing_hasher_matches_hashlib_and_holds_the_writer_back(tmp_path: Path) -> None:
    data = os.urandom(6 * MiB + 5)
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        hasher = TrailingHasher(fd, max_lag=MiB)
        written = 0
        for piece in range(0, len(data), 700_000):
            chunk = data[piece:piece + 700_000]
            os.write(fd, chunk)
            written += len(chunk)
            hasher.wrote(written)
            assert written - hasher._hashed <= MiB  # the writer waited for the hasher
        digest = hasher.hexdigest()
    finally:
        os.close(fd)
    assert digest == hashlib.sha256(data).hexdigest()


def test_libc_loads_by_name_without_find_library(monkeypatch: pytest.MonkeyPatch) -> None:
    """find_library runs `ldconfig -p` in a subprocess; glibc loads by name without it."""
    import ctypes.util

    from ollamads import fileio

    def refuse(name: str) -> str:
        raise AssertionError(f"find_library({name!r}) was called")

    monkeypatch.setattr(ctypes.util, "find_library", refuse)
    fileio.libc.cache_clear()
    try:
        assert fileio.libc() is not None and hasattr(fileio.libc(), "sync_file_range")
    finally:
        fileio.libc.cache_clear()
