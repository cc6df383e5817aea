"""The one progress event that long work reports, and the callback type that receives it.

The library never draws anything: it calls ``progress(ProgressEvent(...))`` and the CLI turns
the events into one bar per phase and item (``ollamads/cli/_progress.py``). Callbacks may be
called from worker threads; the parallel download serialises its calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Phase = Literal["verify", "download", "merge", "place", "upload", "create", "write", "load", "bench",
                "sweep"]


@dataclass(frozen=True)
class ProgressEvent:
    """``done`` of ``total`` bytes of ``item`` in ``phase``; ``state`` is a word for people
    (``queued``, ``resumed``, ``verifying``, ``done``, ``hard link``...)."""

    phase: Phase
    item: str
    done: int
    total: int
    state: str = ""

    @property
    def finished(self) -> bool:
        return self.total > 0 and self.done >= self.total


Progress = Callable[[ProgressEvent], None]


def no_progress(event: ProgressEvent) -> None:
    """The default callback: ignore everything."""


def bytes_callback(progress: Progress | None, phase: Phase, item: str) -> Callable[[int, int], None]:
    """A ``(done, total)`` callback for one item, for loops that only count bytes."""
    report = progress or no_progress
    return lambda done, total: report(ProgressEvent(phase, item, done, total))


__all__ = ["Phase", "Progress", "ProgressEvent", "bytes_callback", "no_progress"]
