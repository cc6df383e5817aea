"""Which Ollama a server is, and what its version can do.

Two lines of Ollama are in use and they want different things from us:

* up to v0.24 llama.cpp is linked into the server; a split GGUF cannot be loaded, so shards
  must be merged into one file first;
* from v0.30 the server runs ``llama-server`` and accepts the shards themselves.

Everything that depends on the line is decided here, from ``GET /api/version``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ollamads.errors import ServerError

DEFAULT_HOST = "http://127.0.0.1:11434"
#: ``think`` request field and the ``.Think`` template variable.
MIN_THINK_VERSION = (0, 9, 0)
#: First release that accepts split GGUFs in ``/api/create``.
SPLIT_GGUF_VERSION = (0, 30, 0)
#: First release with both names ``RENDERER deepseek3.1`` and ``PARSER deepseek3``.
DEEPSEEK_RENDERER_VERSION = (0, 13, 5)
#: ``renderer`` / ``parser`` fields in ``/api/create``.
CREATE_RENDERER_FIELD_VERSION = (0, 12, 0)
#: Control calls are quick; model loads and generation are not, and get no timeout.
CONTROL_TIMEOUT_S = 10.0

_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


def parse_version(text: str) -> tuple[int, int, int]:
    """``"0.33.0-rc2"`` -> ``(0, 33, 0)``. A development build reports 0.0.0."""
    match = _VERSION_RE.match(text.strip())
    if not match:
        raise ServerError(
            f"Ollama reported an unreadable version {text!r}",
            "use a released Ollama build",
        )
    return int(match[1]), int(match[2]), int(match[3])


def normalize_host(host: str | None) -> str:
    """Accept what OLLAMA_HOST accepts (``127.0.0.1:11434``, ``:8080``, ``http://h:p``)."""
    host = (host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST).strip().rstrip("/")
    if "://" not in host:
        host = "http://" + host
    scheme, rest = host.split("://", 1)
    if rest.startswith(":"):
        rest = "127.0.0.1" + rest
    if rest.startswith("0.0.0.0"):
        rest = "127.0.0.1" + rest[len("0.0.0.0"):]
    if ":" not in rest.rsplit("]", 1)[-1]:
        rest += ":11434"
    return f"{scheme}://{rest}"


@dataclass(frozen=True)
class ServerInfo:
    """What a running server can do, derived from its version."""

    host: str
    version: str

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        return parse_version(self.version)

    @property
    def accepts_split_gguf(self) -> bool:
        return self.version_tuple >= SPLIT_GGUF_VERSION

    @property
    def line(self) -> str:
        """``"merged"`` (<= v0.24, needs one GGUF file) or ``"split"`` (>= v0.30)."""
        return "split" if self.accepts_split_gguf else "merged"

    @property
    def supports_think(self) -> bool:
        return self.version_tuple >= MIN_THINK_VERSION

    @property
    def has_deepseek_renderer(self) -> bool:
        return self.version_tuple >= DEEPSEEK_RENDERER_VERSION

    def require_think(self) -> None:
        if not self.supports_think:
            raise ServerError(
                f"Ollama {self.version} at {self.host} is too old for thinking mode",
                "upgrade Ollama to v0.9.0 or newer",
            )
