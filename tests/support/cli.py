"""Running the CLI in-process, the way a user's shell would see it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ollamads.cli import main
from ollamads.ollama.serve import OllamaServe


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``ollamads ARGV...``."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def ollamads_chat(
    serve: OllamaServe, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ollamads", "chat", *args, "--host", serve.url],
        input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True, text=True, timeout=300, env={**os.environ, "NO_COLOR": "1"},
    )
