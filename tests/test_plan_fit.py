"""Fit and expert offload together, on Ollama >= 0.30 (llama-server), with a capped worker as the GPU.

Ollama >= 0.30 starts llama-server without ``--fit``, so llama.cpp's default applies: fit on.
Fit gives up when tensor overrides are set (``--n-cpu-moe`` sets them): "failed to fit params
to free device memory: ... tensor_buft_overrides already set by user, abort". An ``ollamads
worker --mem CAP`` (rpc-server behind a relay that reports CAP as its memory and refuses more)
stands in for a GPU of CAP. With the plan made for that device, each case is loaded through a
real ``ollama serve`` on both >= 0.30 lines, and the bytes that land on the device are read from
llama-server's log:

* the plan's environment, fit on (Ollama's default) and fit off: it loads, the device holds the
  plan's bytes, within the cap;
* no plan, fit on: fit keeps its 1 GiB margin on a device smaller than that, and nothing but
  the output goes to the device (the model runs from RAM);
* no plan, fit off: every layer is sent to the device, which refuses: the load fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ollamads.gguf.deepseek2 import DeepSeek2Dims
from ollamads.gguf.format import GGMLQuantizationType
from ollamads.hardware import GPU, Machine
from ollamads.ollama.api import OllamaAPI
from ollamads.ollama.serve import MODEL_ENVIRONMENT, OllamaServe
from ollamads.plan.placement import Offload
from ollamads.plan.recommend import PlanRequest, _loads, make_plan
from ollamads.plan.sources import local_source
from ollamads.units import parse_size
from tests.support.llama_buffers import MIB, parse_buffers
from tests.support.servers import ollama_binary, upload_model
from tests.support.synthetic import uniform_types, write_synthetic
from tests.support.toolchain import executable
from tests.support.workers import WorkerProcess, running_worker

pytestmark = pytest.mark.integration

#: 32 experts per block, about 107 MB of them per block at Q8_0; K rows of 288 (q8_0 blocks).
DIMS = DeepSeek2Dims(n_layer=4, n_dense_lead=1, n_embd=1024, n_ff=2048, n_head=8, q_lora_rank=256,
                     kv_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64,
                     n_expert=32, n_expert_shared=1, n_ff_exp=1024, n_vocab=4096)
CTX = 2048
#: Less than the model (about 340 MB), more than its non-expert part with two blocks' experts.
CAP = "280MiB"
NAME = "fit:test"
FIT_ABORT = "tensor_buft_overrides already set by user, abort"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fit-model")
    return write_synthetic(directory, "fit", DIMS, uniform_types(GGMLQuantizationType.Q8_0))[0]


@pytest.fixture
def worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkerProcess]:
    monkeypatch.setenv("OLLAMADS_RPC_SERVER", str(executable("OLLAMADS_RPC_SERVER", "llama.cpp's rpc-server")))
    with running_worker(tmp_path / "home", "--mem", CAP) as started:
        yield started


def plan_for_cap(model: Path):  # type: ignore[no-untyped-def]
    memory = local_source(model).memory
    machine = Machine(64 << 30, (GPU("worker", parse_size(CAP)),))
    request = PlanRequest(ctx=CTX, kv_type="q8_0", gpu_reserve=0)
    return memory, machine, request, make_plan(memory, machine, request)


def load(line: str, model: Path, tmp_path: Path, env: dict[str, str]) -> tuple[int, str]:
    """Start ``ollama serve`` (``line``) with ``env``, register and load the model once: the
    status of the generate request and the server log."""
    serve = OllamaServe(tmp_path / f"models-{line}", binary=ollama_binary(line),
                        env={**MODEL_ENVIRONMENT, "HOME": str(tmp_path), **env},
                        log_path=tmp_path / f"serve-{line}-{len(os.listdir(tmp_path))}.log")
    serve.start()
    try:
        api = OllamaAPI(serve.url)
        upload_model(api, model, NAME)
        response = requests.post(f"{serve.url}/api/generate", timeout=300, json={
            "model": NAME, "prompt": "hi", "stream": False, "options": {"num_predict": 4}})
        return response.status_code, serve.log_path.read_text(errors="replace")
    finally:
        serve.stop()


def device_bytes(log: str) -> tuple[float, float]:
    """Model and KV bytes llama-server put on the worker (RPC0)."""
    reported = parse_buffers(log)
    model_bytes = sum(v for k, v in reported.buffers.get("model", {}).items() if k.startswith("RPC0"))
    kv = sum(v for k, v in reported.buffers.get("KV", {}).items() if k.startswith("RPC0"))
    return model_bytes, kv


@pytest.mark.parametrize("line", ["split", "layers"])
@pytest.mark.parametrize("fit", ["on", "off"])
def test_plan_environment_loads_within_the_cap(line: str, fit: str, model: Path, worker: WorkerProcess,
                                               tmp_path: Path) -> None:
    memory, machine, request, plan = plan_for_cap(model)
    offload = plan.llama.offload
    assert offload.gpu_layers == memory.shape.n_layer + 1 and 0 < offload.cpu_moe_layers < memory.shape.n_layer
    env = {**plan.environment, "LLAMA_ARG_RPC": worker.address}
    if fit == "off":
        env["LLAMA_ARG_FIT"] = "off"
    status, log = load(line, model, tmp_path, env)
    assert status == 200, log[-3000:]
    if fit == "on":  # fit was on and gave up because of the overrides
        assert FIT_ABORT in log
    else:
        assert FIT_ABORT not in log
    predicted = _loads(memory, machine, request, offload, kv_type="q8_0", engine="llama.cpp",
                       flash_attention=True)[0]
    on_device, kv = device_bytes(log)
    assert abs(on_device - predicted.weights) <= 0.006 * MIB, (on_device, predicted.weights)
    assert abs(kv - predicted.kv) <= 0.006 * MIB
    assert on_device + kv < parse_size(CAP)


@pytest.mark.parametrize("line", ["split", "layers"])
def test_without_the_plan(line: str, model: Path, worker: WorkerProcess, tmp_path: Path) -> None:
    memory, machine, request, _ = plan_for_cap(model)
    base = {"OLLAMA_CONTEXT_LENGTH": str(CTX), "LLAMA_ARG_RPC": worker.address}
    # Fit on (Ollama's default): it keeps 1 GiB free on a 280 MiB device, so the layers stay in RAM.
    status, log = load(line, model, tmp_path, base)
    assert status == 200, log[-3000:]
    on_device, _ = device_bytes(log)
    everything = _loads(memory, machine, request, Offload(memory.shape.n_layer + 1, 0), kv_type="q8_0",
                        engine="llama.cpp", flash_attention=True)[0].weights
    assert on_device < 0.05 * everything, on_device
    # Fit off: every layer goes to the device, which is too small: the load fails.
    assert everything > parse_size(CAP)
    status, log = load(line, model, tmp_path, {**base, "LLAMA_ARG_FIT": "off"})
    assert status != 200


@pytest.mark.parametrize("line", ["split", "layers"])
def test_a_plan_for_a_bigger_device(line: str, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan made for 280 MiB on a 200 MiB device: fit gives up on the experts variable, so
    the load fails whether fit is on or off; fit alone, with a small target, shrinks the layout
    to what the device has."""
    monkeypatch.setenv("OLLAMADS_RPC_SERVER", str(executable("OLLAMADS_RPC_SERVER", "llama.cpp's rpc-server")))
    _, _, _, plan = plan_for_cap(model)
    small = parse_size("200MiB")
    with running_worker(tmp_path / "home", "--mem", "200MiB") as small_worker:
        for fit in ("on", "off"):
            env = {**plan.environment, "LLAMA_ARG_RPC": small_worker.address, "LLAMA_ARG_FIT": fit}
            status, log = load(line, model, tmp_path, env)
            assert status != 200 and "failed to allocate RPC0" in log, log[-2000:]
        status, log = load(line, model, tmp_path, {"OLLAMA_CONTEXT_LENGTH": str(CTX), "LLAMA_ARG_FIT_TARGET": "16",
                                                   "LLAMA_ARG_RPC": small_worker.address})
        assert status == 200, log[-3000:]
        on_device, kv = device_bytes(log)
        assert 0.5 * small < on_device + kv < small


