"""Where ollamads keeps what it downloads.

``OLLAMADS_HOME`` if set, else ``$XDG_DATA_HOME/ollamads``, else ``~/.local/share/ollamads``.
Hub files go under ``<home>/models/<repo_id>/<path in the repo>``, mirroring the repo, so a
quant's shards sit side by side exactly as llama.cpp expects them. Read at call time, so tests
(and users) can point it elsewhere with an environment variable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

from ollamads.errors import OllamadsError
from ollamads.fileio import write_small_file

HOME_ENV = "OLLAMADS_HOME"


def ollamads_home() -> Path:
    explicit = os.environ.get(HOME_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    # The XDG spec says a relative XDG_DATA_HOME is invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "ollamads"


def models_dir() -> Path:
    return ollamads_home() / "models"


def repo_dir(repo_id: str) -> Path:
    """``<home>/models/unsloth/DeepSeek-R1-GGUF``."""
    return models_dir() / _safe_relative(repo_id, what="repo id")


def local_path(repo_id: str, repo_path: str) -> Path:
    """Where the repo's file ``repo_path`` is stored locally."""
    return repo_dir(repo_id) / _safe_relative(repo_path, what="repo path")


def _safe_relative(name: str, *, what: str) -> PurePosixPath:
    # Names come from the Hub's listing: never let one climb out of the models folder, and
    # refuse what means something else on another OS (backslashes, drive letters) or to C (NUL).
    path = PurePosixPath(name)
    if (
        path.is_absolute()
        or not path.parts
        or any(part in ("", ".", "..") for part in path.parts)
        or any(c in name for c in ("\\", "\0", ":"))
        or any(ord(c) < 32 for c in name)
    ):
        raise OllamadsError(f"refusing the {what} {name!r}", "it is not a plain relative path")
    return path


def read_record(path: Path) -> dict[str, Any]:
    """A small JSON state file; missing or damaged reads as empty (the work is redone)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def write_record(path: Path, value: dict[str, Any]) -> None:
    """Write a JSON state file atomically, so a crash never leaves half a record."""
    write_small_file(path, json.dumps(value, sort_keys=True).encode("utf-8"))


__all__ = [
    "HOME_ENV", "local_path", "models_dir", "ollamads_home", "read_record",
    "repo_dir", "write_record",
]
