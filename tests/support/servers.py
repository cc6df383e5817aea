"""Real ``ollama serve`` processes for each built Ollama line, as fixtures (loaded by
tests/conftest.py's ``pytest_plugins``).

They run the way ``ollamads serve`` runs them (its MODEL_ENVIRONMENT: flash attention, q8_0 KV
cache, long load timeout, keep-alive), so what the tests prove holds under those settings.

Binaries come from ``scripts/toolchain.sh`` (or OLLAMADS_OLLAMA_OLD / _NEW / _NEWEST). In CI a
missing binary fails the test; on a developer machine it skips with the command that builds it.
The server log is attached to the report of every failing test that used the server.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from ollamads.ollama.api import OllamaAPI
from ollamads.ollama.serve import MODEL_ENVIRONMENT, OllamaServe
from tests.support.toolchain import executable

#: The lines the toolchain builds, by what each does with a split GGUF: needs it merged (v0.24),
#: rewrites the shards into one blob (v0.30-v0.34.0), keeps them as one layer each (v0.34.1+).
OLLAMA_LINES = {
    "merged": ("OLLAMADS_OLLAMA_OLD", "Ollama (the <= v0.24 line)"),
    "split": ("OLLAMADS_OLLAMA_NEW", "Ollama (the v0.30-v0.34.0 line)"),
    "layers": ("OLLAMADS_OLLAMA_NEWEST", "Ollama (the >= v0.34.1 line)"),
}


def ollama_binary(line: str) -> str:
    variable, what = OLLAMA_LINES[line]
    return str(executable(variable, what))


def upload_model(api: OllamaAPI, model: Path, name: str) -> str:
    """Register one GGUF as a client without the store does: upload it, then create ``name``
    from it with nothing else (no template, no parameters). Returns the blob's digest."""
    digest = "sha256:" + hashlib.sha256(model.read_bytes()).hexdigest()
    api.push_blob(model, digest)
    api.create({"model": name, "files": {model.name: digest}, "stream": True})
    return digest


@pytest.fixture(scope="session")
def _servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, OllamaServe]]:
    started: dict[str, OllamaServe] = {}
    yield started
    for serve in started.values():
        serve.stop()


def serve_line(line: str, servers: dict[str, OllamaServe], factory: pytest.TempPathFactory) -> OllamaServe:
    if line not in servers:
        root = factory.mktemp(f"ollama-{line}")
        serve = OllamaServe(
            root / "models",
            binary=ollama_binary(line),
            log_path=root / "serve.log",
            # Keys and history go to $HOME/.ollama: keep them out of the real home.
            env={**MODEL_ENVIRONMENT, "HOME": str(root)},
        )
        serve.start()
        servers[line] = serve
    return servers[line]


def _use(request: pytest.FixtureRequest, line: str) -> OllamaServe:
    servers = request.getfixturevalue("_servers")
    serve = serve_line(line, servers, request.getfixturevalue("tmp_path_factory"))
    request.node.__dict__.setdefault("_ollama_servers", []).append(serve)
    return serve


@pytest.fixture(params=sorted(OLLAMA_LINES))
def ollama_server(request: pytest.FixtureRequest) -> OllamaServe:
    """A running real server, once per built line (parametrised: layers, merged, split)."""
    return _use(request, request.param)


@pytest.fixture
def merged_line_server(request: pytest.FixtureRequest) -> OllamaServe:
    return _use(request, "merged")


@pytest.fixture
def split_line_server(request: pytest.FixtureRequest) -> OllamaServe:
    return _use(request, "split")


@pytest.fixture
def layers_line_server(request: pytest.FixtureRequest) -> OllamaServe:
    return _use(request, "layers")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:  # type: ignore[type-arg]
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)  # for fixtures that keep evidence of a failure
    if report.failed:
        for serve in item.__dict__.get("_ollama_servers", []):
            version = serve.info.version if serve.info else "?"
            report.sections.append((f"ollama serve {version} log (last lines)", serve.log_tail(80)))


__all__ = ["OLLAMA_LINES", "ollama_binary", "serve_line", "upload_model"]
