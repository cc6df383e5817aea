"""The plan's environment reaches llama-server on the >= 0.30 line, and does what the plan says.

A copy of the v0.32.15 install (the toolchain's cache is never touched) has its
``lib/ollama/llama-server`` replaced by a script that records its arguments and environment and
then runs the real binary. There is no GPU here, so the toolchain's RPC worker stands in for one:
with ``LLAMA_ARG_RPC`` llama-server sees a device ``RPC0`` that is offloaded to like a GPU, and
its log says how many bytes went there (``RPC0[...] model buffer size``) and how many stayed on
the CPU. That shows the variables arriving, being applied, and moving exactly the bytes the
plan predicts; it cannot show the speed a real GPU would give.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from ollamads.hardware import GPU, Machine
from ollamads.ollama.api import OllamaAPI
from ollamads.ollama.serve import OllamaServe, free_port
from ollamads.plan.memory import ModelMemory
from ollamads.plan.placement import Offload
from ollamads.plan.recommend import PlanRequest, _loads, make_plan
from ollamads.plan.sources import local_source
from tests.support.llama_buffers import MIB, parse_buffers
from tests.support.servers import ollama_binary, upload_model
from tests.support.synthetic import small_q8_model
from tests.support.toolchain import executable

pytestmark = pytest.mark.integration

WRAPPER = """#!/bin/sh
# Record how Ollama starts llama-server, then run the real one.
dir=$(dirname "$0")
mkdir -p "$dir/records"
for a in "$@"; do printf '%s\\0' "$a"; done > "$dir/records/$$.argv"
env -0 > "$dir/records/$$.env"
exec "$dir/llama-server.real" "$@"
"""
CTX = 4096
NAME = "planned:test"


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ollama and lib/ollama/ of the v0.32.15 install, copied, with the recording wrapper."""
    source = Path(ollama_binary("split")).resolve().parents[1]
    root = tmp_path_factory.mktemp("ollama-install")
    (root / "bin").mkdir()
    shutil.copy2(source / "bin" / "ollama", root / "bin" / "ollama")
    lib = root / "lib" / "ollama"
    shutil.copytree(source / "lib" / "ollama", lib)
    (lib / "llama-server").rename(lib / "llama-server.real")
    (lib / "llama-server").write_text(WRAPPER)
    (lib / "llama-server").chmod(0o755)
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("planned-model")
    return small_q8_model(directory, "planned")


