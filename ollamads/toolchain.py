"""The development toolchain that ``scripts/toolchain.sh`` builds, as an opt-in fallback.

The script caches real Ollama servers and llama.cpp tools outside the repository. An installed
ollamads never runs them by surprise: only with ``OLLAMADS_DEV_TOOLCHAIN=1`` (what ``make demo``
sets) does :func:`~ollamads.ollama.serve.find_ollama` fall back to the newest one built there.
"""

from __future__ import annotations

import os
from pathlib import Path

TOOLCHAIN_ENV = "OLLAMADS_TOOLCHAIN_DIR"
DEV_TOOLCHAIN_ENV = "OLLAMADS_DEV_TOOLCHAIN"


def dev_toolchain_enabled() -> bool:
    return os.environ.get(DEV_TOOLCHAIN_ENV, "") not in ("", "0")


def toolchain_dir() -> Path:
    explicit = os.environ.get(TOOLCHAIN_ENV)
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "ollamads" / "toolchain"


def built_ollama_binaries() -> dict[str, Path]:
    """Every ``ollama-vX.Y.Z[-suffix]/bin/ollama`` in the cache, by its folder's version
    (``v0.32.15-rpc``); which is newest is :func:`ollamads.ollama.versions.parse_version`'s call."""
    return {
        path.parent.parent.name.removeprefix("ollama-"): path
        for path in sorted(toolchain_dir().glob("ollama-v*/bin/ollama"))
        if os.access(path, os.X_OK)
    }


def built_llama_cpp_tools(name: str) -> list[Path]:
    """``llama.cpp-*/bin/NAME`` in the cache (rpc-server, llama-server...), in name order."""
    return sorted(
        path for path in toolchain_dir().glob(f"llama.cpp-*/bin/{name}") if os.access(path, os.X_OK)
    )
