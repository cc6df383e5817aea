"""The gate that keeps ``ollamads/`` as clean as it is: ruff, mypy and the package layering.

ruff and mypy read their settings from pyproject.toml and run from this interpreter's
environment (the ``test`` extra installs them). The layering is the README's "Layout" section
as data: :data:`ALLOWED` says which parts of the package each part may import, and every
``import`` in ``ollamads/`` is checked against it with the ast module, so a new arrow that
points up (or a cycle between packages) fails here before it reaches review.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ollamads"

# --- the layering ----------------------------------------------------------------------------

#: The package root: ``__version__`` and the lazy public names (it imports nothing eagerly).
TOP = "ollamads"

#: Each part of the package (a subpackage or a top-level module) and the parts it may import.
#: Lower layers first. ``hub``, ``gguf`` and ``ollama`` never use each other; they share only
#: the catalog (prompt families, entries), which uses none of them.
ALLOWED: dict[str, frozenset[str]] = {
    # foundations: one home each for errors, sizes, files, locks, paths, pins, progress
    TOP: frozenset(),
    "errors": frozenset(),
    "progress": frozenset(),
    "_resources": frozenset(),
    "pins": frozenset(),
    "toolchain": frozenset(),
    "tiny_tokenizer": frozenset(),
    "tiny_script": frozenset(),
    "toolcalls": frozenset(),
    "shardnames": frozenset(),
    "units": frozenset({"errors"}),
    "locking": frozenset({"errors"}),
    "fileio": frozenset({"errors", "units"}),
    "children": frozenset({"errors", "fileio"}),
    "paths": frozenset({"errors", "fileio"}),
    "hardware": frozenset({"errors", "units"}),
    # the data every outside-system package may read
    "catalog": frozenset({"errors", "pins", "shardnames"}),
    # one package per outside system
    "hub": frozenset({TOP, "errors", "fileio", "locking", "paths", "progress", "units"}),
    "gguf": frozenset({"_resources", "catalog", "errors", "fileio", "locking", "paths", "shardnames", "units"}),
    "ollama": frozenset({TOP, "_resources", "catalog", "children", "errors", "fileio", "paths", "pins",
                         "progress", "toolchain", "units"}),
    # what combines them
    "chat": frozenset({"catalog", "errors", "ollama", "toolcalls"}),
    "listing": frozenset({"catalog", "errors", "hub", "paths", "units"}),
    "rendered": frozenset({"catalog", "ollama", "pins", "shardnames"}),
    "registration": frozenset({"errors", "gguf", "hub", "ollama", "paths", "progress", "units"}),
    "quant_headers": frozenset({"catalog", "errors", "gguf", "hub", "paths", "units"}),
    "quant_pull": frozenset({"catalog", "errors", "hub", "progress", "shardnames"}),
    "pipeline": frozenset({"catalog", "errors", "fileio", "gguf", "hub", "locking", "ollama", "paths",
                           "progress", "quant_headers", "quant_pull", "registration", "units"}),
    "plan": frozenset({"catalog", "errors", "gguf", "hardware", "hub", "ollama", "paths", "pipeline",
                       "quant_headers", "quant_pull", "units"}),
    "rpc": frozenset({"children", "errors", "gguf", "ollama", "toolchain", "units"}),
    "webui": frozenset({"children", "errors", "paths", "pins"}),
    "tiny": frozenset({"_resources", "catalog", "gguf", "tiny_script", "tiny_tokenizer"}),
    "demo": frozenset({"catalog", "ollama", "registration", "tiny"}),
    "doctor": frozenset({"catalog", "errors", "gguf", "hardware", "hub", "ollama", "pins", "plan", "units"}),
    # the CLI sits on top and may use anything below it
    "cli": frozenset(),  # filled in below
    "__main__": frozenset({"cli"}),
}
ALLOWED["cli"] = frozenset(ALLOWED) - {"cli", "__main__"}


def _part(module: str) -> str | None:
    """``ollamads.hub.transfer`` -> ``hub``; None outside the package."""
    names = module.split(".")
    if names[0] != "ollamads":
        return None
    return names[1] if len(names) > 1 else TOP


def _parts(root: Path) -> set[str]:
    """The parts of the package under ``root``: its top-level modules and subpackages."""
    package = root / "ollamads"
    return {TOP} | {p.stem for p in package.glob("*.py") if p.stem != "__init__"} | {
        p.parent.name for p in package.glob("*/__init__.py")}


def package_imports(root: Path) -> Iterator[tuple[Path, int, str, str]]:
    """``(file, line, importing part, imported part)`` for every import of the package under
    ``root``, the ones inside functions too (a deferred import is still a dependency)."""
    parts = _parts(root)
    for path in sorted((root / "ollamads").rglob("*.py")):
        names = path.relative_to(root).with_suffix("").parts
        module = names[:-1] if names[-1] == "__init__" else names
        package = module if names[-1] == "__init__" else module[:-1]
        source = _part(".".join(module))
        assert source is not None
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
                module_name = ".".join(filter(None, (base, node.module)))
                # `from ollamads import hub` imports the part `hub`; `... import __version__` the root.
                targets = [f"{module_name}.{alias.name}" for alias in node.names] if module_name == "ollamads" \
                    else [module_name]
            else:
                continue
            for target in targets:
                used = _part(target)
                if used is not None and used not in parts:
                    used = TOP
                if used is not None and used != source:
                    yield path, node.lineno, source, used


def _dotted(part: str) -> str:
    return "ollamads" if part == TOP else f"ollamads.{part}"


def layering_violations(root: Path) -> list[str]:
    return [
        f"{path.relative_to(root)}:{line}: {source} imports {_dotted(used)}, which is not below it in ALLOWED"
        for path, line, source, used in package_imports(root)
        if used not in ALLOWED.get(source, frozenset())
    ]


def test_every_part_of_the_package_is_in_the_layering_table() -> None:
    actual = _parts(ROOT)
    assert actual - ALLOWED.keys() == set(), "add the new module to ALLOWED, in its layer"
    assert ALLOWED.keys() - actual == set(), "remove the deleted module from ALLOWED"


def test_the_layering_table_has_no_cycle() -> None:
    done: set[str] = set()

    def visit(part: str, trail: tuple[str, ...]) -> None:
        assert part not in trail, f"cycle: {' -> '.join((*trail, part))}"
        if part in done:
            return
        for used in sorted(ALLOWED[part]):
            visit(used, (*trail, part))
        done.add(part)

    for part in ALLOWED:
        visit(part, ())


def test_every_import_follows_the_layering() -> None:
    assert layering_violations(ROOT) == []


def test_the_layering_check_sees_an_arrow_that_points_up(tmp_path: Path) -> None:
    # The checker must be able to fail: a package whose hub imports the pipeline (in a function,
    # relatively) and whose catalog imports gguf (from the package root).
    for name, text in {
        "__init__.py": "",
        "pipeline.py": "",
        "errors.py": "",
        "hub/__init__.py": "from ollamads.errors import x\n",
        "hub/transfer.py": "def f():\n    from ..pipeline import create\n",
        "gguf/__init__.py": "",
        "catalog/__init__.py": "from ollamads import gguf, __version__\n",
    }.items():
        (tmp_path / "ollamads" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "ollamads" / name).write_text(text)
    assert layering_violations(tmp_path) == [
        "ollamads/catalog/__init__.py:1: catalog imports ollamads.gguf, which is not below it in ALLOWED",
        "ollamads/catalog/__init__.py:1: catalog imports ollamads, which is not below it in ALLOWED",
        "ollamads/hub/transfer.py:2: hub imports ollamads.pipeline, which is not below it in ALLOWED",
    ]


# --- one way to print ------------------------------------------------------------------------

#: Calls that write to the terminal; in the CLI only ``cli/_output.py`` makes them.
_WRITERS = {"print", "typer.echo", "typer.secho", "Console", "json.dumps", "sys.stdout.write", "sys.stderr.write"}


def _called_name(node: ast.Call) -> str:
    parts = []
    func: ast.expr = node.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    parts.append(func.id if isinstance(func, ast.Name) else "<expression>")
    return ".".join(reversed(parts))


def test_the_cli_writes_only_through_its_output_module() -> None:
    found = []
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        if path.name == "_output.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and _called_name(node) in _WRITERS:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {_called_name(node)}(...)")
    assert found == [], "use ollamads.cli._output (data, data_json, message, ...):\n" + "\n".join(found)


# --- test helpers ---------------------------------------------------------------------------


def test_tests_share_code_only_through_tests_support() -> None:
    # Fixtures come from the plugins tests/conftest.py lists; helpers from tests/support/.
    wrong = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                last = name.rsplit(".", 1)[-1]
                if name.startswith("tests.") and (last == "conftest" or last.startswith("test_")):
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports {name}")
    assert wrong == [], "move what is shared into tests/support/:\n" + "\n".join(wrong)


# --- ruff and mypy ---------------------------------------------------------------------------


def _run_tool(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        __import__(module)
    except ImportError:
        pytest.fail(f"{module} is not installed in this environment: pip install -e '.[test]' (or make venv)")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_ruff_finds_nothing_in_the_package() -> None:
    out = _run_tool("ruff", "check", "--no-cache", "--output-format", "concise", "ollamads")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_finds_nothing_in_the_package() -> None:
    # Settings (files = ollamads, unused ignores are errors) come from pyproject.toml.
    out = _run_tool("mypy", "--no-error-summary", "--cache-dir", str(ROOT / "build" / "mypy-cache"))
    assert out.returncode == 0, out.stdout + out.stderr


_SILENCED = re.compile(r"#\s*(?:type:\s*ignore(?:\[[^\]]*\])?|noqa(?::\s*[A-Z]+\d+(?:\s*,\s*[A-Z]+\d+)*)?)(?P<rest>.*)$")


def test_every_type_ignore_and_noqa_says_why() -> None:
    # A silenced finding carries its reason on the same line: `# type: ignore[code]  # why`.
    unexplained = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            match = _SILENCED.search(text)
            if match and not match["rest"].strip(" #:-\u2014"):
                unexplained.append(f"{path.relative_to(ROOT)}:{number}: {text.strip()}")
    assert unexplained == [], "\n".join(unexplained)
