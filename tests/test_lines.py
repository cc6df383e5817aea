"""What each Ollama line does with a model's GGUF files, proven on its tested release, and what
ollamads does about it.

* The server's own handling (``/api/create`` with the shards placed in its store): v0.24 loads
  only the last shard, which fails (so it must get one merged file), v0.32.15 rewrites the
  shards into one new blob, v0.34.4 keeps them as one layer each, byte for byte.
* The route and the disk check follow it: a 671B split quant on v0.34.4 costs 0 bytes beyond
  the download, and a disk with less free space than the model is enough.
* A server started elsewhere (its own ``OLLAMA_MODELS``, not exported, no ``ollamads serve``
  record) has its store found from its process; a server of another user is named before
  anything is written, with the ways to let ollamads place files, and its upload is counted on
  this machine's disk; a merge made only to be uploaded does not stay.
* Tensor types a server cannot read are refused before a byte is written.
* A release newer than any tested is treated like the newest and checked after registration.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from ollamads.catalog import resolve
from ollamads.catalog.families import get_family
from ollamads.errors import InsufficientSpaceError, ServerError
from ollamads.gguf.deepseek2 import DeepSeek2Dims
from ollamads.ollama.api import OllamaAPI
from ollamads.ollama.modelfile import ModelDefinition
from ollamads.ollama.serve import OllamaServe
from ollamads.ollama.store import MEDIA_MODEL, LocalStore, StoreCheck
from ollamads.ollama.versions import ServerInfo
from ollamads.pipeline import create, plan_create
from ollamads.registration import check_registered, plan_registration, register_files
from ollamads.tiny import write_tiny_model, write_tiny_shards
from ollamads.units import check_space
from tests.support.elsewhere import server_started_elsewhere
from tests.support.hubstub import HubStub
from tests.support.servers import ollama_binary
from tests.support.synthetic import deepseek_v3_sparse, ternary_experts, tiny_repo, write_synthetic
from tests.support.toolchain import executable

pytestmark = pytest.mark.integration
TINY = {"num_predict": 4, "num_ctx": 1024}
GB = 10**9


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _definition(name: str, files: list[Path], info: ServerInfo, family: str = "v3") -> ModelDefinition:
    return ModelDefinition.for_family(name, get_family(family), files, server=info, parameters=TINY)


def _model_layers(store: Path, name: str) -> list[str]:
    manifest = LocalStore(store).manifest(name)
    assert manifest is not None, name
    return [layer["digest"] for layer in manifest["layers"] if layer["mediaType"] == MEDIA_MODEL]


def _names(url: str) -> set[str]:
    return {m["name"] for m in OllamaAPI(url).tags()}


def _ollamads(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ollamads", *args], capture_output=True, text=True,
                          timeout=600, env=env)


def _env_without_store(tmp_path: Path) -> dict[str, str]:
    """ollamads in a shell that does not know the server's store."""
    env = {k: v for k, v in os.environ.items() if k not in ("OLLAMA_MODELS", "OLLAMA_HOST")}
    env.update(HOME=str(tmp_path / "user-home"), OLLAMADS_HOME=str(tmp_path / "ollamads-home"))
    return env


# --- what each release does with shards ---------------------------------------------------------


@pytest.mark.parametrize("line", ["split", "layers"])
def test_what_the_server_does_with_placed_shards(request: pytest.FixtureRequest, tmp_path: Path, line: str) -> None:
    """/api/create from the shards themselves: one rewritten blob on v0.32.15, the shards kept
    as layers in order on v0.34.4 (what the route and the disk check count on)."""
    server: OllamaServe = request.getfixturevalue(f"{line}_line_server")
    info = server.info
    assert info is not None
    shards = write_tiny_shards(tmp_path, "v3", n_shards=3)
    plan = plan_registration(info, shards, store_check=StoreCheck(LocalStore(server.models_dir), "the test's"))
    result = register_files(replace(plan, route="place"), _definition(f"placed-{line}:test", shards, info))
    assert result.created
    layers = _model_layers(server.models_dir, f"placed-{line}:test")
    digests = [_sha256(p) for p in shards]
    if info.gguf_handling == "layers":
        assert layers == digests
    else:
        assert len(layers) == 1 and layers[0] not in digests


