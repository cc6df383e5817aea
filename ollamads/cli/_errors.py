"""One table from exception types to the line a user reads."""

from __future__ import annotations

from ollamads.errors import OllamadsError


def _single_line(text: str) -> str:
    return " ".join(str(text).split())


def error_line(exc: BaseException) -> str:
    # Imported here, not at the top, so that `ollamads --help` does not pay for them.
    import ollama
    import requests

    if isinstance(exc, OllamadsError):
        message, hint = exc.message, exc.hint
    elif isinstance(exc, requests.ConnectionError):
        message, hint = "lost the connection to the Ollama server", "is `ollama serve` still running?"
    elif isinstance(exc, ollama.ResponseError):
        message, hint = f"Ollama answered {exc.status_code}: {exc.error}", "check the server log"
    elif isinstance(exc, PermissionError):
        message, hint = f"permission denied: {exc.filename}", "choose a folder you can write to"
    elif isinstance(exc, OSError) and exc.filename:
        message, hint = f"{exc.strerror}: {exc.filename}", None
    else:
        message, hint = f"unexpected {type(exc).__name__}: {exc}", "re-run with OLLAMADS_DEBUG=1 and report it"
    line = f"Error: {_single_line(message)}"
    if hint:
        line += f" — {_single_line(hint)}"
    return line
