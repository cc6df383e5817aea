"""``ollamads create MODEL:QUANT --plan`` writes the plan's PARAMETERs for the server's line."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from ollamads.catalog import resolve
from ollamads.gguf.deepseek2 import DeepSeek2Dims
from ollamads.gguf.format import GGMLQuantizationType
from ollamads.ollama.api import OllamaAPI
from ollamads.ollama.serve import OllamaServe
from tests.support.cli import run_cli
from tests.support.hubstub import HubStub
from tests.support.synthetic import uniform_types, write_synthetic

pytestmark = pytest.mark.integration
SPEC = "r1:IQ1_S"
#: K rows of 256 + 32: whole blocks of q8_0, the KV type the plan assumes.
DIMS = DeepSeek2Dims(n_layer=4, n_dense_lead=1, n_embd=256, n_ff=512, n_head=4, q_lora_rank=256,
                     kv_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64,
                     n_expert=8, n_expert_shared=1, n_ff_exp=256, n_vocab=4096)


def test_create_plan_parameters(capsys: pytest.CaptureFixture[str], ollama_server: OllamaServe,
                                hub: Callable[..., HubStub], tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    entry = resolve(SPEC)
    shards = write_synthetic(tmp_path / "src", f"{entry.model.file_prefix}-{entry.quant.hub_name}",
                             DIMS, uniform_types(GGMLQuantizationType.Q8_0), shards=3, data="random")
    hub({entry.repo: {f"{entry.quant.folder}/{p.name}": p.read_bytes() for p in shards}})
    monkeypatch.setenv("OLLAMA_MODELS", str(ollama_server.models_dir))
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    smi = bindir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA GeForce RTX 4090, 24564, 24000'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    code, out, err = run_cli(capsys, "create", SPEC, "--plan", "--host", ollama_server.url,
                             "-p", "num_ctx=2048")
    assert code == 0, err
    assert "plan for Ollama" in err
    modelfile = next((Path(line.split("Modelfile: ", 1)[1].strip()) for line in err.splitlines()
                      if "Modelfile: " in line))
    text = modelfile.read_text()
    # The user's -p wins over the plan's num_ctx; num_gpu only where Ollama has no other knob.
    assert "PARAMETER num_ctx 2048" in text
    info = ollama_server.info
    assert info is not None
    if info.accepts_split_gguf:
        assert "num_gpu" not in text
    else:
        # Everything (4 blocks + the output head) fits a 24 GB GPU.
        assert "PARAMETER num_gpu 5" in text
    shown = OllamaAPI(ollama_server.url).show(entry.ollama_name)
    assert shown is not None and "num_ctx" in shown.get("parameters", "")
