"""What every test shares: an isolated ollamads home, and the fixtures in tests/support/.

Fixtures and helpers live in tests/support/ and are loaded here as plugins, so no test imports
from a conftest module or from another test module:

* ``servers``: real ``ollama serve`` processes per Ollama line (``ollama_server``,
  ``merged_line_server``, ``split_line_server``, ``layers_line_server``), their logs attached
  to failing tests;
* ``hubstub``: the Hugging Face Hub stand-in (``hub``);
* ``faults``: small filesystems that fill up and servers that die (``small_disk``,
  ``fault_server``);
* ``tiny_models``: a real server with the tiny models registered (``tiny_models_server``).
"""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.support.servers",
    "tests.support.hubstub",
    "tests.support.faults",
    "tests.support.tiny_models",
]


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read or write the user's ollamads home or a server at OLLAMA_HOST."""
    monkeypatch.setenv("OLLAMADS_HOME", str(tmp_path_factory.mktemp("ollamads-home")))
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
