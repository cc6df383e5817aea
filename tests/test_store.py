"""Getting files into a real server's store without uploading them, on both Ollama lines.

* The model blob ollamads writes for v0.30+ is byte for byte what the server's own
  ``llama-quantize COPY`` rewrite produces.
* A model written straight into the store (the ``direct`` route) is the same model that
  ``/api/create`` makes: same manifest bytes, same ``/api/show``, same prompts, same seeded
  generations, and ``ollama cp``/``rm`` and the server's start-up prune treat it the same.
* Placement: a hard link on one filesystem, an in-kernel copy across filesystems, and the upload
  fallback (a store that belongs to another user, a store this process cannot write, a store that
  is not the server's), each named; a placed blob the server cannot see registers nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from ollamads.catalog.families import get_family
from ollamads.errors import PlacementError
from ollamads.gguf.merge import write_merged
from ollamads.gguf.shards import open_shard_set
from ollamads.ollama.api import OllamaAPI
from ollamads.ollama.modelfile import ModelDefinition
from ollamads.ollama.serve import MODEL_ENVIRONMENT, OllamaServe, serve_settings
from ollamads.ollama.store import LocalStore, ModelName, Placement, StoreCheck, find_store
from ollamads.registration import plan_registration, register_files
from ollamads.tiny import write_tiny_model, write_tiny_shards
from tests.support.serve_command import ServeCommand
from tests.support.servers import ollama_binary
from tests.support.toolchain import cannot_run, llama_cpp_tool

pytestmark = pytest.mark.integration
TINY = {"num_predict": 8, "num_ctx": 1024}
CONVERSATIONS = [
    [{"role": "user", "content": "Why is the sky blue?"}],
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "And you?"},
    ],
]


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def process_unknown(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """As where the server's process cannot be seen (another PID namespace, no /proc) and no
    `ollamads serve` record names its store: the store is looked for where this shell says,
    and the probe decides."""
    import ollamads.ollama.store as store

    monkeypatch.setattr(store, "server_process", lambda url: None)
    monkeypatch.setenv("OLLAMADS_HOME", str(tmp_path_factory.mktemp("home-without-serve-record")))


def _definition(name: str, family: str, files: list[Path], server: OllamaServe) -> ModelDefinition:
    assert server.info is not None
    return ModelDefinition.for_family(name, get_family(family), files, server=server.info, parameters=TINY)


def _register(server: OllamaServe, name: str, family: str, files: list[Path], *, store: bool) -> object:
    assert server.info is not None
    check = find_store(server.info) if store else StoreCheck(None, "forced upload")
    plan = plan_registration(server.info, files, store_check=check)
    return register_files(plan, _definition(name, family, files, server))


# --- the blob -----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["v3.1", "r1", "v3"])
@pytest.mark.parametrize("n_shards", [1, 3])
def test_quantize_copy_layout_is_what_llama_quantize_writes(tmp_path: Path, family: str, n_shards: int) -> None:
    quantize = llama_cpp_tool("llama-quantize")
    if n_shards == 1:
        files = [write_tiny_model(tmp_path / "in" / "m.gguf", family, seed=3)]
    else:
        files = write_tiny_shards(tmp_path / "in", family, n_shards=n_shards, seed=3)
    theirs = tmp_path / "theirs.gguf"
    env = {**os.environ, "OLLAMA_LLAMA_CPP_COMPAT": "0"}
    subprocess.run([str(quantize), "--allow-requantize", str(files[0]), str(theirs), "COPY"],
                   check=True, capture_output=True, env=env, timeout=120)
    ours = tmp_path / "ours.gguf"
    fd = os.open(ours, os.O_RDWR | os.O_CREAT | os.O_EXCL)
    try:
        digest = write_merged(open_shard_set(files[0]), fd, style="quantize-copy", sha256=True)
    finally:
        os.close(fd)
    assert ours.read_bytes() == theirs.read_bytes()
    assert f"sha256:{digest}" == _sha256(theirs)


# --- the direct route is /api/create ------------------------------------------------------------


def _manifest(server: OllamaServe, name: str) -> bytes:
    return ModelName.parse(name).manifest_path(server.models_dir).read_bytes()


def _show(server: OllamaServe, name: str) -> dict[str, object]:
    shown = OllamaAPI(server.url).show(name)
    assert shown is not None
    # The modelfile's header names the model, and Go prints parameters in map order:
    # compare the lines as sets.
    shown["modelfile"] = sorted(
        line for line in str(shown["modelfile"]).splitlines() if line and not line.startswith("#")
    )
    shown["parameters"] = sorted(str(shown.get("parameters", "")).splitlines())
    shown.pop("modified_at", None)
    return shown


def _generate(server: OllamaServe, name: str) -> str:
    response = requests.post(f"{server.url}/api/generate", timeout=300, json={
        "model": name, "prompt": "Why is the sky blue?", "stream": False, "think": False,
        "options": {"seed": 7, "temperature": 0, "num_predict": 8},
    })
    response.raise_for_status()
    return str(response.json()["response"])


@pytest.mark.parametrize("family", ["v3.1", "r1"])
def test_direct_route_makes_the_model_api_create_makes(
    split_line_server: OllamaServe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, family: str
) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(split_line_server.models_dir))
    shards = write_tiny_shards(tmp_path / "hub", family, n_shards=3, seed=11)
    slug = family.replace(".", "")
    via_api = _register(split_line_server, f"api-{slug}:equal", family, shards, store=False)
    direct = _register(split_line_server, f"direct-{slug}:equal", family, shards, store=True)
    assert via_api.route == "upload" and direct.route == "direct"  # type: ignore[attr-defined]
    assert direct.bytes_uploaded == 0  # type: ignore[attr-defined]

    # The same bytes: the server's rewrite of the shards is our blob, and every small blob and
    # the manifest match.
    assert _manifest(split_line_server, f"api-{slug}:equal") == _manifest(split_line_server, f"direct-{slug}:equal")
    assert _show(split_line_server, f"api-{slug}:equal") == _show(split_line_server, f"direct-{slug}:equal")
    api = OllamaAPI(split_line_server.url)
    for messages in CONVERSATIONS:
        think = {"think": True} if family == "r1" else {"think": False}
        assert api.render({"model": f"api-{slug}:equal", "messages": messages, **think}) == api.render(
            {"model": f"direct-{slug}:equal", "messages": messages, **think})
    assert _generate(split_line_server, f"api-{slug}:equal") == _generate(split_line_server, f"direct-{slug}:equal")


def _cli(server: OllamaServe | ServeCommand, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OLLAMA_HOST": server.bind, "HOME": str(server.models_dir.parent)}
    return subprocess.run([server.binary, *args], capture_output=True, text=True, timeout=300,
                          env=env, stdin=subprocess.DEVNULL)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServeCommand]:
    """The real ``ollamads serve`` command on a v0.30+ server: what a user runs, its settings."""
    server = ServeCommand(tmp_path / "models", ollama_binary("split"), home=tmp_path)
    server.start()
    yield server
    server.stop()


def test_ollamads_serve_prints_every_variable_it_sets_and_leaves_pruning_on(served: ServeCommand) -> None:
    printed = served.printed_variables()
    assert printed == serve_settings(served.models_dir, served.bind).variables
    assert {"OLLAMA_HOST", "OLLAMA_MODELS", *MODEL_ENVIRONMENT} <= set(printed)
    child = served.child_environment()
    assert {name: child.get(name) for name in printed} == printed, "the server runs with what was printed"
    assert "OLLAMA_NOPRUNE" not in child, "Ollama's pruning stays on under ollamads serve"


def test_cp_rm_and_the_startup_prune_treat_a_direct_model_like_any_other(
    served: ServeCommand, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = served
    monkeypatch.setenv("OLLAMA_MODELS", str(server.models_dir))
    shards = write_tiny_shards(tmp_path / "hub", "v3.1", n_shards=2, seed=12)
    result = _register(server, "direct:prune", "v3.1", shards, store=True)  # type: ignore[arg-type]
    assert result.route == "direct"  # type: ignore[attr-defined]
    copy = _cli(server, "cp", "direct:prune", "copy:prune")
    assert copy.returncode == 0, copy.stderr
    assert _manifest(server, "copy:prune") == _manifest(server, "direct:prune")  # type: ignore[arg-type]
    assert _cli(server, "rm", "copy:prune").returncode == 0
    assert _cli(server, "run", "--verbose", "direct:prune", "hi").returncode == 0

    # Re-registering the name from other files (what a new upload of the quant brings): the
    # server's create deletes the layers only the old manifest used, as it does for any model.
    old_model = _model_digest(server)
    other = write_tiny_shards(tmp_path / "hub2", "v3.1", n_shards=2, seed=13)
    result = _register(server, "direct:prune", "v3.1", other, store=False)  # type: ignore[arg-type]
    assert _model_digest(server) != old_model
    assert not LocalStore(server.models_dir).blob_path(old_model).exists(), "the replaced model blob stays"

    # Age every file past the prune's one-hour grace, leave a stale temp file, restart.
    stale = server.models_dir / "blobs" / "sha256-ollamads-0123456789ab-partial"
    stale.write_bytes(b"left by a killed run")
    old = 1_000_000_000
    for path in (server.models_dir / "blobs").iterdir():
        os.utime(path, (old, old))
    server.stop()
    server.start()
    assert not stale.exists(), "the server's prune removes what a killed write left"
    unused = [p.name for p in (server.models_dir / "blobs").iterdir()
              if p.name.replace("-", ":") not in _referenced(server)]
    assert unused == [], f"the start-up prune left unused blobs: {unused}"
    manifest = json.loads(_manifest(server, "direct:prune"))  # type: ignore[arg-type]
    for layer in [manifest["config"], *manifest["layers"]]:
        assert LocalStore(server.models_dir).has_blob(layer["digest"], layer["size"])
    run = _cli(server, "run", "--verbose", "direct:prune", "hi")
    assert run.returncode == 0 and "eval count" in run.stderr, run.stderr
    # V3.1 has a second name on the same blobs (thinking by default): both must go.
    assert _cli(server, "rm", "direct:prune").returncode == 0
    assert _cli(server, "rm", "direct:prune-think").returncode == 0
    left = [p.name for p in (server.models_dir / "blobs").iterdir()]
    assert left == [], f"rm left blobs behind: {left}"


def _model_digest(server: ServeCommand) -> str:
    manifest = json.loads(_manifest(server, "direct:prune"))  # type: ignore[arg-type]
    return next(layer["digest"] for layer in manifest["layers"] if layer["mediaType"].endswith(".model"))


def _referenced(server: ServeCommand) -> set[str]:
    digests = set()
    for path in (server.models_dir / "manifests").rglob("*"):
        if path.is_file():
            manifest = json.loads(path.read_bytes())
            digests.update(layer["digest"] for layer in [manifest["config"], *manifest["layers"]])
    return digests


# --- placement ----------------------------------------------------------------------------------


def test_the_api_create_fallback_of_v030_hard_links_the_shards(
    split_line_server: OllamaServe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An untested v0.30+ release: shards linked into the store, then the server's own create."""
    monkeypatch.setenv("OLLAMA_MODELS", str(split_line_server.models_dir))
    shards = write_tiny_shards(tmp_path / "dl", "r1", n_shards=3, seed=25)
    assert split_line_server.info is not None
    plan = replace(plan_registration(split_line_server.info, shards), route="place")
    result = register_files(plan, _definition("fallback:test", "r1", shards, split_line_server))
    assert result.bytes_uploaded == 0 and result.bytes_written == 0
    assert set(result.placements.values()) == {Placement.HARDLINK}
    store = LocalStore(split_line_server.models_dir)
    for shard in shards:
        assert store.blob_path(_sha256(shard)).stat().st_ino == shard.stat().st_ino
    run = _cli(split_line_server, "run", "--verbose", "fallback:test", "hi")
    assert run.returncode == 0 and "eval count" in run.stderr, run.stderr


