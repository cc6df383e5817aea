"""`ollamads create` end to end: local Hub stand-in -> real huggingface_hub -> real Ollama servers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from ollamads.catalog import CatalogEntry, resolve
from ollamads.pipeline import create, plan_create
from ollamads.errors import InsufficientSpaceError
from ollamads.ollama.serve import OllamaServe
from ollamads.tiny import write_tiny_model, write_tiny_shards

from tests.support.hubstub import HubStub, hub  # noqa: F401 - hub is a fixture

pytestmark = pytest.mark.integration
TINY = {"num_predict": 8, "num_ctx": 1024}
#: One entry per family; the Terminus one is split, V3.1 TQ1_0 is a single file.
ENTRIES = ["v3.1-terminus:Q2_K_XL", "v3.1:TQ1_0", "r1:IQ1_S", "r1-0528:IQ2_XXS", "v3-0324:Q2_K_XL"]


def tiny_repo(entry: CatalogEntry, tmp: Path) -> dict[str, bytes]:
    """The entry's files as Unsloth lays them out, holding the tiny model of its family."""
    family = entry.prompt_family.name
    if entry.quant.is_single_file:
        assert entry.quant.path
        path = write_tiny_model(tmp / entry.quant.path, family)
        return {entry.quant.path: path.read_bytes()}
    shards = write_tiny_shards(
        tmp, family, n_shards=entry.quant.shards or 3, quant=entry.quant.hub_name,
        name=entry.model.file_prefix,
    )
    folder = f"{entry.quant.folder}/" if entry.quant.folder else ""
    return {folder + p.name: p.read_bytes() for p in shards}


@pytest.fixture
def hub_for(hub: Callable[..., HubStub], tmp_path: Path) -> Callable[[str], HubStub]:  # noqa: F811
    def make(spec: str) -> HubStub:
        entry = resolve(spec)
        return hub({entry.repo: tiny_repo(entry, tmp_path / "src" / spec.replace(":", "_"))})

    return make


def ollama_run(serve: OllamaServe, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OLLAMA_HOST": serve.bind, "HOME": str(serve.models_dir.parent)}
    return subprocess.run(
        [serve.binary, "run", "--verbose", name, *args, "hi"], capture_output=True, text=True, timeout=300,
        env=env, stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("spec", ENTRIES)
def test_create_then_ollama_run(
    spec: str, ollama_server: OllamaServe, hub_for: Callable[[str], HubStub], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(ollama_server.models_dir))
    stub = hub_for(spec)
    lines: list[str] = []
    first = create(spec, host=ollama_server.url, parameters=TINY, report=lines.append)
    entry = resolve(spec)
    assert first.name == entry.ollama_name and first.created
    assert first.bytes_downloaded == sum(len(b) for b in stub.repos[entry.repo].values())
    split = not entry.quant.is_single_file
    assert first.merged == (split and not ollama_server.info.accepts_split_gguf)  # type: ignore[union-attr]
    assert first.modelfile.is_file()

    run = ollama_run(ollama_server, first.name)
    assert run.returncode == 0, run.stderr
    # The tiny R1's few tokens may all be reasoning, which `ollama run` does not print off a
    # terminal; --verbose's timing block proves the model generated.
    assert "eval count" in run.stderr, run.stderr

    # Idempotent: nothing downloaded, merged or uploaded again, measured at the Hub and the server.
    served_before = stub.bytes_served()
    second = create(spec, host=ollama_server.url, parameters=TINY, report=lines.append)
    assert stub.bytes_served() == served_before
    assert second.bytes_downloaded == 0 and second.bytes_uploaded == 0 and not second.created


def test_create_cli_delete_shards_and_rerun(
    merged_line_server: OllamaServe, hub_for: Callable[[str], HubStub], tmp_path: Path
) -> None:
    stub = hub_for("v3.1-terminus:Q2_K_XL")
    env = {**os.environ, "OLLAMA_MODELS": str(merged_line_server.models_dir)}
    argv = [sys.executable, "-m", "ollamads", "create", "v3.1-terminus:Q2_K_XL", "--name", "term:test",
            "--host", merged_line_server.url, "--delete-shards", "-p", "num_predict=8"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ollama run term:test")
    home = Path(os.environ["OLLAMADS_HOME"])
    left = sorted(p.name for p in home.rglob("*.gguf"))
    assert left == ["DeepSeek-V3.1-Terminus-UD-Q2_K_XL.gguf"], left
    served = stub.bytes_served()
    again = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr
    assert stub.bytes_served() == served, "the shards were fetched again after the merge"
    assert "already registered" in again.stderr


def test_dry_run_and_disk_preflight(
    split_line_server: OllamaServe, hub_for: Callable[[str], HubStub], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(split_line_server.models_dir))
    stub = hub_for("r1:IQ1_S")
    plan = plan_create("r1:IQ1_S", host=split_line_server.url)
    assert plan.pull.bytes_to_download == sum(len(b) for b in stub.repos[plan.entry.repo].values())
    assert plan.merged_path is None  # this server takes shards
    assert {n.what for n in plan.needs} == {"download", "Ollama blobs", "Ollama's rewrite"}
    assert stub.bytes_served() == 0

    import ollamads.create as create_module

    monkeypatch.setattr(create_module, "_free", lambda directory: 1000)
    with pytest.raises(InsufficientSpaceError) as err:
        create("r1:IQ1_S", name="nospace:test", host=split_line_server.url)
    assert "GB needed" in err.value.message
    assert stub.bytes_served() == 0
    tags = requests.get(f"{split_line_server.url}/api/tags", timeout=10).json()["models"]
    assert "nospace:test" not in {m["name"] for m in tags}


def test_unknown_model_suggests(capsys: pytest.CaptureFixture[str]) -> None:
    from ollamads.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["create", "v3.1-terminsu:TQ1_0"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean" in err and "v3.1-terminus" in err
