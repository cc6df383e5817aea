"""A real Ollama server (each line, as ``ollama_server``) with the tiny models registered once per
session: ``tiny_models_server``, for the client and ``ollamads chat`` tests (loaded by
tests/conftest.py's ``pytest_plugins``)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ollamads.catalog.families import get_family
from ollamads.ollama.modelfile import ModelDefinition, TemplateMode
from ollamads.ollama.serve import OllamaServe
from ollamads.registration import register
from ollamads.tiny import write_tiny_model

#: Random weights rarely stop: bound the answer; a seed makes it repeatable.
TINY_PARAMETERS = {"num_predict": 8, "num_ctx": 1024, "seed": 3407}
TINY_MODELS: dict[str, tuple[str, TemplateMode | None]] = {
    # Also registers tiny-v31:client-think (the same TEMPLATE with Ollama's thinking capability).
    "tiny-v31:client": ("v3.1", None),
    # Its -think name gets Ollama's own DeepSeek renderer and parser.
    "tiny-v31-rend:client": ("v3.1", "renderer"),
    "tiny-r1:client": ("r1", "template"),
    "tiny-v3:client": ("v3", "template"),
}
#: A V3.1 name registered without its thinking name (as by an older ollamads, or by hand).
LONE_V31 = "tiny-v31-alone:client"
_registered: set[tuple[str, str]] = set()


@pytest.fixture
def tiny_models_server(ollama_server: OllamaServe, tmp_path_factory: pytest.TempPathFactory) -> OllamaServe:
    """The parametrised real server, with the tiny models registered once per session."""
    info_ = ollama_server.info
    assert info_ is not None
    for name, (family, mode) in TINY_MODELS.items():
        if (ollama_server.url, name) in _registered:
            continue
        path = write_tiny_model(tmp_path_factory.mktemp("tiny") / f"{family}.gguf", family)
        definition = ModelDefinition.for_family(
            name, get_family(family), [path], server=info_, mode=mode, parameters=TINY_PARAMETERS
        )
        register(info_, definition)
        if name == "tiny-v31:client":
            register(info_, replace(definition, name=LONE_V31, companions=()))
        _registered.add((ollama_server.url, name))
    return ollama_server


__all__ = ["LONE_V31", "TINY_MODELS", "TINY_PARAMETERS", "tiny_models_server"]
