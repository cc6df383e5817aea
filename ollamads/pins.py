"""The outside versions this release is built and tested against, from ``pins.toml``.

``scripts/toolchain.sh`` sources the same file, so the build, the tests and the package agree.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

PINS_PATH = Path(__file__).with_name("pins.toml")


@functools.cache
def pins() -> Mapping[str, str]:
    return MappingProxyType(tomllib.loads(PINS_PATH.read_text(encoding="utf-8")))


def pin(name: str) -> str:
    """``pin("OLLAMA_NEW_LINE")`` -> ``"v0.32.15"``."""
    return pins()[name]


__all__ = ["PINS_PATH", "pin", "pins"]
