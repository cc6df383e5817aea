"""`ollamads create` end to end: local Hub stand-in -> real huggingface_hub -> real Ollama servers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from ollamads.catalog import resolve
from ollamads.errors import InsufficientSpaceError
from ollamads.ollama.serve import OllamaServe
from ollamads.pipeline import create, plan_create
from tests.support.hubstub import HubStub
from tests.support.synthetic import tiny_repo

pytestmark = pytest.mark.integration
TINY = {"num_predict": 8, "num_ctx": 1024}
#: One entry per family; the Terminus one is split, V3.1 TQ1_0 is a single file.
ENTRIES = ["v3.1-terminus:Q2_K_XL", "v3.1:TQ1_0", "r1:IQ1_S", "r1-0528:IQ2_XXS", "v3-0324:Q2_K_XL"]


@pytest.fixture
def hub_for(hub: Callable[..., HubStub], tmp_path: Path) -> Callable[[str], HubStub]:
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
    size = sum(len(b) for b in stub.repos[entry.repo].values())
    assert first.bytes_downloaded == size
    split = not entry.quant.is_single_file
    info = ollama_server.info
    assert info is not None
    # The server's store is on this machine: nothing is uploaded, whatever the route.
    assert first.bytes_uploaded == 0
    if info.gguf_handling == "layers":
        # v0.34.1+ keeps the files as they are: hard links, nothing written.
        assert first.route == "place" and first.bytes_written == 0
        assert {p.value for p in first.placements.values()} <= {"hard link", "already in the store"}
    elif info.accepts_split_gguf:
        # v0.30-v0.34.0: the one model blob is written straight into the store (a header's
        # worth of reordering makes it a few bytes different in size from the download).
        assert first.route == "direct" and abs(first.bytes_written - size) < 4096
    elif split:
        assert first.route == "merge-into-store" and abs(first.bytes_written - size) < 4096
    else:
        assert first.route == "place" and first.bytes_written == 0
        # (the tiny model is the same bytes in other tests: then it is already there)
        assert [p.value for p in first.placements.values()] in (["hard link"], ["already in the store"])
    assert any(line.startswith(f"registering {first.name}: ") for line in lines)
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
    assert (second.bytes_downloaded, second.bytes_uploaded, second.bytes_written) == (0, 0, 0)
    assert not second.created


def test_create_cli_delete_shards_and_rerun(
    ollama_server: OllamaServe, hub_for: Callable[[str], HubStub], tmp_path: Path
) -> None:
    stub = hub_for("v3.1-terminus:Q2_K_XL")
    env = {**os.environ, "OLLAMA_MODELS": str(ollama_server.models_dir)}
    argv = [sys.executable, "-m", "ollamads", "create", "v3.1-terminus:Q2_K_XL", "--name", "term:test",
            "--host", ollama_server.url, "--delete-shards", "-p", "num_predict=8"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    # V3.1-Terminus: the plain name, then the thinking name on the same blobs.
    assert [line.split("#")[0].strip() for line in result.stdout.strip().splitlines()[-2:]] == [
        "ollama run term:test", "ollama run term:test-think"]
    assert "deleted the downloaded files (6) now that the server has term:test" in result.stderr
    home = Path(os.environ["OLLAMADS_HOME"])
    assert sorted(p.name for p in home.rglob("*.gguf")) == []
    run = ollama_run(ollama_server, "term:test")
    assert run.returncode == 0 and "eval count" in run.stderr, run.stderr
    served = stub.bytes_served()
    again = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr
    assert stub.bytes_served() == served, "the shards were fetched again after --delete-shards"
    assert "already registered" in again.stderr
    assert again.stdout.strip().splitlines()[-1].startswith("ollama run term:test-think")


@pytest.mark.parametrize(
    ("line", "route", "terms"),
    [
        ("split", "direct", {"download", "model blob (written once)"}),
        ("merged", "merge-into-store", {"download", "merged model blob (written once)"}),
        ("layers", "place", {"download"}),
    ],
)
def test_dry_run_and_disk_preflight_name_every_term(
    request: pytest.FixtureRequest, hub_for: Callable[[str], HubStub], monkeypatch: pytest.MonkeyPatch,
    line: str, route: str, terms: set[str],
) -> None:
    server: OllamaServe = request.getfixturevalue(f"{line}_line_server")
    monkeypatch.setenv("OLLAMA_MODELS", str(server.models_dir))
    stub = hub_for("r1:IQ1_S")
    plan = plan_create("r1:IQ1_S", host=server.url)
    size = sum(len(b) for b in stub.repos[plan.entry.repo].values())
    assert plan.pull.bytes_to_download == size
    assert plan.route == route and plan.merged_path is None
    assert {n.what for n in plan.needs} == terms
    assert {n.bytes for n in plan.needs} == {size}
    # Only the headers, read to check the tensor types where the server cannot read them all.
    headers_read = stub.bytes_served()
    assert headers_read == 0 if not plan.server.unreadable_tensor_types else 0 < headers_read <= size

    import ollamads.units

    monkeypatch.setattr(ollamads.units, "disk_free", lambda directory: 1000)
    with pytest.raises(InsufficientSpaceError) as err:
        create("r1:IQ1_S", name="nospace:test", host=server.url)
    for need in plan.needs:
        assert f"{need.what} " in err.value.message and f"in {need.directory}" in err.value.message
    assert "needed on " in err.value.message and err.value.message.endswith("1000 B free")
    assert stub.bytes_served() == headers_read
    tags = requests.get(f"{server.url}/api/tags", timeout=10).json()["models"]
    assert "nospace:test" not in {m["name"] for m in tags}


def test_a_remote_server_costs_no_local_store_disk(
    split_line_server: OllamaServe, hub_for: Callable[[str], HubStub], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that is not on this machine: its store is not this machine's disk."""
    monkeypatch.setenv("OLLAMA_MODELS", str(split_line_server.models_dir))
    hub_for("r1:IQ1_S")
    import ollamads.ollama.store as store

    monkeypatch.setattr(store, "_is_loopback", lambda url: False)
    plan = plan_create("r1:IQ1_S", host=split_line_server.url)
    assert plan.route == "upload" and plan.store.store is None
    assert plan.store.reason == f"the server at {split_line_server.url} is not on this machine"
    assert [n.what for n in plan.needs] == ["download"]


def test_unknown_model_suggests(capsys: pytest.CaptureFixture[str]) -> None:
    from ollamads.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["create", "v3.1-terminsu:TQ1_0"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean" in err and "v3.1-terminus" in err
