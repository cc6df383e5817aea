"""SIGTERM and SIGHUP end a foreground command the way Ctrl-C does: through its cleanup.

Python's default for them is to die on the spot, which would leave a child started in its own
session (``ollama serve``, ``rpc-server``) running with nobody to stop it.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from ollamads.children import ChildService

_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class _Stopped(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, _frame: object) -> None:
    raise _Stopped(signum)


@contextmanager
def exit_on_signals() -> Iterator[None]:
    """Inside, SIGTERM/SIGHUP unwind the stack (``finally`` blocks run), then exit 128+N."""
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in _SIGNALS}
    try:
        yield
    except _Stopped as stopped:
        raise typer.Exit(128 + stopped.signum) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_in_foreground(service: ChildService) -> None:
    """Say "ready", then run until the child server exits, SIGINT/SIGTERM/SIGHUP passed on to
    it; exit 128+N when signal N stopped it. The caller stops it in a ``finally``."""
    from ollamads.cli._output import ready

    ready()
    stopped_by = service.wait()
    if stopped_by is not None:
        raise typer.Exit(128 + stopped_by)
