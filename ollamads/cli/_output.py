"""The one way the CLI writes.

stdout carries a command's answer, what a script reads: a table, a plan, a path, a Modelfile,
JSON. stderr carries everything else: progress bars, the steps being taken, warnings, "ready",
errors. Every ``--json`` is written by :func:`data_json`. rich is imported only when a console
is asked for, so ``ollamads --help`` does not pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rich.console import Console


# --- stdout: the answer ----------------------------------------------------------------------


def data(text: str = "", *, newline: bool = True) -> None:
    """A line (or, with ``newline=False``, a text that ends itself) of the answer, on stdout."""
    typer.echo(text, nl=newline)


def data_json(value: object) -> None:
    """The answer as JSON on stdout: indented, non-ASCII kept as is."""
    import json

    typer.echo(json.dumps(value, indent=1, ensure_ascii=False))


def stdout_console(*, soft_wrap: bool = False) -> Console:
    """rich on stdout, for answers drawn as tables (wrapped to the terminal) or, with
    ``soft_wrap``, as lines that a terminal wraps itself."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=soft_wrap)


# --- stderr: everything else -----------------------------------------------------------------


def stderr_console() -> Console:
    """rich on stderr, for progress bars and live messages."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def message(text: str, *, style: str | None = None) -> None:
    """One line about what is happening, on stderr, as written (no markup)."""
    stderr_console().print(text, style=style, markup=False)


def step(text: str) -> None:
    """A step the command is taking (the library's report lines): ``> text``."""
    from rich.markup import escape

    stderr_console().print(f"[bold cyan]>[/] {escape(text)}")


def warning(text: str) -> None:
    from rich.markup import escape

    stderr_console().print(f"[bold yellow]warning:[/] {escape(text)}")


def done(text: str) -> None:
    from rich.markup import escape

    stderr_console().print(f"[green]done:[/] {escape(text)}")


def ready() -> None:
    """The line a supervisor (or a test) waits for: the service answers now."""
    message("ready")


def error(line: str) -> None:
    """An error line, already worded (cli._errors), on stderr; plain, so it works before rich
    would even load and for usage errors."""
    typer.echo(line, err=True)


__all__ = [
    "data",
    "data_json",
    "done",
    "error",
    "message",
    "ready",
    "stderr_console",
    "stdout_console",
    "step",
    "warning",
]