def test_hard_link_on_one_filesystem(
    merged_line_server: OllamaServe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(merged_line_server.models_dir))
    model = write_tiny_model(tmp_path / "dl" / "single.gguf", "v3", seed=21)
    lines: list[str] = []
    assert merged_line_server.info is not None
    plan = plan_registration(merged_line_server.info, [model])
    result = register_files(plan, _definition("linked:test", "v3", [model], merged_line_server),
                            report=lines.append)
    assert result.route == "place" and result.placements == {"single.gguf": Placement.HARDLINK}
    assert result.bytes_uploaded == 0 and result.bytes_written == 0
    blob = LocalStore(merged_line_server.models_dir).blob_path(_sha256(model))
    assert blob.stat().st_ino == model.stat().st_ino
    assert "single.gguf: hard link" in lines
    assert "linked:test" in {m["name"] for m in OllamaAPI(merged_line_server.url).tags()}


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64M", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        cannot_run(f"cannot mount a tmpfs here ({done.stderr.strip()}): it needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("line", ["merged", "split", "layers"])
def test_another_filesystem_gets_an_in_kernel_copy(
    tmpfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str
) -> None:
    server = OllamaServe(tmpfs / "models", binary=ollama_binary(line), log_path=tmp_path / "serve.log",
                         env={"HOME": str(tmp_path)})
    with server:
        monkeypatch.setenv("OLLAMA_MODELS", str(server.models_dir))
        model = write_tiny_model(tmp_path / "dl" / "single.gguf", "v3", seed=22)
        assert server.info is not None
        plan = plan_registration(server.info, [model])
        if server.info.gguf_handling == "rewrite":
            plan = replace(plan, route="place")  # the /api/create fallback of v0.30-v0.34.0
        assert plan.route == "place"
        result = register_files(plan, _definition("copied:test", "v3", [model], server))
        assert result.placements == {"single.gguf": Placement.COPY}
        blob = LocalStore(server.models_dir).blob_path(_sha256(model))
        assert blob.read_bytes() == model.read_bytes() and blob.stat().st_mode & 0o777 == 0o644
        assert "copied:test" in {m["name"] for m in OllamaAPI(server.url).tags()}


