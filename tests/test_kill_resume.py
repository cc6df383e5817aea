"""SIGKILL during any step of `create`, then the same command again: the same model, no debris.

A child process runs ``create`` and kills itself (SIGKILL, nothing is cleaned up) at a chosen
point: in the middle of a range, in the middle of writing the model blob into the store, right
after a file was placed, or during registration (between the small blobs and the manifest, or
while the server's ``/api/create`` runs). The parent then runs ``create`` to the end and checks
that the model's manifest is the one a clean run makes and that no temporary file is left in the
downloads or in the store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from ollamads.catalog import resolve
from ollamads.ollama.serve import OllamaServe
from ollamads.ollama.store import ModelName
from ollamads.pipeline import create
from tests.support.hubstub import HubStub
from tests.support.servers import ollama_binary
from tests.support.synthetic import tiny_repo

pytestmark = pytest.mark.integration
TINY = {"num_predict": 8, "num_ctx": 1024}

#: Where the child kills itself: (hook, condition), see CHILD below.
KILL_POINTS = {
    "mid-range": "download",
    "mid-write": "write",
    "after-placement": "place",
    "mid-registration": "register",
}

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from ollamads import pipeline, registration
    from ollamads.ollama import api, store

    point, spec, host, name = sys.argv[1:5]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def progress(event):
        if point == event.phase == "download" and 0 < event.done < event.total:
            die()
        if point == event.phase == "write" and event.done * 2 >= event.total > 0:
            die()

    real_place = store.LocalStore.place
    def place(self, path, digest):
        how = real_place(self, path, digest)
        if point == "place":
            die()
        return how
    store.LocalStore.place = place

    real_blob = store.LocalStore.write_small_blob
    def small_blob(self, data):
        layer = real_blob(self, data)
        if point == "register":
            die()  # the direct route: blobs written, no manifest yet
        return layer
    store.LocalStore.write_small_blob = small_blob

    real_create = api.OllamaAPI.create
    def create_model(self, body, on_status=None):
        if point == "register":
            import threading
            threading.Timer(0.05, die).start()  # while the server works on /api/create
        return real_create(self, body, on_status)
    api.OllamaAPI.create = create_model

    pipeline.create(spec, name=name, host=host, parameters={"num_predict": 8, "num_ctx": 1024},
                    progress=progress)
    print("finished without being killed")
    """
)


def _manifest(server: OllamaServe, name: str) -> bytes:
    return ModelName.parse(name).manifest_path(server.models_dir).read_bytes()


def _debris(*roots: Path) -> list[str]:
    found = []
    for root in roots:
        for path in root.rglob("*"):
            name = path.name
            if "partial" in name or name.endswith(".part") or name.startswith(".ollamads-manifest-") \
                    or name.startswith("COPY") or name.startswith("split-gguf-"):
                found.append(str(path.relative_to(root)))
    return found


@pytest.mark.parametrize(
    ("line", "spec", "points"),
    [
        ("split", "v3.1-terminus:Q2_K_XL", ["mid-range", "mid-write", "mid-registration"]),
        ("merged", "v3.1-terminus:Q2_K_XL", ["mid-range", "mid-write", "mid-registration"]),
        ("merged", "v3.1:TQ1_0", ["mid-range", "after-placement", "mid-registration"]),
    ],
)
def test_a_kill_at_any_step_then_a_rerun_makes_the_same_model(
    hub: Callable[..., HubStub],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    line: str,
    spec: str,
    points: list[str],
) -> None:
    entry = resolve(spec)
    stub = hub({entry.repo: tiny_repo(entry, tmp_path / "src")})
    stub.rate = 50_000  # bytes a second per connection: a range lasts long enough to be cut
    server = OllamaServe(tmp_path / "models", binary=ollama_binary(line), log_path=tmp_path / "serve.log",
                         env={"HOME": str(tmp_path)})
    with server:
        monkeypatch.setenv("OLLAMA_MODELS", str(server.models_dir))
        create(spec, name="clean:kill", host=server.url, parameters=TINY)
        clean = _manifest(server, "clean:kill")
        for point in points:
            home = tmp_path / f"home-{point}"
            env = {**os.environ, "OLLAMADS_HOME": str(home), "OLLAMA_MODELS": str(server.models_dir)}
            name = f"{point}:kill"
            child = subprocess.run(
                [sys.executable, "-c", CHILD, KILL_POINTS[point], spec, server.url, name],
                env=env, capture_output=True, text=True, timeout=300,
            )
            assert child.returncode == -signal.SIGKILL, (point, child.stdout, child.stderr)
            monkeypatch.setenv("OLLAMADS_HOME", str(home))
            result = create(spec, name=name, host=server.url, parameters=TINY)
            assert result.created
            assert _manifest(server, name) == clean, f"{point}: another model than a clean run's"
            assert _debris(home, server.models_dir) == [], point
