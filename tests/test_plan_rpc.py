"""The plan's placement over several devices is what llama-server loads: two real RPC workers
stand in for two GPUs (there is none here), so llama.cpp's ``-ngl``, ``-ts`` and ``--n-cpu-moe``
rules are checked on real buffers, with the one placement model the plan uses
(:mod:`ollamads.plan.placement`). ``ollamads serve --workers`` itself leaves the layout to
llama-server's ``--fit``; this is what the plan predicts when a user sets it by hand."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ollamads.ollama.serve import free_port
from ollamads.plan.placement import CPU, Offload, device_loads
from ollamads.plan.sources import local_source
from ollamads.rpc.worker import RpcWorker, worker_settings
from ollamads.tiny import write_tiny_model, write_tiny_shards
from tests.support.llama_buffers import MIB, measure
from tests.support.toolchain import executable, llama_cpp_tool
from tests.support.workers import write_split_model

CTX = 256


def test_a_model_s_memory_is_the_same_split_or_whole(tmp_path: Path) -> None:
    shards = write_tiny_shards(tmp_path / "shards", "v3.1", n_shards=3)
    whole = write_tiny_model(tmp_path / "whole.gguf", "v3.1")
    assert len(shards) == 3
    split, single = local_source(shards[0]).memory, local_source(whole).memory
    assert (split.layers, split.input, split.output) == (single.layers, single.input, single.output)


@pytest.mark.integration
def test_layers_over_two_workers_are_what_llama_server_loads(tmp_path: Path) -> None:
    rpc_server = str(executable("OLLAMADS_RPC_SERVER", "llama.cpp's rpc-server"))
    model_path = write_split_model(tmp_path / "split.gguf")
    memory = local_source(model_path).memory
    n_layer = memory.shape.n_layer
    # The last 6 of 9 layers (8 blocks and the output head) offloaded, split 2:4 over the two
    # devices; blocks 3 and 4 are on the first device but keep their routed experts on the CPU.
    offload, split = Offload(6, 5), (2.0, 4.0)
    loads = device_loads(memory, offload, ["RPC0", "RPC1"], split, kv_layer=0, compute_main=0, compute_other=0)
    assert [load.name for load in loads] == ["RPC0", "RPC1", CPU]
    assert all(load.weights > 0 for load in loads)

    workers = [RpcWorker(worker_settings(binary=rpc_server, port=free_port()), tmp_path / f"w{i}.log") for i in range(2)]
    try:
        for worker in workers:
            worker.start()
        endpoints = ",".join(f"127.0.0.1:{w.settings.port}" for w in workers)
        reported = measure(
            llama_cpp_tool("llama-server"), model_path, ctx=CTX, log_path=tmp_path / "llama-server.log",
            extra=["--rpc", endpoints, "-ngl", str(offload.gpu_layers), "-ts", ",".join(f"{s:g}" for s in split),
                   "--n-cpu-moe", str(offload.cpu_moe_layers)],
        )
    finally:
        for worker in workers:
            worker.stop()
    assert f"offloaded {offload.gpu_layers}/{n_layer + 1} layers" in reported.log, reported.log
    for worker, load in zip(workers, loads[:2], strict=True):
        (size,) = [v for k, v in reported.buffers["model"].items()
                   if re.fullmatch(rf"RPC\d+\[127\.0\.0\.1:{worker.settings.port}\]", k)]
        assert size == pytest.approx(load.weights, abs=0.006 * MIB), (load, reported.buffers)