def test_a_store_of_another_user_falls_back_to_upload(
    ollama_server: OllamaServe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, process_unknown: None,
) -> None:
    merged_line_server = ollama_server  # both lines
    # A look-alike store owned by someone else (as the Linux service's store is).
    other = tmp_path / "other" / "models"
    (other / "blobs").mkdir(parents=True)
    os.chown(other / "blobs", 65534, 65534)
    monkeypatch.setenv("OLLAMA_MODELS", str(other))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no default store either
    model = write_tiny_model(tmp_path / "dl" / "single.gguf", "v3", seed=23)
    assert merged_line_server.info is not None
    plan = plan_registration(merged_line_server.info, [model])
    assert plan.route == "upload" and plan.store_reason == f"{other} belongs to nobody"
    result = register_files(plan, _definition("uploaded:test", "v3", [model], merged_line_server))
    assert result.placements in ({"single.gguf": Placement.UPLOAD}, {"single.gguf": Placement.PRESENT})
    assert "uploaded:test" in {m["name"] for m in OllamaAPI(merged_line_server.url).tags()}


def test_a_read_only_store_falls_back_to_upload(
    merged_line_server: OllamaServe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, process_unknown: None,
) -> None:
    view = tmp_path / "ro-view"
    view.mkdir()
    store = merged_line_server.models_dir
    if subprocess.run(["mount", "--bind", str(store), str(view)], capture_output=True).returncode:
        cannot_run("cannot bind-mount here: it needs root")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], check=True, capture_output=True)
        monkeypatch.setenv("OLLAMA_MODELS", str(view))
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        assert merged_line_server.info is not None
        check = find_store(merged_line_server.info)
        assert check.store is None and check.reason == f"{view} is not writable"
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