@pytest.fixture
def rpc_worker(tmp_path: Path) -> Iterator[str]:
    """A GPU stand-in: llama.cpp's RPC server on a free port (one client at a time)."""
    binary = executable("OLLAMADS_RPC_SERVER", "llama.cpp's ggml-rpc-server")
    port = free_port()
    with open(tmp_path / "rpc.log", "wb") as log:
        proc = subprocess.Popen([str(binary), "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:  # its stdout is block-buffered into the log: wait for the port instead
            assert proc.poll() is None and time.monotonic() < deadline, "rpc server did not start"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str]


def launches(install: Path) -> list[Launch]:
    """Every llama-server start that loaded a model, oldest first."""
    records = install / "lib" / "ollama" / "records"
    found = []
    for argv_file in sorted(records.glob("*.argv"), key=lambda p: p.stat().st_mtime_ns):
        argv = argv_file.read_bytes().split(b"\0")[:-1]
        raw = argv_file.with_suffix(".env").read_bytes().split(b"\0")
        env = dict(item.decode().split("=", 1) for item in raw if b"=" in item)
        if b"--model" in argv:
            found.append(Launch([a.decode() for a in argv], env))
    return found


def start(install: Path, tmp_path: Path, env: dict[str, str]) -> OllamaServe:
    shutil.rmtree(install / "lib" / "ollama" / "records", ignore_errors=True)
    serve = OllamaServe(tmp_path / "models", binary=str(install / "bin" / "ollama"),
                        env={"HOME": str(tmp_path), **env}, log_path=tmp_path / "serve.log")
    serve.start()
    return serve


def register_and_load(serve: OllamaServe, model: Path, options: dict | None = None) -> str:
    """Load the model once; the server log's part for this load."""
    api = OllamaAPI(serve.url)
    if api.show(NAME) is None:
        upload_model(api, model, NAME)
    before = serve.log_path.stat().st_size
    body = {"model": NAME, "prompt": "hi", "options": {"num_predict": 1, **(options or {})}}
    response = requests.post(f"{serve.url}/api/generate", json=body, timeout=300)
    assert response.status_code == 200, response.text
    with open(serve.log_path, "rb") as log:
        log.seek(before)
        return log.read().decode(errors="replace")


def predicted(memory: ModelMemory, offload: Offload, request: PlanRequest, machine: Machine) -> tuple[int, int, int]:
    loads = _loads(memory, machine, request, offload, kv_type=request.kv_type, engine="llama.cpp",
                   flash_attention=True)
    return loads[0].weights, loads[-1].weights, loads[0].kv


def plan_for_gpu(memory: ModelMemory, offload: Offload) -> tuple[Machine, PlanRequest]:
    """A GPU exactly as large as ``offload`` needs: the plan must then choose it."""
    request = PlanRequest(ctx=CTX, kv_type="f16", gpu_reserve=0)
    probe = Machine(64 << 30, (GPU("probe", 1 << 40),))
    need = _loads(memory, probe, request, offload, kv_type="f16", engine="llama.cpp",
                  flash_attention=True)[0].total
    return Machine(64 << 30, (GPU("stand-in", need),)), request


def rpc_bytes(log: str) -> tuple[float, float, float]:
    reported = parse_buffers(log)
    rpc_model = sum(v for k, v in reported.buffers["model"].items() if k.startswith("RPC0"))
    cpu_model = reported.buffers["model"].get("CPU_Mapped", 0.0)
    rpc_kv = sum(v for k, v in reported.buffers["KV"].items() if k.startswith("RPC0"))
    return rpc_model, cpu_model, rpc_kv


def close(reported: float, expected: int) -> bool:
    return abs(reported - expected) <= 0.006 * MIB  # the log prints MiB with two decimals


def test_n_cpu_moe_reaches_llama_server_and_moves_the_experts(
    install: Path, model: Path, rpc_worker: str, tmp_path: Path
) -> None:
    memory = local_source(model).memory
    machine, request = plan_for_gpu(memory, Offload(5, 2))
    plan = make_plan(memory, machine, request)
    assert plan.llama.offload == Offload(5, 2)
    assert plan.environment["LLAMA_ARG_N_CPU_MOE"] == "2"
    serve = start(install, tmp_path, {**plan.environment, "LLAMA_ARG_RPC": rpc_worker})
    try:
        log = register_and_load(serve, model)
        (launch,) = launches(install)
        for key, value in plan.environment.items():
            if key.startswith("LLAMA_ARG"):
                assert launch.env[key] == value
        assert "-ngl" not in launch.argv  # num_gpu unset: llama-server places the layers
        assert launch.argv[launch.argv.index("-c") + 1] == str(CTX)
        gpu, cpu, kv = predicted(memory, Offload(5, 2), request, machine)
        rpc_model, cpu_model, rpc_kv = rpc_bytes(log)
        assert close(rpc_model, gpu) and close(rpc_kv, kv), (rpc_model, gpu, rpc_kv, kv)
        # The CPU's mapping is a byte span of the file, so it covers at least the CPU tensors.
        assert cpu_model >= cpu - 0.006 * MIB

        # num_gpu set: Ollama passes -ngl, the experts variable still applies.
        log = register_and_load(serve, model, {"num_gpu": 3})
        last = launches(install)[-1]
        assert last.argv[last.argv.index("-ngl") + 1] == "3"
        assert last.env["LLAMA_ARG_N_CPU_MOE"] == "2"
        assert "offloaded 3/5 layers to GPU" in log
        gpu3, _, kv3 = predicted(memory, Offload(3, 2), request, machine)
        rpc_model, _, rpc_kv = rpc_bytes(log)
        assert close(rpc_model, gpu3) and close(rpc_kv, kv3), (rpc_model, gpu3)
    finally:
        serve.stop()


def test_all_experts_home_with_fewer_layers(install: Path, model: Path, rpc_worker: str,
                                            tmp_path: Path) -> None:
    memory = local_source(model).memory
    machine, request = plan_for_gpu(memory, Offload(3, 4))
    plan = make_plan(memory, machine, request)
    assert plan.llama.offload == Offload(3, 4)
    assert plan.environment["LLAMA_ARG_N_GPU_LAYERS"] == "3"
    assert "LLAMA_ARG_OVERRIDE_TENSOR" in plan.environment
    serve = start(install, tmp_path, {**plan.environment, "LLAMA_ARG_RPC": rpc_worker})
    try:
        log = register_and_load(serve, model)
        (launch,) = launches(install)
        assert launch.env["LLAMA_ARG_OVERRIDE_TENSOR"] == plan.environment["LLAMA_ARG_OVERRIDE_TENSOR"]
        assert "-ngl" not in launch.argv
        assert "offloaded 3/5 layers to GPU" in log
        gpu, _, kv = predicted(memory, Offload(3, 4), request, machine)
        rpc_model, _, rpc_kv = rpc_bytes(log)
        assert close(rpc_model, gpu) and close(rpc_kv, kv), (rpc_model, gpu)
    finally:
        serve.stop()


def test_without_the_plan_everything_goes_to_the_device(install: Path, model: Path,
                                                        rpc_worker: str, tmp_path: Path) -> None:
    memory = local_source(model).memory
    machine, request = plan_for_gpu(memory, Offload(5, 0))
    serve = start(install, tmp_path, {"LLAMA_ARG_RPC": rpc_worker, "OLLAMA_CONTEXT_LENGTH": str(CTX)})
    try:
        log = register_and_load(serve, model)
        (launch,) = launches(install)
        assert not any(k.startswith("LLAMA_ARG_N_CPU_MOE") or k == "LLAMA_ARG_OVERRIDE_TENSOR"
                       for k in launch.env)
        gpu, _, _ = predicted(memory, Offload(5, 0), request, machine)
        rpc_model, _, _ = rpc_bytes(log)
        assert close(rpc_model, gpu), (rpc_model, gpu)
    finally:
        serve.stop()


# --- `ollamads serve --plan` -----------------------------------------------------------------


def child_env(pid: int) -> dict[str, str]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            raw = (entry / "environ").read_bytes().split(b"\0")
            return dict(item.decode().split("=", 1) for item in raw if b"=" in item)
    raise AssertionError(f"no child of {pid}")


@pytest.mark.parametrize("line", ["split", "merged"])
def test_serve_plan_sets_the_environment(line: str, tmp_path: Path, model: Path) -> None:
    from tests.support.synthetic import deepseek_v3_sparse

    v3 = deepseek_v3_sparse(tmp_path / "v3")[0]
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ollamads", "serve", "--models", str(tmp_path / "store"),
         "--host", f"127.0.0.1:{port}", "--ollama", ollama_binary(line),
         "--plan", str(v3), "--ram", "128G", "--vram", "24G"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    try:
        lines = []
        while True:
            text = proc.stderr.readline()  # type: ignore[union-attr]
            lines.append(text)
            if text.strip() == "ready" or not text:
                break
        assert lines[-1].strip() == "ready", "".join(lines)
        env = child_env(proc.pid)
        expected = make_plan(local_source(v3).memory, Machine(128 << 30, (GPU("g", 24 << 30),)),
                             PlanRequest(ctx=16384, line=line))
        if line == "split":
            assert env["LLAMA_ARG_N_CPU_MOE"] == expected.environment["LLAMA_ARG_N_CPU_MOE"]
            assert env["OLLAMA_CONTEXT_LENGTH"] == "16384" and env["OLLAMA_KV_CACHE_TYPE"] == "q8_0"
        else:
            assert not any(k.startswith("LLAMA_ARG") for k in env)
            assert f"num_gpu {expected.merged.offload.gpu_layers}" in "".join(lines)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
