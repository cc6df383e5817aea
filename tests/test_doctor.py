"""``ollamads doctor`` against real servers of both lines, the local Hub stand-in, the
toolchain's llama.cpp and Open WebUI, and a fake ``nvidia-smi`` (no GPU exists here)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from ollamads.gguf.format import read_gguf
from ollamads.hardware import total_ram
from ollamads.ollama.api import OllamaAPI
from ollamads.ollama.serve import OllamaServe
from ollamads.plan.memory import kv_bytes, model_memory
from ollamads.tiny import write_tiny_model
from tests.support.cli import run_cli
from tests.support.hubstub import HubStub
from tests.support.servers import ollama_binary, upload_model
from tests.support.toolchain import component_path, executable, llama_cpp_tool

pytestmark = pytest.mark.integration
TOKEN = "hf_stub_token"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[..., OllamaServe]]:
    """Start a real server of a line with chosen environment variables."""
    started: list[OllamaServe] = []

    def start(line: str, **env: str) -> OllamaServe:
        root = tmp_path / f"serve-{len(started)}"
        serve = OllamaServe(root / "models", binary=ollama_binary(line), log_path=root / "serve.log",
                            env={"HOME": str(root), **env})
        serve.start()
        started.append(serve)
        return serve

    yield start
    for serve in started:
        serve.stop()


@pytest.fixture
def machine_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """A fake nvidia-smi printing ``csv``, llama.cpp's tools and Open WebUI from the toolchain."""
    llama_bin = llama_cpp_tool("llama-server").parent
    webui = executable("OLLAMADS_OPEN_WEBUI", "Open WebUI")
    monkeypatch.setenv("OLLAMADS_OPEN_WEBUI", str(webui))
    fake = tmp_path / "fakebin"
    fake.mkdir()
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{llama_bin}{os.pathsep}{os.environ['PATH']}")

    def gpus(csv: str) -> None:
        (fake / "gpus.csv").write_text(csv)
        script = fake / "nvidia-smi"
        script.write_text(f"#!/bin/sh\ncat {fake / 'gpus.csv'}\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)

    return gpus


def doctor(capsys: pytest.CaptureFixture[str], host: str) -> tuple[int, dict]:
    code, out, err = run_cli(capsys, "doctor", "--host", host, "--json")
    record = json.loads(out)
    assert record["exit_code"] == code, err
    return code, {f["check"]: f for f in record["findings"]}


def test_split_line_setup(capsys: pytest.CaptureFixture[str], server: Callable[..., OllamaServe],
                          machine_tools: Callable[[str], None], hub: Callable[..., HubStub],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    machine_tools("NVIDIA H100 80GB HBM3, 81559, 81000\nNVIDIA H100 80GB HBM3, 81559, 81000\n")
    hub({"unsloth/DeepSeek-V3.1-GGUF": {"README.md": b"hi"}}, token=TOKEN)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    serve = server("split", OLLAMA_KV_CACHE_TYPE="q4_0", OLLAMA_FLASH_ATTENTION="1",
                   LLAMA_ARG_N_CPU_MOE="7")
    code, found = doctor(capsys, serve.url)
    assert found["server"]["status"] == "ok"
    details = found["server"]["details"]
    assert details["version"] == serve.info.version and details["line"] == "split"  # type: ignore[union-attr]
    assert details["split_gguf"] and details["renderer"] and details["think"]
    kv = found["KV cache"]
    # Read from the server process itself, not from this shell.
    assert kv["status"] == "warn" and "4-bit" in kv["summary"] and kv["fix"]
    assert kv["details"]["from"] == "the server's environment"
    assert kv["details"]["llama_server_variables"] == {"LLAMA_ARG_N_CPU_MOE": "7"}
    assert found["store"]["status"] in ("ok", "warn")
    assert found["store"]["details"]["path"] == str(serve.models_dir)
    assert found["store"]["details"]["confirmed"] is True
    memory = found["memory"]["details"]
    assert [g["memory"] for g in memory["gpus"]] == [81559 << 20] * 2
    assert found["llama.cpp"]["status"] == "ok"
    assert found["Hub"]["status"] == "ok" and found["Hub token"]["status"] == "ok"
    assert "stub-user" in found["Hub token"]["summary"]
    assert found["Open WebUI"]["status"] == "ok"
    assert found["Open WebUI"]["details"]["version"] == found["Open WebUI"]["details"]["tested"]
    assert code == 3  # the worst finding is a warning: the 4-bit cache


def test_quantized_cache_with_flash_attention_off_fails(
    capsys: pytest.CaptureFixture[str], server: Callable[..., OllamaServe], tmp_path: Path
) -> None:
    serve = server("split", OLLAMA_KV_CACHE_TYPE="q8_0", OLLAMA_FLASH_ATTENTION="0")
    code, found = doctor(capsys, serve.url)
    assert found["KV cache"]["status"] == "fail" and code == 4
    assert "flash attention off" in found["KV cache"]["summary"]
    # And the server really does refuse to load a DeepSeek model so.
    from tests.support.synthetic import small_q8_model

    model = small_q8_model(tmp_path / "m", "m")
    api = OllamaAPI(serve.url)
    upload_model(api, model, "m:q")
    answer = requests.post(f"{serve.url}/api/generate", json={"model": "m:q", "prompt": "hi"}, timeout=300)
    assert answer.status_code >= 400
    assert "quantized V cache requires flash_attn" in serve.log_tail(400)


def test_merged_line_keeps_deepseek_at_f16(capsys: pytest.CaptureFixture[str],
                                          server: Callable[..., OllamaServe], tmp_path: Path) -> None:
    serve = server("merged", OLLAMA_KV_CACHE_TYPE="q8_0", OLLAMA_FLASH_ATTENTION="1")
    code, found = doctor(capsys, serve.url)
    kv = found["KV cache"]
    assert kv["status"] == "warn" and kv["details"]["cache_type"] == "f16"
    assert "no effect on DeepSeek" in kv["summary"]
    # What the server does: flash attention off for the model, the cache f16, and its size is
    # the plan's count for that line (K and V rows).
    model = write_tiny_model(tmp_path / "tiny.gguf")
    api = OllamaAPI(serve.url)
    upload_model(api, model, "tiny:t")
    answer = requests.post(f"{serve.url}/api/generate", timeout=300, json={
        "model": "tiny:t", "prompt": "hi", "options": {"num_predict": 1, "num_ctx": 4096}})
    assert answer.status_code == 200
    log = serve.log_tail(400)
    assert "flash attention enabled but not supported by model" in log
    assert "quantized kv cache requested but flash attention disabled" in log
    memory = model_memory([read_gguf(model)], name="tiny", source="local files")
    expected = kv_bytes(memory.shape, 4096, "f16", engine="ollama") / (1 << 20)
    assert f'msg="kv cache" device=CPU size="{expected:.1f} MiB"' in log


def test_no_server_one_screen(capsys: pytest.CaptureFixture[str], machine_tools: Callable[[str], None],
                              hub: Callable[..., HubStub]) -> None:
    machine_tools("")
    hub({"unsloth/DeepSeek-V3.1-GGUF": {"README.md": b"hi"}})
    code, out, err = run_cli(capsys, "doctor", "--host", "127.0.0.1:1")
    assert code == 4
    lines = out.splitlines()
    assert lines[0].startswith("fail server") and lines[-1] == "worst: fail (exit 4)"
    assert len(lines) < 25  # one screen
    # Every finding that is not ok comes with a fix on the next line.
    for i, line in enumerate(lines[:-1]):
        if line.split()[0] in ("warn", "fail"):
            assert lines[i + 1].strip().startswith("fix: ")
    memory = next(l for l in lines if " memory " in f" {l} ")
    if total_ram() < 150 << 30:
        assert memory.startswith("warn") and "no GPU" in memory


def test_refused_token(capsys: pytest.CaptureFixture[str], hub: Callable[..., HubStub],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    hub({"unsloth/DeepSeek-V3.1-GGUF": {"README.md": b"hi"}}, token=TOKEN)
    monkeypatch.setenv("HF_TOKEN", "hf_not_the_token")
    code, found = doctor(capsys, "127.0.0.1:1")
    assert found["Hub"]["status"] == "ok"
    token = found["Hub token"]
    assert token["status"] == "fail" and "401" in token["summary"] and "HF_TOKEN" in token["fix"]
    assert code == 4


def test_open_webui_missing_is_only_info(capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert component_path("OLLAMADS_OPEN_WEBUI")  # the toolchain's (asked of bash while PATH has it)
    monkeypatch.delenv("OLLAMADS_OPEN_WEBUI", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    from ollamads.doctor import check_open_webui

    (finding,) = check_open_webui()
    assert finding.status == "info" and finding.fix
