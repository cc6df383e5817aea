"""Where the tests find the real components that ``scripts/toolchain.sh`` builds.

The script is the one place that knows the cache's layout: ``toolchain.sh --env`` prints an
``export NAME=path`` line per component, and a variable already set in the environment wins
(to test against another build). Under CI a missing component fails the test; elsewhere it
skips with the command that builds it (:func:`cannot_run`, the tests' one way to skip).
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLCHAIN_SCRIPT = REPO / "scripts" / "toolchain.sh"
BUILD_HINT = "build it with scripts/toolchain.sh"


@functools.cache
def toolchain_env() -> dict[str, str]:
    """``{"OLLAMADS_OLLAMA_NEW": "/…/bin/ollama", …}`` as the script would export them."""
    out = subprocess.run(
        ["bash", str(TOOLCHAIN_SCRIPT), "--env"], capture_output=True, text=True, check=True
    ).stdout
    found = {}
    for line in out.splitlines():
        name, sep, value = line.removeprefix("export ").partition("=")
        if sep:
            found[name] = value
    return found


def component_path(variable: str) -> Path:
    return Path(os.environ.get(variable) or toolchain_env()[variable])


def cannot_run(message: str) -> NoReturn:
    """A test cannot get what it needs (a real component, a filesystem to mount): under CI it
    fails, elsewhere it skips with ``message`` (shown by ``-ra``).

    The one place in the tests that may skip: ``tests/test_no_silent_skips.py`` keeps it so."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{message} (CI={os.environ['CI']}: a test that cannot run fails)", pytrace=False)
    pytest.skip(message)


def missing_component(what: str) -> NoReturn:
    """A real component is absent: fail in CI, skip elsewhere."""
    cannot_run(f"{what} is not built ({BUILD_HINT})")


def executable(variable: str, what: str) -> Path:
    path = component_path(variable)
    if not (path.is_file() and os.access(path, os.X_OK)):
        missing_component(f"{what} at {path}")
    return path


def open_webui_binary() -> str:
    return str(executable("OLLAMADS_OPEN_WEBUI", "Open WebUI"))


def built_llama_cpp_tool(name: str) -> Path | None:
    """A llama.cpp tool (``llama-gguf-split``, ``llama-server``…) from the toolchain, or None."""
    path = component_path("OLLAMADS_LLAMA_CPP_BIN") / name
    return path if path.is_file() and os.access(path, os.X_OK) else None


def llama_cpp_tool(name: str) -> Path:
    path = built_llama_cpp_tool(name)
    if path is None:
        missing_component(f"llama.cpp's {name} in {component_path('OLLAMADS_LLAMA_CPP_BIN')}")
    assert path is not None
    return path


__all__ = [
    "BUILD_HINT",
    "built_llama_cpp_tool",
    "cannot_run",
    "component_path",
    "executable",
    "llama_cpp_tool",
    "missing_component",
    "open_webui_binary",
    "toolchain_env",
]
