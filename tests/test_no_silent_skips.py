"""No test may skip on its own: under CI=true a test that cannot run fails.

Every skip goes through ``tests/support/toolchain.py::cannot_run``, which fails under CI and
skips elsewhere. This test reads every test module's syntax tree and refuses any other way to
skip or expect a failure: ``pytest.skip``, ``pytest.importorskip``, ``pytest.xfail``, the
``skip``/``skipif``/``xfail`` marks, ``unittest``'s skips, and a ``skip`` imported from pytest
under another name.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
#: The one function allowed to call pytest.skip.
ALLOWED = ("support/toolchain.py", "cannot_run")
SKIPPING_NAMES = {"skip", "importorskip", "xfail", "skipif", "skipTest", "skipIf", "skipUnless",
                  "expectedFailure"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return ""


def skips_in(source: str, filename: str) -> list[str]:
    """``"<file>:<line> <what>"`` for every way to skip in ``source`` outside :data:`ALLOWED`."""
    tree = ast.parse(source, filename)
    found: list[str] = []
    allowed_lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and (filename, node.name) == ALLOWED:
            allowed_lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("pytest", "unittest", "_pytest.outcomes"):
            for alias in node.names:
                if alias.name in SKIPPING_NAMES:
                    found.append(f"{filename}:{node.lineno} from {node.module} import {alias.name}")
        elif isinstance(node, ast.Attribute) and node.attr in SKIPPING_NAMES:
            name = _dotted(node)
            if name.split(".")[0] in ("pytest", "unittest", "self") and node.lineno not in allowed_lines:
                found.append(f"{filename}:{node.lineno} {name}")
    return found


def _test_sources() -> list[tuple[str, str]]:
    return [(str(p.relative_to(TESTS)), p.read_text(encoding="utf-8")) for p in sorted(TESTS.rglob("*.py"))]


def test_no_test_skips_except_through_cannot_run() -> None:
    sources = _test_sources()
    assert len(sources) > 20, "the tests were not found"
    found = [hit for name, source in sources for hit in skips_in(source, name)]
    assert found == [], "skip only through tests.support.toolchain.cannot_run (it fails under CI):\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        "import pytest\npytest.skip('no disk')\n",
        "import pytest\ngguf = pytest.importorskip('gguf')\n",
        "import pytest\n@pytest.mark.skipif(True, reason='x')\ndef test_a(): pass\n",
        "import pytest\n@pytest.mark.skip\ndef test_a(): pass\n",
        "import pytest\npytest.xfail('later')\n",
        "from pytest import skip as s\ns('x')\n",
        "import unittest\n@unittest.skip('x')\ndef test_a(): pass\n",
    ],
)
def test_the_check_finds_each_way_to_skip(source: str) -> None:
    assert skips_in(source, "test_x.py"), source


def test_cannot_run_fails_under_ci_and_skips_elsewhere(tmp_path: Path) -> None:
    """Run in a child pytest, with and without CI=true: fails there, skips here."""
    (tmp_path / "test_needs_a_disk.py").write_text(textwrap.dedent("""
        from tests.support.toolchain import cannot_run

        def test_needs_a_disk():
            cannot_run("cannot mount a tmpfs here")
    """))
    root = TESTS.parent
    for ci, outcome in (("true", "1 failed"), ("", "1 skipped")):
        env = {**os.environ, "CI": ci, "PYTHONPATH": str(root)}
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfs", str(tmp_path)],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
        )
        assert outcome in run.stdout, (ci, run.stdout[-2000:])
        assert "cannot mount a tmpfs here" in run.stdout, run.stdout[-2000:]
