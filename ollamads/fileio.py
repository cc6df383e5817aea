"""Writing big files safely: atomic outputs, kernel-side copies, preallocation.

One home for the loops every writer shares (the merger, the template rewrite, blob placement,
the downloader), so each gets the same guarantees: an output appears under its final name only
when complete and flushed, a failure leaves no partial file behind, and copies stay in the
kernel (``copy_file_range``) where the filesystem allows.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import functools
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ollamads.units import disk_full_error, is_disk_full

# copy_file_range stays in the kernel, so big chunks cost nothing; they only pace progress.
COPY_CHUNK = 64 << 20
READ_CHUNK = 8 << 20
# Written bytes are handed to the disk in steps this big (sync_file_range), so writing overlaps
# reading. Left to itself, the kernel starts writing back only once 10% of RAM is dirty: on a
# 24 GiB machine that is a whole 2.5 GB model, all of it written during the final fsync.
WRITEBACK_STEP = 32 << 20
# The writer waits for the disk once this much is in flight, so a 250 GB merge keeps at most
# this much dirty in the page cache instead of pressing on every other program's memory.
WRITEBACK_WINDOW = 512 << 20
# sync_file_range(2) flags.
_SFR_WAIT_BEFORE, _SFR_WRITE, _SFR_WAIT_AFTER = 1, 2, 4
# copy_file_range is refused across some filesystems/kernels; read/write always works.
NO_COPY_FILE_RANGE = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM})
PARTIAL_MARK = ".partial-"


def partial_name(out: Path) -> Path:
    """A hidden, unique, not-yet-existing name beside ``out``."""
    return out.parent / f".{out.name}{PARTIAL_MARK}{secrets.token_hex(4)}"


def hold_lock(path: Path) -> int:
    """Open ``path`` (a file or a folder) and hold an exclusive flock on it; returns the fd.

    A writer holds one on its temp file for as long as it writes: a temp file nobody holds
    was left by a killed process and may be removed (:func:`remove_stale`)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def remove_stale(directory: Path, pattern: str) -> list[Path]:
    """Remove the temp files (or folders) matching ``pattern`` whose writer is gone."""
    removed = []
    for path in directory.glob(pattern):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its writer is alive
        finally:
            os.close(fd)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


@contextmanager
def atomic_output(out: Path) -> Iterator[Path]:
    """A path to write ``out`` at; renamed to ``out`` when the block succeeds.

    The path lies in a hidden folder beside ``out`` that is deleted afterwards, whatever
    happens; a folder left by a killed process is removed by the next writer of ``out``."""
    remove_stale(out.parent, f".{out.name}{PARTIAL_MARK}*")
    folder = partial_name(out)
    folder.mkdir()
    fd = hold_lock(folder)
    try:
        tmp = folder / out.name
        yield tmp
        os.replace(tmp, out)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)