def test_the_old_line_loads_only_the_last_shard_so_a_split_set_is_merged(
    merged_line_server: OllamaServe, tmp_path: Path
) -> None:
    """v0.24 given the shards registers them as three model layers and then loads only the
    last one, which fails: why that line gets one merged file (``merge-into-store``)."""
    info = merged_line_server.info
    assert info is not None and info.gguf_handling == "merge"
    shards = write_tiny_shards(tmp_path, "v3", n_shards=3)
    plan = plan_registration(info, shards,
                             store_check=StoreCheck(LocalStore(merged_line_server.models_dir), "the test's"))
    assert plan.route == "merge-into-store"
    register_files(replace(plan, route="place"), _definition("shards-old:test", shards, info))
    layers = _model_layers(merged_line_server.models_dir, "shards-old:test")
    assert sorted(layers) == sorted(_sha256(p) for p in shards)  # in Go's map order
    answer = requests.post(f"{merged_line_server.url}/api/generate",
                           json={"model": "shards-old:test", "prompt": "hi", "stream": False}, timeout=300)
    # Which shard comes last decides the wording ("unable to load model: <blob>" for a later
    # shard, "model failed to load" for the first, which has the metadata but not the tensors).
    assert answer.status_code == 500
    assert "unable to load model" in answer.text or "model failed to load" in answer.text


# --- the route and the disk check at 671B scale ---------------------------------------------------


