"""The ``ollamads`` command: thin typer commands over the library.

Only this package prints and exits. A usage error (unknown option, missing argument, a value
outside a choice) gets typer's usage message and exit code 2; every other failure becomes one
line on stderr (what is wrong, what to do) and exit code 1; Ctrl-C exits 130. Set
OLLAMADS_DEBUG=1 for tracebacks.
"""

from __future__ import annotations

import os
import sys

import typer

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    from ollamads.cli._output import error
    from ollamads.cli.app import app

    try:
        # Outside standalone mode typer returns the exit code of a typer.Exit (130 for Ctrl-C).
        code = app(args=argv, prog_name="ollamads", standalone_mode=False)
        if isinstance(code, int) and code:
            if code == 130:
                error("interrupted")
            sys.exit(code)
    except KeyboardInterrupt:
        error("interrupted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:
        # typer's own usage errors (its vendored click's UsageError and friends): its message
        # with the usage line, and their exit code (2).
        show = getattr(exc, "show", None)
        if show is None:
            error(f"Error: {exc.format_message()}")
        else:
            show()
        sys.exit(exc.exit_code)
    except Exception as exc:
        if os.environ.get("OLLAMADS_DEBUG"):
            raise
        from ollamads.cli._errors import error_line

        error(error_line(exc))
        sys.exit(1)
