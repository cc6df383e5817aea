"""One writer at a time: advisory locks on the files ollamads writes.

Two processes writing one ``.part`` or one merged file would corrupt it, and two registering one
model would race. Each such job holds an ``flock`` on a lock file next to what it writes; the
second job fails at once with a message saying who holds it. A killed process releases its lock.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ollamads.errors import BusyError


@contextlib.contextmanager
def exclusive(lock_path: Path, what: str) -> Iterator[None]:
    """Hold ``lock_path`` for the block, or raise :class:`BusyError` naming ``what``."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; run one job at a time
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            raise BusyError(
                f"another ollamads process{f' (pid {holder})' if holder else ''} is {what}",
                "wait for it to finish, or stop it first; then re-run",
            ) from None
        _write_holder(fd, str(os.getpid()))
        try:
            yield
        finally:
            _write_holder(fd, "")
    finally:
        os.close(fd)


def _write_holder(fd: int, pid: str) -> None:
    # The pid only names the holder in the other process's message; the flock is the lock, and
    # it holds on a disk too full to write the pid.
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, pid.encode("ascii"), 0)
    except OSError:
        pass


__all__ = ["exclusive"]