def test_a_store_the_server_does_not_use_falls_back_to_upload(
    split_line_server: OllamaServe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, process_unknown: None,
) -> None:
    decoy = tmp_path / "decoy"
    (decoy / "blobs").mkdir(parents=True)
    monkeypatch.setenv("OLLAMA_MODELS", str(decoy))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert split_line_server.info is not None
    check = find_store(split_line_server.info)
    assert check.store is None and check.reason == f"{decoy} is not the running server's store"
    assert list((decoy / "blobs").iterdir()) == []  # the probe blob was removed


def test_a_placed_blob_the_server_cannot_see_registers_nothing(
    merged_line_server: OllamaServe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(merged_line_server.models_dir))
    model = write_tiny_model(tmp_path / "dl" / "single.gguf", "v3", seed=24)
    assert merged_line_server.info is not None
    plan = plan_registration(merged_line_server.info, [model])
    elsewhere = LocalStore(tmp_path / "elsewhere")
    (elsewhere.blobs).mkdir(parents=True)
    # As if the store had changed under us: the link lands where the server does not look.
    real_place = LocalStore.place
    monkeypatch.setattr(LocalStore, "place", lambda self, path, digest: real_place(elsewhere, path, digest))
    with pytest.raises(PlacementError) as err:
        register_files(plan, _definition("unseen:test", "v3", [model], merged_line_server))
    assert "does not see single.gguf" in err.value.message and "nothing was registered" in err.value.message
    assert OllamaAPI(merged_line_server.url).show("unseen:test") is None
