"""The Ollama server failing under ``create``, on both lines: killed during an upload, during
``/api/create`` or while v0.30+ rewrites the model, restarted between the blobs and the create,
and replaced on its port by another Ollama or by something that is not Ollama.

Each server is a real ``ollama serve`` started for the test; "killed" is SIGKILL to its process
group (the server and its llama-quantize), a crash that cleans nothing. Expected: one clear line,
no model registered half-way (no manifest, or a complete one), and a re-run that finishes
without sending again what the server already has.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

import ollamads.ollama.api as ollama_api
import ollamads.ollama.store as store
from ollamads.catalog import resolve
from ollamads.cli._errors import error_line
from ollamads.errors import ServerError
from ollamads.ollama.api import OllamaAPI
from ollamads.ollama.store import LocalStore, ModelName
from ollamads.pipeline import create
from ollamads.progress import ProgressEvent
from tests.support.cli import run_cli
from tests.support.faults import FaultServer, NotOllama, bad_blobs, manifests, ollamads_debris, one_line
from tests.support.hubstub import HubStub
from tests.support.synthetic import tiny_repo

pytestmark = pytest.mark.integration
TINY = {"num_predict": 8, "num_ctx": 1024}
SPLIT = "r1:IQ1_S"  # three shards
OTHER_LINE = {"merged": "split", "split": "layers", "layers": "merged"}

Hub = Callable[..., HubStub]
Server = Callable[..., FaultServer]


@pytest.fixture
def files(hub: Hub, tmp_path: Path) -> dict[str, bytes]:
    entry = resolve(SPLIT)
    repo = tiny_repo(entry, tmp_path / "src")
    hub({entry.repo: repo})
    return {Path(p).name: repo[p] for p in sorted(repo)}


@pytest.fixture
def remote(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server is treated as another machine's: files are uploaded, then /api/create."""
    monkeypatch.setattr(store, "_is_loopback", lambda url: False)


def _lost(err: pytest.ExceptionInfo[ServerError], server: FaultServer) -> None:
    line = error_line(err.value)
    assert "\n" not in line
    assert line.startswith(f"Error: lost the connection to the Ollama server at {server.url} ")
    assert "nothing was registered half-way" in line


def _not_registered(server: FaultServer, name: str) -> None:
    assert OllamaAPI(server.url).show(name) is None
    assert manifests(server.models_dir) == []
    assert bad_blobs(server.models_dir) == []


def _complete(server: FaultServer, name: str) -> None:
    """A manifest whose every blob is in the store, and the server shows the model."""
    manifest = json.loads(ModelName.parse(name).manifest_path(server.models_dir).read_bytes())
    for layer in [manifest["config"], *manifest["layers"]]:
        assert LocalStore(server.models_dir).has_blob(layer["digest"], layer["size"]), layer
    assert OllamaAPI(server.url).show(name) is not None
    assert bad_blobs(server.models_dir) == []


# --- killed --------------------------------------------------------------------------------------


@pytest.mark.parametrize("line", ["merged", "split", "layers"])
def test_killed_during_an_upload(
    files: dict[str, bytes], remote: None, fault_server: Server, monkeypatch: pytest.MonkeyPatch, line: str
) -> None:
    monkeypatch.setattr(ollama_api, "UPLOAD_CHUNK", 16 << 10)  # many chunks, even for the tiny model
    server = fault_server(line)
    names = list(files)
    # v0.30+ gets the shards: kill during the second, after the first arrived whole. <= v0.24
    # gets one merged file: kill half-way through it.
    victim = names[1] if line != "merged" else None

    def kill_half_way(event: ProgressEvent) -> None:
        if event.phase == "upload" and (victim is None or event.item == victim) \
                and event.done * 2 >= event.total and server.starts == 1:
            server.kill()

    with pytest.raises(ServerError) as err:
        create(SPLIT, name="killed:upload", host=server.url, parameters=TINY, progress=kill_half_way)
    _lost(err, server)
    server.start()
    _not_registered(server, "killed:upload")

    result = create(SPLIT, name="killed:upload", host=server.url, parameters=TINY)
    assert result.created and result.route == "upload" and result.bytes_downloaded == 0
    if line != "merged":
        assert result.bytes_uploaded == sum(len(files[n]) for n in names[1:])  # not the first again
    _complete(server, "killed:upload")


@pytest.mark.parametrize(
    ("line", "moment"),
    [
        ("merged", "parsing GGUF"),  # <= v0.24: reading the file, detecting its template
        ("split", "parsing GGUF"),
        ("split", "llama-quantize"),  # v0.30-v0.34.0: while llama-quantize rewrites the model
        ("layers", "parsing GGUF"),
    ],
)
def test_killed_during_api_create(
    files: dict[str, bytes], remote: None, fault_server: Server, line: str, moment: str
) -> None:
    server = fault_server(line)
    seen: list[str] = []
    rewriting = None

    def kill_at_the_moment(text: str) -> None:
        nonlocal rewriting
        seen.append(text)
        if moment == "llama-quantize" and text.endswith(": upload") and rewriting is None:
            rewriting = server.kill_while_running("llama-quantize")
        if text == f"ollama: {moment}" and server.starts == 1:
            server.kill()

    with pytest.raises(ServerError) as err:
        create(SPLIT, name="killed:create", host=server.url, parameters=TINY, report=kill_at_the_moment)
    assert "ollama: success" not in seen
    if rewriting is not None:
        assert rewriting.is_set(), "the server was not killed during its rewrite"
    else:
        assert f"ollama: {moment}" in seen
    _lost(err, server)
    server.start()
    _not_registered(server, "killed:create")

    result = create(SPLIT, name="killed:create", host=server.url, parameters=TINY)
    assert result.created and result.bytes_uploaded == 0  # every blob was already there
    _complete(server, "killed:create")