def test_sweep_plans_the_experts_with_a_gpu(model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`bench --sweep` on a machine whose nvidia-smi answers sweeps LLAMA_ARG_N_CPU_MOE around
    the plan for the registered model's own blob; without a GPU it sweeps none."""
    from ollamads.cli.bench_commands import _planned_cpu_moe
    from ollamads.hardware import this_machine
    from ollamads.plan.planner import DEFAULT_CTX

    serve = OllamaServe(tmp_path / "models", binary=ollama_binary("layers"), env={"HOME": str(tmp_path)},
                        log_path=tmp_path / "serve.log")
    serve.start()
    try:
        api = OllamaAPI(serve.url)
        upload_model(api, model, NAME)
    finally:
        serve.stop()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA GeForce RTX 4090, 1331, 1331'\n")
    (bindir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    memory = local_source(model).memory
    ctx = min(DEFAULT_CTX, memory.shape.n_ctx_train)
    expected = make_plan(memory, this_machine(), PlanRequest(ctx=ctx)).llama.offload.cpu_moe_layers
    assert expected > 0  # 307 MiB usable on that GPU: some experts stay in RAM
    assert _planned_cpu_moe(tmp_path / "models", NAME) == expected
    (bindir / "nvidia-smi").write_text("#!/bin/sh\nexit 9\n")  # no GPU answers
    assert _planned_cpu_moe(tmp_path / "models", NAME) is None