def write_small_file(path: Path, data: bytes) -> None:
    """Write a small file (a record, a Modelfile) whole or not at all: a temp file beside it,
    renamed over it. A full disk is one line naming the folder, and leaves no temp file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full_error(path.parent, len(data), path.name) from None
        raise


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class Copier:
    """Writes to one destination fd at its current position: byte ranges copied from source fds
    and small pieces (headers, padding), with the written data pushed to the disk as it goes.
    """

    def __init__(self, dst_fd: int, report: Callable[[int], None] = lambda n: None) -> None:
        self.dst_fd = dst_fd
        self.report = report
        self.use_copy_file_range = hasattr(os, "copy_file_range")
        try:
            self.writeback = Writeback(dst_fd, os.lseek(dst_fd, 0, os.SEEK_CUR))
        except OSError:  # not seekable (a pipe): nothing to push
            self.writeback = Writeback(dst_fd)
            self.writeback.sync_range = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        write_all(self.dst_fd, data)
        self._advance(len(data))

    def copy(self, src_fd: int, offset: int, nbytes: int, on_short: Callable[[], Exception]) -> None:
        """Copy ``nbytes`` from ``offset``; ``on_short()`` is raised if the source ends early."""
        while nbytes:
            n = self._copy_some(src_fd, offset, nbytes)
            if n == 0:
                raise on_short()
            offset += n
            nbytes -= n
            self._advance(n)

    def _advance(self, n: int) -> None:
        self.writeback.advance(n)
        self.report(n)

    def _copy_some(self, src_fd: int, offset: int, nbytes: int) -> int:
        if self.use_copy_file_range:
            try:
                return os.copy_file_range(src_fd, self.dst_fd, min(nbytes, COPY_CHUNK), offset)
            except OSError as e:
                if e.errno not in NO_COPY_FILE_RANGE:
                    raise
                self.use_copy_file_range = False
        data = os.pread(src_fd, min(nbytes, READ_CHUNK), offset)
        write_all(self.dst_fd, data)
        return len(data)


SyncRange = Callable[[int, int, int, int], int]


class Writeback:
    """Asks the kernel to write a file's new bytes to the disk while more are being written.

    Every :data:`WRITEBACK_STEP` bytes start their writeback; once more than
    :data:`WRITEBACK_WINDOW` are in flight, the writer waits for the oldest to reach the disk.
    The final fsync then has little left to do. Where ``sync_file_range`` is missing or refused
    (not Linux, a pipe) this does nothing and the fsync does it all, as before.
    """

    def __init__(self, fd: int, start: int = 0, *, sync_range: SyncRange | None = None,
                 step: int = WRITEBACK_STEP, window: int = WRITEBACK_WINDOW) -> None:
        self.fd = fd
        self.sync_range = sync_range if sync_range is not None else _sync_file_range()
        self.step, self.window = step, window
        self.position = self.started = self.settled = start

    def advance(self, n: int) -> None:
        """``n`` more bytes were written at the end of what came before."""
        self.position += n
        if self.sync_range is None or self.position - self.started < self.step:
            return
        if not self._call(self.started, self.position - self.started, _SFR_WRITE):
            return
        self.started = self.position
        if self.started - self.settled > self.window:
            end = self.started - self.window // 2
            self._call(self.settled, end - self.settled, _SFR_WAIT_BEFORE | _SFR_WRITE | _SFR_WAIT_AFTER)
            self.settled = end

    def _call(self, offset: int, nbytes: int, flags: int) -> bool:
        """True while pushing works; a refusal turns it off (the caller's fsync still flushes all)."""
        if self.sync_range is not None and self.sync_range(self.fd, offset, nbytes, flags) != 0:
            self.sync_range = None
        return self.sync_range is not None


@functools.cache
def libc() -> ctypes.CDLL | None:
    """The C library, for the system calls Python's os module lacks; None where none loads.

    Linux's glibc is tried by name first: ``ctypes.util.find_library`` runs ``ldconfig -p`` in
    a subprocess, which costs every command that merely writes a file."""
    for find in (lambda: "libc.so.6", lambda: ctypes.util.find_library("c")):
        name = find()
        if name:
            try:
                return ctypes.CDLL(name, use_errno=True)
            except OSError:
                continue
    return None


def _fallocate() -> Callable[..., int] | None:
    func = getattr(libc(), "fallocate", None)
    if func is not None:
        func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    return func


def _sync_file_range() -> SyncRange | None:
    func = getattr(libc(), "sync_file_range", None)
    if func is not None:
        func.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    return func


def preallocate(fd: int, size: int) -> bool:
    """Reserve ``size`` bytes for ``fd`` (a full disk fails now, not 100 GB later).

    Uses the fallocate system call, never glibc's posix_fallocate, which on filesystems
    without it writes zeros over the whole file. Returns False where it is unsupported; the
    file is then only extended (sparse). Raises OSError(ENOSPC) when the disk cannot hold it.
    """
    func = _fallocate()
    if func is not None and size > 0:
        if func(fd, 0, 0, size) == 0:
            return True
        err = ctypes.get_errno()
        if err in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(err, os.strerror(err))
    os.ftruncate(fd, size)
    return False


def allocated_bytes(path: Path) -> int:
    """Disk space a (possibly sparse or preallocated) file holds now; 0 if it is missing."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return 0
    return getattr(stat, "st_blocks", 0) * 512 or stat.st_size


class TrailingHasher:
    """sha256 of what a writer puts into ``fd``, computed in a thread a little behind it.

    The writer copies in the kernel (``copy_file_range``) and calls :meth:`wrote` with its
    position; the hasher reads the bytes back from the page cache, where they just landed. The
    writer waits when it is more than ``max_lag`` ahead, so at any model size the bytes are
    still cached when they are hashed (the hash is the slower of the two here) and nothing is
    read from the disk twice. ``fd`` must be open for reading.
    """

    def __init__(self, fd: int, *, max_lag: int = 512 << 20) -> None:
        import hashlib
        import threading

        self.fd = fd
        self.max_lag = max_lag
        self._hasher = hashlib.sha256()
        self._written = 0
        self._hashed = 0
        self._closed = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="ollamads-hash", daemon=True)
        self._thread.start()

    def wrote(self, position: int) -> None:
        with self._cond:
            self._written = position
            self._cond.notify_all()
            while self._written - self._hashed > self.max_lag and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise self._error

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while self._hashed >= self._written and not self._closed:
                        self._cond.wait()
                    start, end = self._hashed, self._written
                    if start >= end and self._closed:
                        return
                data = os.pread(self.fd, min(READ_CHUNK, end - start), start)
                if not data:
                    raise OSError(f"output ended at {start} while hashing it")
                self._hasher.update(data)  # outside the lock: the writer never waits for it
                with self._cond:
                    self._hashed += len(data)
                    self._cond.notify_all()
        except BaseException as exc:
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def hexdigest(self) -> str:
        """Wait for the hasher to catch up with the last :meth:`wrote` and return the digest."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._hasher.hexdigest()

    def abandon(self) -> None:
        with self._cond:
            self._closed = True
            self._written = self._hashed
            self._cond.notify_all()
        self._thread.join()


__all__ = [
    "COPY_CHUNK",
    "PARTIAL_MARK",
    "READ_CHUNK",
    "Copier",
    "TrailingHasher",
    "Writeback",
    "allocated_bytes",
    "atomic_output",
    "hold_lock",
    "partial_name",
    "preallocate",
    "pwrite_all",
    "remove_stale",
    "write_all",
    "write_small_file",
]
