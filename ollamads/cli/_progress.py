"""Drawing the library's :class:`~ollamads.progress.ProgressEvent` s: one bar per phase and item.

On a terminal: a rich bar per file and phase (its state word, bytes, speed, time left) and, while
downloading, one more bar for all files together. Off a terminal (logs, CI): one line each time
an item changes state, never a progress bar's carriage returns.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from ollamads.progress import Progress, ProgressEvent

_TOTAL = "all files"


NAME_WIDTH = 30


def _short(item: str) -> str:
    """The file name, cut at the front to fit: the end (shard number) is what tells them apart."""
    name = item.rsplit("/", 1)[-1]
    return name if len(name) <= NAME_WIDTH else "…" + name[-(NAME_WIDTH - 1):]


class _Bars:
    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.table import Column
        from rich.text import Text

        from ollamads.units import format_bytes

        class SpeedColumn(ProgressColumn):
            """Bytes a second in ollamads' units (rich's own speed column is decimal)."""

            def render(self, task: Any) -> Text:
                speed = task.finished_speed or task.speed
                return Text("?" if speed is None else f"{format_bytes(speed)}/s")

        def fixed(width: int) -> Column:
            return Column(no_wrap=True, min_width=width, max_width=width)

        self.bars = Progress(
            TextColumn("{task.fields[phase]:>8}", table_column=fixed(8)),
            TextColumn("{task.description}", table_column=fixed(NAME_WIDTH)),
            BarColumn(bar_width=16),
            DownloadColumn(binary_units=True, table_column=fixed(21)), SpeedColumn(table_column=fixed(12)),
            TimeRemainingColumn(table_column=fixed(8)),
            TextColumn("{task.fields[state]}", table_column=Column(no_wrap=True)),
            console=console, transient=True,
        )
        self.tasks: dict[tuple[str, str], Any] = {}
        self.sizes: dict[str, tuple[int, int]] = {}
        self.lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        with self.lock:
            key = (event.phase, event.item)
            if event.phase == "download" and ("download", _TOTAL) not in self.tasks:
                # The total comes first, above the files.
                self.tasks[("download", _TOTAL)] = self.bars.add_task(
                    _TOTAL, total=None, phase="download", state="")
            if key not in self.tasks:
                # A resumed file starts its bar where the part ends, so the speed is honest.
                self.tasks[key] = self.bars.add_task(
                    _short(event.item), total=event.total or None, completed=event.done,
                    phase=event.phase, state=event.state,
                )
            self.bars.update(self.tasks[key], completed=event.done, total=event.total or None,
                             state=event.state)
            if event.phase == "download":
                self._update_total(event)

    def _update_total(self, event: ProgressEvent) -> None:
        self.sizes[event.item] = (event.done, event.total)
        done = sum(d for d, _ in self.sizes.values())
        total = sum(t for _, t in self.sizes.values())
        self.bars.update(self.tasks[("download", _TOTAL)], completed=done, total=total)


class _Lines:
    """Off a terminal: one line per change of state."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.states: dict[tuple[str, str], str] = {}
        self.lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        from ollamads.units import format_bytes

        with self.lock:
            key = (event.phase, event.item)
            if event.state and self.states.get(key) != event.state:
                self.states[key] = event.state
                self.console.print(
                    f"{event.phase}: {event.item} {event.state} "
                    f"({format_bytes(event.done)} of {format_bytes(event.total)})",
                    soft_wrap=True,
                )


def progress_display(console: Console | None = None) -> contextlib.AbstractContextManager[Progress]:
    """A :data:`~ollamads.progress.Progress` callback that draws; bars vanish when done."""
    return _display(console, _Bars, _Lines)


@contextlib.contextmanager
def _display(console: Console | None, bars_type: Callable[[Console], _Bars | _Steps],
             lines_type: Callable[[Console], Progress]) -> Iterator[Progress]:
    """Bars on a terminal (stderr's console unless given), lines elsewhere."""
    if console is None:
        from ollamads.cli._output import stderr_console

        console = stderr_console()
    if not console.is_terminal:
        yield lines_type(console)
        return
    bars = bars_type(console)
    with bars.bars:
        yield bars


class _Steps:
    """Counted steps (benchmark runs), not bytes: a bar per item with ``done/total`` and state."""

    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bars = Progress(
            TextColumn("{task.fields[phase]:>8}"), TextColumn("{task.description}"),
            BarColumn(bar_width=16), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[state]}"), console=console, transient=True,
        )
        self.tasks: dict[tuple[str, str], Any] = {}
        self.lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        with self.lock:
            key = (event.phase, event.item)
            if key not in self.tasks:
                self.tasks[key] = self.bars.add_task(event.item, total=event.total or None,
                                                     phase=event.phase, state=event.state)
            self.bars.update(self.tasks[key], completed=event.done, total=event.total or None,
                             state=event.state)


class _StepLines(_Lines):
    """Off a terminal: one line per change of state, counted rather than in bytes."""

    def __call__(self, event: ProgressEvent) -> None:
        with self.lock:
            key = (event.phase, event.item)
            if event.state and self.states.get(key) != event.state:
                self.states[key] = event.state
                self.console.print(f"{event.phase}: {event.item} {event.state}", soft_wrap=True)


def steps_display(console: Console | None = None) -> contextlib.AbstractContextManager[Progress]:
    """Like :func:`progress_display`, for events that count steps (``bench``, ``sweep``)."""
    return _display(console, _Steps, _StepLines)
