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
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            raise BusyError(
                f"another ollamads process{f' (pid {holder})' if holder else ''} is {what}",
                "wait for it to finish, or stop it first; then re-run",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()


__all__ = ["exclusive"]