def test_killed_while_a_model_is_written_straight_into_its_store(
    files: dict[str, bytes], fault_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The direct route (v0.30+, local store) has no /api/create: the server dies while the
    model blob goes into its store. The manifest ollamads writes is whole or absent."""
    server = fault_server("split")
    monkeypatch.setenv("OLLAMA_MODELS", str(server.models_dir))

    def kill_half_way(event: ProgressEvent) -> None:
        if event.phase == "write" and event.done * 2 >= event.total > 0 and server.starts == 1:
            server.kill()

    with pytest.raises(ServerError) as err:
        create(SPLIT, name="killed:direct", host=server.url, parameters=TINY, progress=kill_half_way)
    # The blob is written whole; the server is asked whether it is still there before the
    # manifest is written.
    line = one_line(error_line(err.value) + "\n")
    assert line.startswith(f"Error: no Ollama server answers at {server.url} (ConnectionError)"), line
    server.start()
    assert manifests(server.models_dir) == []
    assert bad_blobs(server.models_dir) == [] and ollamads_debris(server.models_dir) == []

    result = create(SPLIT, name="killed:direct", host=server.url, parameters=TINY)
    assert result.route == "direct" and result.bytes_downloaded == 0
    _complete(server, "killed:direct")


# --- restarted ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "spec", "route"), [
    ("merged", SPLIT, "upload"),
    ("split", SPLIT, "upload"),
    ("merged", "v3.1:TQ1_0", "place"),
])
def test_restarted_between_the_blobs_and_create(
    hub: Hub, tmp_path: Path, fault_server: Server, monkeypatch: pytest.MonkeyPatch,
    line: str, spec: str, route: str,
) -> None:
    entry = resolve(spec)
    hub({entry.repo: tiny_repo(entry, tmp_path / "src")})
    server = fault_server(line)
    if route == "upload":
        monkeypatch.setattr(store, "_is_loopback", lambda url: False)
    else:
        monkeypatch.setenv("OLLAMA_MODELS", str(server.models_dir))
    seen: list[str] = []

    def restart_after_the_blobs(text: str) -> None:
        seen.append(text)
        if text.endswith((": upload", ": hard link")) and server.starts == 1:
            server.restart()  # with the start-up prune a plain `ollama serve` does

    result = create(spec, name="restarted:x", host=server.url, parameters=TINY, report=restart_after_the_blobs)
    assert server.starts == 2 and result.created and result.route == route
    _complete(server, "restarted:x")
    again = create(spec, name="restarted:x", host=server.url, parameters=TINY)
    assert not again.created and again.bytes_uploaded == 0


# --- someone else on the port ----------------------------------------------------------------------


@pytest.mark.parametrize("line", ["merged", "split", "layers"])
def test_another_ollama_takes_the_port_during_the_run(
    files: dict[str, bytes], fault_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str
) -> None:
    server = fault_server(line)
    first_store = server.models_dir
    monkeypatch.setenv("OLLAMA_MODELS", str(first_store))
    before = server.info.version  # type: ignore[union-attr]

    def swap_after_the_download(text: str) -> None:
        if "present and verified" in text and server.starts == 1:
            server.restart(line=OTHER_LINE[line], models=tmp_path / "other-store")

    with pytest.raises(ServerError) as err:
        create(SPLIT, name="swapped:x", host=server.url, parameters=TINY, report=swap_after_the_download)
    after = server.info.version  # type: ignore[union-attr]
    text = one_line(error_line(err.value) + "\n")
    assert f"the Ollama server at {server.url} changed from {before} to {after}" in text
    assert "nothing was registered" in text
    for models in (first_store, server.models_dir):
        assert manifests(models) == [] and ollamads_debris(models) == []
        assert not (models / "blobs").is_dir() or [p for p in (models / "blobs").iterdir()] == []
    assert OllamaAPI(server.url).show("swapped:x") is None

    monkeypatch.setenv("OLLAMA_MODELS", str(server.models_dir))
    result = create(SPLIT, name="swapped:x", host=server.url, parameters=TINY)
    assert result.created and result.server.version == after and result.bytes_downloaded == 0
    _complete(server, "swapped:x")


def test_something_that_is_not_ollama_takes_the_port(
    files: dict[str, bytes], fault_server: Server, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = fault_server("merged")
    monkeypatch.setenv("OLLAMA_MODELS", str(server.models_dir))
    port = int(server.bind.rsplit(":", 1)[1])
    impostor: list[NotOllama] = []

    def swap_after_the_download(text: str) -> None:
        if "present and verified" in text and not impostor:
            server.stop()
            impostor.append(NotOllama(port).__enter__())

    try:
        with pytest.raises(ServerError) as err:
            create(SPLIT, name="impostor:x", host=server.url, parameters=TINY, report=swap_after_the_download)
        text = one_line(error_line(err.value) + "\n")
        assert text.startswith(f"Error: something other than Ollama answers at {server.url} ")
        # And from the start, on the command line: one line, exit 1.
        code, _, stderr = run_cli(capsys, "create", SPLIT, "--host", server.url)
        assert code == 1 and one_line(stderr).startswith(
            f"Error: something other than Ollama answers at {server.url} ")
    finally:
        for other in impostor:
            other.__exit__(None, None, None)
    server.start()
    _not_registered(server, "impostor:x")
    result = create(SPLIT, name="impostor:x", host=server.url, parameters=TINY)
    assert result.created and result.bytes_downloaded == 0
    _complete(server, "impostor:x")
