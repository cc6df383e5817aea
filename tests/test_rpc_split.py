"""Which layers go to which host: per-layer bytes read from real GGUF files, and a split
checked against what a real llama-server puts on real workers."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from ollamads.gguf.format import align_up, read_gguf
from ollamads.ollama.serve import free_port
from ollamads.rpc.split import EXPERTS_RE, Host, model_bytes, model_bytes_of, split_layers
from ollamads.rpc.worker import RpcWorker, worker_settings
from ollamads.tiny import write_tiny_model, write_tiny_shards
from tests.support.toolchain import executable, llama_cpp_tool
from tests.support.workers import SPLIT_MODEL_SPEC, write_split_model

MIB = 1 << 20


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_split_model(tmp_path_factory.mktemp("split") / "split.gguf")


def test_layer_bytes_from_a_real_gguf(model_path: Path) -> None:
    header = read_gguf(model_path)
    model = model_bytes([header])
    assert len(model.layers) == SPLIT_MODEL_SPEC.n_layer
    sizes = {t.name: align_up(t.nbytes, header.alignment) for t in header.tensors}
    # The first block is dense; the others keep most bytes in their routed experts.
    assert model.layers[0].experts == 0
    for layer in model.layers[1:]:
        expected = sum(v for k, v in sizes.items() if k.startswith(f"blk.{layer.index}.") and EXPERTS_RE.search(k))
        assert layer.experts == expected > layer.dense > 0
    # Tied embeddings: llama.cpp loads token_embd a second time as the output head.
    assert model.input == sizes["token_embd.weight"]
    assert model.output == sizes["output_norm.weight"] + sizes["token_embd.weight"]
    assert model.total == sum(sizes.values()) + sizes["token_embd.weight"]


def test_layer_bytes_add_up_over_shards(tmp_path: Path) -> None:
    shards = write_tiny_shards(tmp_path / "shards", "v3.1", n_shards=3)
    whole = write_tiny_model(tmp_path / "whole.gguf", "v3.1")
    assert len(shards) == 3
    assert model_bytes_of(shards) == model_bytes_of([whole])


def test_everything_fits_on_the_workers(model_path: Path) -> None:
    model = model_bytes_of([model_path])
    plan = split_layers(model, Host("head", 64 * MIB), [Host("a", 3 * MIB), Host("b", 3 * MIB)])
    head, a, b = plan.shares
    assert plan.fits and head.layers == range(0, 0) and not head.output
    assert a.layers.start == 0 and a.layers.stop == b.layers.start and b.layers.stop == len(model.layers)
    assert b.output and not a.output
    assert plan.offloaded == len(model.layers) + 1
    assert plan.llama_arguments() == ["-ngl", str(len(model.layers) + 1), "-ts", f"{len(a.layers)},{len(b.layers) + 1}"]
    assert head.used == model.input
    assert all(s.used <= s.host.room for s in plan.shares)
    assert plan.where_experts_stay(5) in ("a", "b")


def test_leading_layers_stay_on_the_head(model_path: Path) -> None:
    model = model_bytes_of([model_path])
    layer = model.layers[-1].total
    kv = 1000
    plan = split_layers(model, Host("head", 64 * MIB), [Host("a", 2 * (layer + kv)), Host("b", 2 * (layer + kv) + model.output)],
                        kv_per_layer=kv)
    head, a, b = plan.shares
    assert plan.fits
    assert (a.layers, b.layers) == (range(4, 6), range(6, 8)) and b.output
    assert head.layers == range(0, 4)
    assert head.used == model.input + sum(model.layers[i].total + kv for i in range(4))
    assert plan.llama_arguments() == ["-ngl", "5", "-ts", "2,3"]
    assert plan.where_experts_stay(2) == "head" and plan.where_experts_stay(7) == "b"


def test_too_big_says_by_how_much(model_path: Path) -> None:
    model = model_bytes_of([model_path])
    plan = split_layers(model, Host("head", 2 * MIB), [Host("a", 2 * MIB)])
    head, a = plan.shares
    assert not plan.fits
    assert plan.shortfall == head.used - 2 * MIB > 0
    assert a.used <= 2 * MIB < a.used + model.layers[a.layers.start - 1].total


def test_a_worker_too_small_for_a_layer_is_named(model_path: Path) -> None:
    model = model_bytes_of([model_path])
    plan = split_layers(model, Host("head", 64 * MIB), [Host("tiny", 1000), Host("big", 64 * MIB)])
    assert plan.warnings == ("tiny holds no layer: it is too small for one",)
    assert plan.llama_arguments() == ["-ngl", str(len(model.layers) + 1), "-ts", f"0,{len(model.layers) + 1}"]


def test_head_gpu_keeps_dense_parts_and_leaves_experts_in_ram(model_path: Path) -> None:
    model = model_bytes_of([model_path])
    last = model.layers[-1]
    # Room for the output, one whole layer and the dense parts of two more.
    gpu = Host("gpu", model.output + last.total + 2 * last.dense)
    plan = split_layers(model, Host("ram", 64 * MIB), [Host("a", 2 * last.total)], head_gpu=gpu)
    ram, a, g = plan.shares
    assert g.layers == range(5, 8) and g.output and g.experts_in_ram == range(5, 7)
    assert a.layers == range(3, 5) and not a.output
    assert ram.layers == range(0, 3)
    assert ram.used == model.input + sum(model.layers[i].total for i in range(3)) + 2 * last.experts
    assert [plan.where_experts_stay(i) for i in (4, 5, 6, 7)] == ["a", "ram", "ram", "gpu"]
    assert plan.llama_arguments() == [
        "-ngl", "6", "-ts", "2,4", "-ot", r"blk\.(5|6)\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU",
    ]


@pytest.mark.integration
def test_split_is_what_llama_server_loads(model_path: Path, tmp_path: Path) -> None:
    """Give llama-server the plan's -ngl/-ts and two real workers: each worker's model buffer is
    the plan's bytes for it."""
    rpc_server = str(executable("OLLAMADS_RPC_SERVER", "llama.cpp's rpc-server"))
    model = model_bytes_of([model_path])
    room = 2 * model.layers[-1].total + model.output
    plan = split_layers(model, Host("head", 64 * MIB), [Host("a", room), Host("b", room)])
    assert plan.share("head-ram").layers  # type: ignore[union-attr]  # some layers stay on the head
    workers = [RpcWorker(worker_settings(binary=rpc_server, port=free_port()), tmp_path / f"w{i}.log") for i in range(2)]
    for worker in workers:
        worker.start()
    log = tmp_path / "llama-server.log"
    try:
        endpoints = ",".join(f"127.0.0.1:{w.settings.port}" for w in workers)
        with open(log, "wb") as out:
            server = subprocess.Popen(
                [str(llama_cpp_tool("llama-server")), "-m", str(model_path), "--rpc", endpoints, "--port", str(free_port()),
                 "-c", "256", "-np", "1", "-lv", "4", "--no-log-prefix", *plan.llama_arguments()],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        try:
            deadline = time.monotonic() + 60
            while "sched_reserve" not in log.read_text(errors="replace") and server.poll() is None:
                assert time.monotonic() < deadline, log.read_text(errors="replace")
                time.sleep(0.2)
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        for worker in workers:
            worker.stop()
    text = log.read_text(errors="replace")
    assert f"offloaded {plan.offloaded}/{len(model.layers) + 1} layers" in text, text
    for worker, share in zip(workers, plan.shares[1:]):
        match = re.search(rf"RPC\d+\[127\.0\.0\.1:{worker.settings.port}\] model buffer size =\s+([\d.]+) MiB", text)
        assert match, text
        assert float(match[1]) == pytest.approx(share.used / MIB, abs=0.006)
