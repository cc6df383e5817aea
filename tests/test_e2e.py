"""End to end on real servers: tiny shards -> ollamads merge/register -> the real `ollama` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from ollamads.catalog.families import get_family
from ollamads.demo import DEMO_MODEL, run_demo
from ollamads.ollama.api import OllamaAPI
from ollamads.ollama.modelfile import ModelDefinition, go_template, thinking_name
from ollamads.ollama.register import create_companions
from ollamads.ollama.serve import OllamaServe
from ollamads.registration import plan_registration, register_files
from ollamads.tiny import write_tiny_shards
from tests.support.servers import ollama_binary

pytestmark = pytest.mark.integration
#: Random weights rarely emit EOS: bound the answer and the context.
TINY_PARAMETERS = ("-p", "num_predict=12", "-p", "num_ctx=1024")


def ollamads(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ollamads", *args],
        capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})},
    )


def ollama_cli(serve: OllamaServe, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OLLAMA_HOST": serve.bind, "HOME": str(serve.models_dir.parent)}
    return subprocess.run(
        [serve.binary, *args], capture_output=True, text=True, timeout=300, env=env,
        stdin=subprocess.DEVNULL,
    )


def model_names(serve: OllamaServe) -> set[str]:
    tags = requests.get(f"{serve.url}/api/tags", timeout=10).json()
    return {m["name"] for m in tags["models"]}


@pytest.mark.parametrize(
    ("family", "mode"),
    [("v3.1", "renderer"), ("v3.1", "template"), ("r1", "template"), ("v3", "template")],
)
def test_shards_to_ollama_run(ollama_server: OllamaServe, tmp_path: Path, family: str, mode: str) -> None:
    info = ollama_server.info
    assert info is not None
    shards = write_tiny_shards(tmp_path / "hub", family, n_shards=3)
    files = [str(p) for p in shards]
    if not info.accepts_split_gguf:
        merged = tmp_path / "merged.gguf"
        result = ollamads("merge", files[0], str(merged))
        assert result.returncode == 0, result.stderr
        assert merged.is_file()
        files = [str(merged)]
    name = f"tiny-{family.replace('.', '')}-{mode}:test"
    modelfile = tmp_path / "Modelfile"
    result = ollamads(
        "register", name, *files, "--family", family, "--template-mode", mode,
        "--host", ollama_server.url, "--modelfile", str(modelfile), *TINY_PARAMETERS,
    )
    assert result.returncode == 0, result.stderr
    assert f"ollama run {name}" in result.stdout

    run = ollama_cli(ollama_server, "run", "--verbose", name, "hi")
    assert run.returncode == 0, run.stderr
    # The tiny R1's few tokens may all be reasoning, which `ollama run` does not print off a
    # terminal; --verbose's timing block proves the model generated.
    assert "eval count" in run.stderr, run.stderr

    shown = ollama_cli(ollama_server, "show", "--modelfile", name)
    assert shown.returncode == 0, shown.stderr
    params = get_family(family).parameters
    assert f"PARAMETER temperature {params['temperature']}" in shown.stdout
    assert "PARAMETER num_ctx 1024" in shown.stdout and "PARAMETER num_predict 12" in shown.stdout
    assert "PARAMETER stop <｜end▁of▁sentence｜>" in shown.stdout
    template = go_template(get_family(family).go_template, thinking=family != "v3.1",
                           line=ollama_server.info.line)
    assert template in shown.stdout and "\nRENDERER" not in shown.stdout
    if family == "v3.1":
        # The thinking name, on the same blobs: ollama run without --think reasons there.
        thinker = thinking_name(name)
        assert f"ollama run {thinker}" in result.stdout
        written = (tmp_path / "Modelfile-think").read_text(encoding="utf-8")
        assert f"\nFROM {name}\n" in written
        assert ("RENDERER deepseek3.1" if mode == "renderer" else "<think>{{ .Thinking }}</think>") in written
        dry = ollamads("register", name, *files, "--family", family, "--template-mode", mode,
                       "--host", ollama_server.url, "--dry-run", *TINY_PARAMETERS)
        assert dry.returncode == 0 and dry.stdout.count("# Written by ollamads") == 2, dry.stderr
        think_run = ollama_cli(ollama_server, "run", "--verbose", thinker, "hi")
        assert think_run.returncode == 0 and think_run.stdout.startswith("Thinking..."), think_run
        shown = ollama_cli(ollama_server, "show", "--modelfile", thinker)
        assert "PARAMETER num_ctx 1024" in shown.stdout
        if mode == "renderer":
            assert "RENDERER deepseek3.1" in shown.stdout and "PARSER deepseek3" in shown.stdout
        else:
            assert go_template(get_family(family).go_template, line=ollama_server.info.line) in shown.stdout
    # What we wrote for the user is what the server holds.
    assert "PARAMETER temperature" in modelfile.read_text(encoding="utf-8")


@pytest.mark.parametrize(("line", "handling"), [("merged", "merge"), ("split", "rewrite"), ("layers", "layers")])
def test_demo_on_each_line(line: str, handling: str, tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_demo(lines.append, workdir=tmp_path, ollama_binary=ollama_binary(line))
    assert result.server.gguf_handling == handling
    assert result.model == DEMO_MODEL
    on, off = result.turns
    assert on.model == thinking_name(DEMO_MODEL) and off.model == DEMO_MODEL
    assert on.think and on.thinking and not on.content
    assert not off.think and off.content and not off.thinking
    assert len(result.files) == 3  # the shards; a merge, where needed, went into the store
    assert result.modelfile.is_file()
    assert any("registered" in l for l in lines)
    # The demo's server runs with `ollamads serve`'s settings (Ollama logs its configuration).
    log = (tmp_path / "serve.log").read_text(errors="replace")
    assert "OLLAMA_FLASH_ATTENTION:true" in log and "OLLAMA_KV_CACHE_TYPE:q8_0" in log


def test_the_tiny_model_runs_under_ollamads_serve_settings(ollama_server: OllamaServe, tmp_path: Path) -> None:
    """A q8_0 KV cache in blocks of 32 must divide MLA's K head (the tiny model's: 64 + 32)."""
    assert ollama_server.extra_env["OLLAMA_KV_CACHE_TYPE"] == "q8_0"
    (model,) = write_tiny_shards(tmp_path, "v3", n_shards=1)
    result = ollamads("register", "kvq8:test", str(model), "--family", "v3", "--host", ollama_server.url,
                      *TINY_PARAMETERS)
    assert result.returncode == 0, result.stderr
    answer = requests.post(f"{ollama_server.url}/api/chat", timeout=120, json={
        "model": "kvq8:test", "messages": [{"role": "user", "content": "hi"}], "stream": False})
    assert answer.status_code == 200, answer.text
    if ollama_server.info and ollama_server.info.accepts_split_gguf:
        # v0.30+ passes the settings on to llama-server (v0.24 turns flash attention off for
        # deepseek2 on CPU, and with it the quantised cache).
        log = ollama_server.log_path.read_text(errors="replace")
        assert "--cache-type-k q8_0 --cache-type-v q8_0 --flash-attn on" in log


def test_shards_are_accepted_as_is_on_split_line(split_line_server: OllamaServe, tmp_path: Path) -> None:
    shards = write_tiny_shards(tmp_path, "v3.1", n_shards=4)
    result = ollamads(
        "register", "four:shards", *map(str, shards), "--host", split_line_server.url, *TINY_PARAMETERS
    )
    assert result.returncode == 0, result.stderr
    assert "four:shards" in model_names(split_line_server)


def test_the_thinking_name_is_a_second_manifest_on_the_same_blobs(
    ollama_server: OllamaServe, tmp_path: Path
) -> None:
    """NAME-think is made ``from`` NAME: the model layer is reused as it is (no upload, no
    llama-quantize rewrite on v0.30+); only a template blob and a config are new."""
    info = ollama_server.info
    assert info is not None
    shards = write_tiny_shards(tmp_path / "hub", "v3.1", n_shards=3)
    definition = ModelDefinition.for_family("twins:test", get_family("v3.1"), shards, server=info,
                                            parameters={"num_predict": 4})
    plan = plan_registration(info, shards, merged_path=tmp_path / "merged.gguf")
    blobs = ollama_server.models_dir / "blobs"
    registered = register_files(plan, definition)
    before = {p.name: p.stat().st_size for p in blobs.iterdir()}
    statuses: list[str] = []
    create_companions(OllamaAPI(ollama_server.url), definition, statuses.append)
    added = {p.name: p.stat().st_size for p in blobs.iterdir() if p.name not in before}
    assert registered.companions == ("twins:test-think",)
    assert sum(added.values()) < 64 << 10, added  # a template and a config, no model copy
    assert not any("validating" in s or "quantiz" in s for s in statuses), statuses
    layers = {}
    for tag in ("test", "test-think"):
        manifest = json.loads((ollama_server.models_dir / "manifests" / "registry.ollama.ai" / "library"
                               / "twins" / tag).read_text())
        layers[tag] = {layer["mediaType"].rsplit(".", 1)[-1]: layer["digest"] for layer in manifest["layers"]}
    assert layers["test"]["model"] == layers["test-think"]["model"]
    assert layers["test"]["template"] != layers["test-think"]["template"]
