"""Every error type ollamads raises, in one place.

Library code raises :class:`OllamadsError` (or a subclass) with a one-line message saying what
went wrong and a hint saying what to do; only the CLI entry point prints it and exits 1.
"""

from __future__ import annotations


class OllamadsError(Exception):
    """A failure the user can act on: ``message`` says what is wrong, ``hint`` what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ShardSetError(OllamadsError):
    """A split GGUF set is incomplete, inconsistent or not GGUF at all."""


class GGUFFormatError(OllamadsError):
    """A file is not a readable GGUF (wrong magic, truncated, LFS pointer...)."""


class IncompleteHeaderError(GGUFFormatError):
    """The first bytes read of a GGUF file end inside its header: read more (``have`` so far)."""

    def __init__(self, message: str, hint: str | None = None, *, have: int = 0) -> None:
        super().__init__(message, hint)
        self.have = have


class ServerError(OllamadsError):
    """The Ollama server is unreachable, too old, or refused a request."""


class OutputExistsError(OllamadsError):
    """Refusing to overwrite an existing file."""


class ToolNotFoundError(OllamadsError):
    """A needed external program (ollama, llama-gguf-split, rpc-server) is not installed."""


class InsufficientSpaceError(OllamadsError):
    """A filesystem cannot hold what is about to be written."""


class MergeToolError(OllamadsError):
    """llama-gguf-split exited with an error."""


class HubError(OllamadsError):
    """The Hub refused, lacks something, or cannot be reached."""


class ChecksumError(HubError):
    """A downloaded file does not match the sha256 the Hub lists for it."""


class WorkerError(OllamadsError):
    """An RPC worker (llama.cpp rpc-server) is unreachable, incompatible or misconfigured."""


class BusyError(OllamadsError):
    """Another ollamads process is working on the same files."""


class PlacementError(ServerError):
    """A blob placed in the server's store was not accepted by the server."""


__all__ = [
    "BusyError",
    "ChecksumError",
    "GGUFFormatError",
    "HubError",
    "IncompleteHeaderError",
    "InsufficientSpaceError",
    "MergeToolError",
    "OllamadsError",
    "OutputExistsError",
    "PlacementError",
    "ServerError",
    "ShardSetError",
    "ToolNotFoundError",
    "WorkerError",
]