def test_the_disk_check_counts_what_each_line_writes_for_a_671b_split_quant(
    ollama_server: OllamaServe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real 671B shape (144 GB, as a 1.58-bit quant) in 5 sparse shards on the store's filesystem, with 63.7 GB free:
    v0.34.4 needs nothing beyond the files (hard links), the other lines one model's worth."""
    info = ollama_server.info
    assert info is not None
    shards = deepseek_v3_sparse(tmp_path / "dl", shards=5)
    size = sum(p.stat().st_size for p in shards)
    assert size > 140 * GB
    monkeypatch.setenv("OLLAMA_MODELS", str(ollama_server.models_dir))
    plan = plan_registration(info, shards)
    expected = {"merge": ("merge-into-store", size), "rewrite": ("direct", size), "layers": ("place", 0)}
    route, written = expected[info.gguf_handling]
    assert plan.route == route
    assert sum(n.bytes for n in plan.needs) == written
    import ollamads.units

    monkeypatch.setattr(ollamads.units, "disk_free", lambda directory: int(63.7 * GB))
    if written:
        with pytest.raises(InsufficientSpaceError):
            check_space(plan.needs, "671b:test")
    else:
        check_space(plan.needs, "671b:test")
    # The same through the CLI's dry run.
    dry = _ollamads("register", "v3-671b:test", *map(str, shards), "--family", "v3", "--dry-run",
                    "--host", ollama_server.url,
                    env={**os.environ, "OLLAMA_MODELS": str(ollama_server.models_dir)})
    assert dry.returncode == 0, dry.stderr
    assert f"# route: {route} " in dry.stdout
    disk_lines = [line for line in dry.stdout.splitlines() if line.startswith("# disk:")]
    assert (disk_lines == []) == (written == 0), disk_lines


# --- a server started elsewhere ------------------------------------------------------------------


@pytest.mark.parametrize("line", ["merged", "split", "layers"])
def test_the_store_of_a_server_started_elsewhere_is_found_from_its_process(tmp_path: Path, line: str) -> None:
    """No OLLAMA_MODELS here, no `ollamads serve` record: the store comes from the process
    listening on the port, and nothing is uploaded."""
    shards = write_tiny_shards(tmp_path / "dl", "v3", n_shards=2)
    with server_started_elsewhere(ollama_binary(line)) as server:
        env = _env_without_store(tmp_path)
        run = _ollamads("register", "elsewhere:test", *map(str, shards), "--family", "v3",
                        "--host", server.url, "--parameter", "num_ctx=1024", env=env)
        assert run.returncode == 0, run.stderr + server.log()
        assert f"the server's store is {server.models_dir} (from its process, pid {server.process.pid})" \
            in run.stderr
        assert ", 0 uploaded)" in run.stderr
        assert "elsewhere:test" in _names(server.url)
        blobs = {p.name for p in (server.models_dir / "blobs").iterdir()}
        assert not any(p.name.endswith(".gguf") for p in (tmp_path / "dl").iterdir()
                       if p.name not in {s.name for s in shards}), "a merged file was left beside the shards"
        assert blobs


@pytest.mark.parametrize("line", ["merged", "layers"])
def test_a_server_of_another_user_is_named_before_anything_is_written(tmp_path: Path, line: str) -> None:
    """The Linux service runs as its own user: ollamads says so first, with the ways to let it
    place files, counts the upload on the server's disk, and a merge made to be uploaded is
    deleted once the server has it."""
    shards = write_tiny_shards(tmp_path / "dl", "v3", n_shards=2)
    with server_started_elsewhere(ollama_binary(line), foreign_user=True) as server:
        info = OllamaAPI(server.url).info()
        plan = plan_registration(info, shards)
        assert plan.route == "upload"
        assert plan.store_check.server_store == server.models_dir
        assert plan.store_check.fix and "run ollamads as nobody" in plan.store_check.fix
        upload = [n for n in plan.needs if n.what == "the server's copy of the upload"]
        assert upload and upload[0].directory == server.models_dir / "blobs"
        assert upload[0].bytes == sum(p.stat().st_size for p in shards)
        run = _ollamads("register", "foreign:test", *map(str, shards), "--family", "v3",
                        "--host", server.url, "--parameter", "num_ctx=1024", env=_env_without_store(tmp_path))
        assert run.returncode == 0, run.stderr + server.log()
        assert run.stderr.index("note:") < run.stderr.index("registering foreign:test")
        assert "foreign:test" in _names(server.url)
        leftovers = sorted(p.name for p in (tmp_path / "dl").iterdir() if p not in shards)
        assert leftovers == [], leftovers


# --- tensor types a server cannot read -----------------------------------------------------------

TERNARY_DIMS = DeepSeek2Dims(n_layer=2, n_dense_lead=1, n_embd=256, n_ff=512, n_head=4, q_lora_rank=64,
                             kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=32, v_head_dim=32,
                             n_expert=4, n_expert_shared=1, n_ff_exp=256, n_vocab=4096)


def _ternary_model(directory: Path) -> Path:
    return write_synthetic(directory, "ternary", TERNARY_DIMS, ternary_experts, data="random")[0]


@pytest.mark.parametrize("line", ["split", "layers"])
def test_a_tensor_type_the_server_cannot_read_is_refused_before_anything_is_written(
    request: pytest.FixtureRequest, tmp_path: Path, line: str,
) -> None:
    server: OllamaServe = request.getfixturevalue(f"{line}_line_server")
    model = _ternary_model(tmp_path)
    blobs_before = sorted(p.name for p in (server.models_dir / "blobs").iterdir())
    run = _ollamads("register", "ternary:test", str(model), "--family", "v3", "--host", server.url,
                    env={**os.environ, "OLLAMA_MODELS": str(server.models_dir)})
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1, run.stderr
    assert "TQ1_0" in run.stderr and f"Ollama {server.info.version}" in run.stderr  # type: ignore[union-attr]
    assert sorted(p.name for p in (server.models_dir / "blobs").iterdir()) == blobs_before
    assert "ternary:test" not in _names(server.url)


def test_v0344_itself_refuses_tq1_0_at_create(layers_line_server: OllamaServe, tmp_path: Path) -> None:
    """Why the check exists: given the file anyway, v0.34.4's own GGUF reader refuses it."""
    model = _ternary_model(tmp_path)
    digest = _sha256(model)
    LocalStore(layers_line_server.models_dir).place(model, digest)
    with pytest.raises(ServerError) as err:
        OllamaAPI(layers_line_server.url).create({"model": "ternary-raw:test", "files": {model.name: digest}})
    assert "size overflows" in err.value.message


def test_the_old_line_reads_tq1_0(merged_line_server: OllamaServe, tmp_path: Path) -> None:
    """v0.24 links llama.cpp, which has TQ1_0: it is not refused there."""
    info = merged_line_server.info
    assert info is not None and 34 not in info.unreadable_tensor_types
    model = _ternary_model(tmp_path)
    run = _ollamads("register", "ternary-old:test", str(model), "--family", "v3", "--host",
                    merged_line_server.url, "--parameter", "num_ctx=256",
                    env={**os.environ, "OLLAMA_MODELS": str(merged_line_server.models_dir)})
    assert run.returncode == 0, run.stderr
    shown = OllamaAPI(merged_line_server.url).show("ternary-old:test")
    assert shown is not None


# --- a release newer than any tested -------------------------------------------------------------


def test_a_newer_release_is_treated_like_the_newest_and_checked(tmp_path: Path) -> None:
    binary = executable("OLLAMADS_OLLAMA_UNTESTED", "Ollama v0.34.4 built as an untested release")
    shards = write_tiny_shards(tmp_path / "dl", "v3", n_shards=3)
    with server_started_elsewhere(binary) as server:
        env = _env_without_store(tmp_path)
        doctor = _ollamads("doctor", "--json", "--host", server.url, env=env)
        findings = {f["check"]: f for f in json.loads(doctor.stdout)["findings"]}
        assert findings["server"]["status"] == "warn"
        assert "newer than any release ollamads was tested with" in findings["server"]["summary"]
        run = _ollamads("register", "future:test", *map(str, shards), "--family", "v3",
                        "--host", server.url, "--parameter", "num_ctx=1024", env=env)
        assert run.returncode == 0, run.stderr + server.log()
        assert "newer than any release ollamads was tested with" in run.stderr
        assert "registered future:test (place: 0 bytes written into the store, 0 uploaded)" in run.stderr
        assert _model_layers(server.models_dir, "future:test") == [_sha256(p) for p in shards]
        # Were it to do what v0.30-v0.34.0 do, the check would remove the model and say so.
        info = OllamaAPI(server.url).info()
        plan = plan_registration(info, shards)
        pretend = replace(plan, server=replace(info, version="0.32.15"))
        with pytest.raises(ServerError) as err:
            check_registered(OllamaAPI(server.url), pretend, "future:test", [_sha256(p) for p in shards])
        assert "it was removed again" in err.value.message and "\n" not in err.value.message
        assert "future:test" not in _names(server.url)


# --- v0.34's other changes -------------------------------------------------------------------------


def test_typical_p_is_refused_up_front_where_the_server_refuses_it(
    ollama_server: OllamaServe, tmp_path: Path
) -> None:
    info = ollama_server.info
    assert info is not None
    model = write_tiny_model(tmp_path / "typ.gguf", "v3")
    run = _ollamads("register", "typ:test", str(model), "--family", "v3", "--host", ollama_server.url,
                    "--parameter", "typical_p=0.9", "--parameter", "num_ctx=1024",
                    env={**os.environ, "OLLAMA_MODELS": str(ollama_server.models_dir)})
    if info.refuses_typical_p:
        assert run.returncode == 1 and run.stderr.count("\n") == 1 and "typical_p" in run.stderr
        assert "typ:test" not in _names(ollama_server.url)
    else:
        assert run.returncode == 0, run.stderr


def test_thinking_on_generate_follows_the_name(layers_line_server: OllamaServe, tmp_path: Path) -> None:
    """v0.34 applies the thinking default on /api/generate too: the plain V3.1 name stays
    non-thinking there, the -think name's reasoning lands in `thinking`."""
    info = layers_line_server.info
    assert info is not None
    shards = write_tiny_shards(tmp_path, "v3.1", n_shards=2)
    definition = ModelDefinition.for_family("gen:test", get_family("v3.1"), shards, server=info,
                                            parameters={"num_predict": 8, "num_ctx": 1024, "seed": 1,
                                                        "temperature": 0})
    plan = plan_registration(info, shards,
                             store_check=StoreCheck(LocalStore(layers_line_server.models_dir), "the test's"))
    register_files(plan, definition)
    answers = {}
    for name in ("gen:test", "gen:test-think"):
        response = requests.post(f"{layers_line_server.url}/api/generate",
                                 json={"model": name, "prompt": "hi", "stream": False}, timeout=300)
        assert response.status_code == 200, response.text
        answers[name] = response.json()
    assert not answers["gen:test"].get("thinking")
    assert answers["gen:test-think"].get("thinking")


def test_rm_on_v0344_leaves_no_metadata_of_a_placed_model(layers_line_server: OllamaServe, tmp_path: Path) -> None:
    info = layers_line_server.info
    assert info is not None
    shards = write_tiny_shards(tmp_path, "v3", n_shards=2, seed=41)  # blobs no other test has
    store = LocalStore(layers_line_server.models_dir)
    plan = plan_registration(info, shards, store_check=StoreCheck(store, "the test's"))
    register_files(plan, _definition("sidecar:test", shards, info))
    digests = _model_layers(layers_line_server.models_dir, "sidecar:test")
    assert OllamaAPI(layers_line_server.url).show("sidecar:test") is not None
    assert OllamaAPI(layers_line_server.url).delete("sidecar:test")
    metadata = layers_line_server.models_dir / "metadata"
    left = [p for p in metadata.rglob("*") if any(d.split(":")[1] in p.name for d in digests)] \
        if metadata.is_dir() else []
    assert left == []
    assert not any(store.has_blob(d) for d in digests)
    assert all(p.is_file() for p in shards)  # the downloads themselves stay


def test_create_names_a_store_it_cannot_place_into_before_downloading(
    hub: Callable[..., HubStub], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`ollamads create` against the Linux service's kind of server: the note and the upload
    counted on the server's disk come before a byte is downloaded, and the files are verified
    downloads that are sent, not hashed again."""
    spec = "r1:IQ1_S"
    entry = resolve(spec)
    stub = hub({entry.repo: tiny_repo(entry, tmp_path / "src")})
    binary = ollama_binary("layers")  # (found through HOME's cache: before HOME changes)
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))
    with server_started_elsewhere(binary, foreign_user=True) as server:
        lines: list[str] = []

        def report(line: str) -> None:
            lines.append(f"{line} [served {stub.bytes_served()}]")

        plan = plan_create(spec, host=server.url)
        assert any(n.what == "the server's copy of the upload" and n.directory == server.models_dir / "blobs"
                   for n in plan.needs)
        served_before = stub.bytes_served()  # the headers, to check the tensor types
        result = create(spec, host=server.url, parameters=TINY, report=report)
        assert result.route == "upload" and result.created
        note = next(i for i, line in enumerate(lines) if "run ollamads as nobody" in line)
        verified = next(i for i, line in enumerate(lines) if "present and verified" in line)
        assert note < verified and lines[note].endswith(f"[served {served_before}]")
        assert result.bytes_uploaded == sum(len(b) for b in stub.repos[entry.repo].values())
        assert OllamaAPI(server.url).show(result.name) is not None


def test_a_verified_download_is_never_read_again_to_register_it(
    layers_line_server: OllamaServe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Hub's sha256 is the blob digest: `register` of files `pull` verified reads none of
    them, also after Ollama has set the times of their hard-linked blobs (create, and the
    thinking name's create) and the model was removed and registered again."""
    from ollamads import registration
    from ollamads.hub.listing import RemoteFile
    from ollamads.hub.records import remember_verified
    from ollamads.paths import local_path

    info = layers_line_server.info
    assert info is not None
    repo = "unsloth/DeepSeek-V3.1-GGUF"
    made = write_tiny_shards(tmp_path, "v3.1", n_shards=2, seed=43)
    shards = []
    for source in made:
        local = local_path(repo, f"UD-TQ1_0/{source.name}")
        local.parent.mkdir(parents=True, exist_ok=True)
        source.rename(local)
        digest = _sha256(local)
        remember_verified(repo, RemoteFile(f"UD-TQ1_0/{local.name}", local.stat().st_size,
                                           digest.split(":")[1], "0" * 40), local)
        shards.append(local)
    monkeypatch.setattr(registration, "sha256_file", lambda *a, **k: pytest.fail("a verified file was hashed"))
    api = OllamaAPI(layers_line_server.url)
    store = StoreCheck(LocalStore(layers_line_server.models_dir), "the test's")
    for _ in range(2):
        definition = ModelDefinition.for_family("verified:test", get_family("v3.1"), shards, server=info,
                                                parameters=TINY)
        result = register_files(plan_registration(info, shards, store_check=store), definition)
        assert result.created and result.route == "place"
        assert result.digests == {p.name: _sha256(p) for p in shards}
        assert api.delete("verified:test-think") and api.delete("verified:test")
