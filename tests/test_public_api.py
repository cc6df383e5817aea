"""`from ollamads import X` gives functions and classes, one name per thing, never modules."""

from __future__ import annotations

import inspect
import subprocess
import sys

import ollamads


def test_every_public_name_is_a_function_or_a_class() -> None:
    for name in ollamads.__all__:
        if name == "__version__":
            continue
        value = getattr(ollamads, name)
        assert not inspect.ismodule(value) and (inspect.isclass(value) or callable(value)), (name, value)


def test_names_stay_the_same_thing_after_the_modules_are_imported() -> None:
    # Importing the modules that define `merge`, `create`... must not shadow the functions.
    code = (
        "import ollamads.gguf.merge, ollamads.pipeline, ollamads.ollama.register\n"
        "from ollamads import merge, create, pull, register\n"
        "import ollamads\n"
        "import inspect\n"
        "print(all(inspect.isfunction(f) for f in (merge, create, pull, register, ollamads.merge)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_the_readme_lists_the_public_api() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    import re

    missing = [n for n in ollamads.__all__
               if n != "__version__" and not re.search(rf"`{re.escape(n)}[`(]", section)]
    assert missing == [], f"README's Python API section lacks {missing}"
