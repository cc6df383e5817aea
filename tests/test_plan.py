"""``ollamads plan``: bytes from real headers, checked against llama.cpp's own allocations, the
placement arithmetic, the recommendations, and every kind of bad input."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from ollamads.gguf.deepseek2 import DEEPSEEK_V3, Role, tensor_role
from ollamads.gguf.format import read_gguf
from ollamads.hardware import GPU, Machine
from ollamads.plan.memory import (
    compute_bytes,
    kv_bytes,
    kv_layer_bytes,
    model_memory,
)
from ollamads.plan.placement import Offload, device_loads, layer_devices
from ollamads.plan.recommend import (
    ALL_EXPERTS_ON_CPU,
    PlanRequest,
    gpu_budgets,
    make_plan,
    ram_budget,
)
from ollamads.plan.sources import local_source
from ollamads.tiny import write_tiny_model
from tests.support.cli import run_cli
from tests.support.llama_buffers import measure
from tests.support.synthetic import deepseek_v3_sparse
from tests.support.toolchain import llama_cpp_tool

GIB = 1 << 30


@pytest.fixture(scope="session")
def v3_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 671B shape with an Unsloth-like type mix, sparse: ~3.4 MB on disk."""
    return deepseek_v3_sparse(tmp_path_factory.mktemp("v3"))[0]


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing answers at OLLAMA_HOST: the plan assumes the >= 0.30 line."""
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:1")


def plan_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    code, out, err = run_cli(capsys, "plan", *args, "--json")
    assert code == 0, err
    return json.loads(out)


# --- the memory model against llama.cpp ----------------------------------------------------


@pytest.mark.parametrize("cache_type", ["f16", "f32"])
def test_tiny_model_buffers_match_llama_cpp(tmp_path: Path, cache_type: str) -> None:
    model = write_tiny_model(tmp_path / "tiny.gguf")
    memory = model_memory([read_gguf(model)], name="tiny", source="local files")
    ctx = 8192
    reported = measure(llama_cpp_tool("llama-server"), model, ctx=ctx, cache_type=cache_type,
                       log_path=tmp_path / "llama-server.log")
    # Printed in MiB with two decimals: the tiny model's 0.23 MiB is known to +-0.005 MiB.
    assert abs(reported.model - memory.weights) <= 0.005 * (1 << 20) + 64 * len(read_gguf(model).tensors)
    assert abs(reported.kv - kv_bytes(memory.shape, ctx, cache_type)) / reported.kv < 0.03
    if cache_type == "f16":
        # An estimate (fitted to V3's shapes), not a promise: within 10% on the tiny model.
        assert abs(reported.compute - compute_bytes(memory.shape, ctx)) / reported.compute < 0.10


def test_layers_split_by_role(tmp_path: Path) -> None:
    header = read_gguf(write_tiny_model(tmp_path / "tiny.gguf"))
    memory = model_memory([header], name="tiny", source="local files")
    assert memory.weights == sum(t.nbytes for t in header.tensors)
    assert memory.output_tied and memory.output == memory.input + memory.output_weights
    dense, *moe = memory.layers
    assert dense.dense_ffn and not dense.routed_experts and not dense.shared_expert
    assert all(layer.routed_experts and layer.shared_expert and not layer.dense_ffn for layer in moe)
    experts = sum(t.nbytes for t in header.tensors if tensor_role(t.name)[1] == Role.ROUTED_EXPERTS)
    assert memory.routed_expert_bytes == experts


def test_v3_kv_cache_is_mla_k_only(v3_file: Path) -> None:
    memory = local_source(v3_file).memory
    assert memory.shape.is_mla and memory.shape.n_layer == 61
    # MLA caches one row of kv_lora_rank + rope = 576 elements per token and layer: f16 is
    # 1152 bytes, q8_0 18 blocks of 34; the context is padded to 256 cells.
    assert kv_layer_bytes(memory.shape, 4096, "f16") == 1152 * 4096
    assert kv_layer_bytes(memory.shape, 4000, "q8_0") == 612 * 4096
    # Ollama <= 0.24's engine keeps K (576) and V (512) rows.
    assert kv_layer_bytes(memory.shape, 4096, "f16", engine="ollama") == (576 + 512) * 2 * 4096
    assert kv_bytes(memory.shape, 32768, "f16") == 61 * 1152 * 32768


# --- placement -----------------------------------------------------------------------------


def test_layer_devices_follow_llama_cpp() -> None:
    assert layer_devices(61, 0, [1.0]) == [None] * 62
    assert layer_devices(61, 1, [1.0]) == [None] * 61 + [0]  # -ngl 1: the output head only
    assert layer_devices(61, 62, [1.0]) == [0] * 62
    two = layer_devices(61, 62, [1.0, 1.0])
    assert two[:31] == [0] * 31 and two[31:] == [1] * 31
    uneven = layer_devices(61, 62, [3.0, 1.0])
    assert uneven.count(0) > 2.5 * uneven.count(1)


@pytest.mark.parametrize("offload", [Offload(0), Offload(62), Offload(62, 30), Offload(62, 61),
                                     Offload(20, 61), Offload(1)])
def test_placement_puts_every_byte_somewhere(v3_file: Path, offload: Offload) -> None:
    memory = local_source(v3_file).memory
    loads = device_loads(memory, offload, ["GPU0", "GPU1"], [1.0, 1.0], kv_layer=7, compute_main=0,
                         compute_other=0)
    assert sum(load.weights for load in loads) == memory.weights
    assert sum(load.kv for load in loads) == 7 * memory.shape.n_layer
    experts_home = sum(layer.routed_experts for layer in memory.layers[:offload.cpu_moe_layers]
                       if layer.index >= memory.shape.n_layer + 1 - offload.gpu_layers)
    on_cpu_layers = memory.shape.n_layer + 1 - offload.gpu_layers
    cpu_layers = sum(layer.total for layer in memory.layers[:max(0, on_cpu_layers)])
    output = memory.output_weights if offload.gpu_layers == 0 else 0
    assert loads[-1].weights == memory.input + cpu_layers + experts_home + output


# --- recommendations -----------------------------------------------------------------------


def v3_plan(v3_file: Path, machine: Machine, **request: object):
    memory = local_source(v3_file).memory
    return make_plan(memory, machine, PlanRequest(**{"ctx": 16384, **request}))  # type: ignore[arg-type]


def test_24g_gpu_128g_ram_keeps_the_fewest_experts_home(v3_file: Path) -> None:
    machine = Machine(128 * GIB, (GPU("4090", 24 * GIB),))
    plan = v3_plan(v3_file, machine)
    layout = plan.llama
    assert plan.fit == "gpu+ram"
    k = layout.offload.cpu_moe_layers
    assert layout.offload.gpu_layers == 62 and 3 < k < 61
    budget = gpu_budgets(machine, plan.request)[0]
    assert layout.gpu_loads[0].total <= budget
    # One block fewer in RAM would not fit the GPU: the plan keeps the GPU as full as it can.
    from ollamads.plan.recommend import _loads

    tighter = _loads(plan.memory, machine, plan.request, Offload(62, k - 1), kv_type="q8_0",
                     engine="llama.cpp", flash_attention=True)
    assert tighter[0].total > budget
    assert layout.cpu_load.total <= ram_budget(machine, plan.request)
    assert plan.environment["LLAMA_ARG_N_CPU_MOE"] == str(k)
    assert "LLAMA_ARG_N_GPU_LAYERS" not in plan.environment
    assert plan.llama_server[plan.llama_server.index("--n-cpu-moe") + 1] == str(k)
    assert plan.parameters == {"num_ctx": 16384}


def test_small_gpu_keeps_every_expert_home_and_fewer_layers(v3_file: Path) -> None:
    plan = v3_plan(v3_file, Machine(256 * GIB, (GPU("small", 6 * GIB),)))
    assert plan.fit == "gpu+ram"
    assert plan.llama.offload.cpu_moe_layers == 61 and plan.llama.offload.gpu_layers < 62
    assert plan.environment["LLAMA_ARG_OVERRIDE_TENSOR"] == ALL_EXPERTS_ON_CPU
    assert plan.environment["LLAMA_ARG_N_GPU_LAYERS"] == str(plan.llama.offload.gpu_layers)
    assert ["-ot", ALL_EXPERTS_ON_CPU] == list(plan.llama_server[plan.llama_server.index("-ot"):][:2])


def test_two_80g_gpus_hold_it_all(v3_file: Path) -> None:
    plan = v3_plan(v3_file, Machine(128 * GIB, (GPU("a", 80 * GIB), GPU("b", 80 * GIB))))
    assert plan.fit == "gpu" and plan.llama.offload == Offload(62, 0)
    assert not any(k.startswith("LLAMA_ARG") for k in plan.environment)
    assert plan.merged.offload.gpu_layers == 62 and plan.merged.fit == "gpu"


def test_cpu_only_in_ram_or_from_disk(v3_file: Path) -> None:
    in_ram = v3_plan(v3_file, Machine(256 * GIB))
    assert in_ram.fit == "ram" and in_ram.parameters == {"num_ctx": 16384}
    from_disk = v3_plan(v3_file, Machine(64 * GIB))
    assert from_disk.fit == "disk"
    # >= 0.30 turns mmap off without a GPU: the plan turns it back on so the kernel can page.
    assert from_disk.parameters == {"num_ctx": 16384, "use_mmap": True}
    merged = v3_plan(v3_file, Machine(64 * GIB), line="merged")
    assert merged.fit == "no-load" and merged.parameters == {"num_ctx": 16384, "num_gpu": 0}


def test_merged_line_offloads_whole_layers_with_f16_kv(v3_file: Path) -> None:
    plan = v3_plan(v3_file, Machine(192 * GIB, (GPU("4090", 24 * GIB),)), line="merged")
    n = plan.merged.offload.gpu_layers
    assert 0 < n < 62 and plan.parameters == {"num_ctx": 16384, "num_gpu": n}
    assert plan.merged.kv_type == "f16"
    assert plan.merged.kv_bytes == kv_bytes(plan.memory.shape, 16384, "f16", engine="ollama")
    assert plan.fit == "gpu+ram"


def test_unified_memory_counts_once(v3_file: Path) -> None:
    apple = Machine(192 * GIB, (GPU("Apple", 144 * GIB, kind="metal"),), unified=True)
    plan = v3_plan(v3_file, apple)
    assert plan.fit in ("gpu", "gpu+ram")
    used = sum(load.total for load in plan.llama.loads)
    assert used <= 192 * GIB


# --- the command ---------------------------------------------------------------------------


def test_plan_local_file_text_and_json(capsys: pytest.CaptureFixture[str], v3_file: Path,
                                       no_server: None) -> None:
    code, out, err = run_cli(capsys, "plan", str(v3_file), "--ram", "128G", "--vram", "24G")
    assert code == 0, err
    assert "fits GPU + RAM" in out and "LLAMA_ARG_N_CPU_MOE=" in out and "llama-server --model" in out
    record = plan_json(capsys, str(v3_file), "--ram", "128G", "--vram", "24G")
    assert record["fit"] == "gpu+ram" and record["request"]["server_line"] == "split"
    assert record["machine"]["gpus"][0]["memory"] == 24 * GIB
    assert len(record["memory"]["layers"]) == 61
    assert sum(d["weights"] for d in record["llama_cpp"]["devices"]) == record["memory"]["weights"]


def test_vram_list_forms(capsys: pytest.CaptureFixture[str], v3_file: Path, no_server: None) -> None:
    a = plan_json(capsys, str(v3_file), "--ram", "128", "--vram", "24G,24G")
    b = plan_json(capsys, str(v3_file), "--ram", "128", "--vram", "24GiB", "--vram", "24")
    assert a["machine"]["gpus"] == b["machine"]["gpus"] and len(a["machine"]["gpus"]) == 2
    none = plan_json(capsys, str(v3_file), "--ram", "256G", "--vram", "0")
    assert none["machine"]["gpus"] == [] and none["fit"] == "ram"


def test_defaults_come_from_this_machine(capsys: pytest.CaptureFixture[str], v3_file: Path,
                                         no_server: None, fake_nvidia_smi: Callable[[str], None]) -> None:
    fake_nvidia_smi("NVIDIA GeForce RTX 4090, 24564, 24000\nNVIDIA GeForce RTX 4090, 24564, 23000\n")
    record = plan_json(capsys, str(v3_file))
    assert [g["memory"] for g in record["machine"]["gpus"]] == [24564 << 20, 24564 << 20]
    assert record["machine"]["source"] == "detected"


@pytest.fixture
def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Put an ``nvidia-smi`` first on PATH that prints ``csv`` (no GPU exists here)."""

    def install(csv: str) -> None:
        bindir = tmp_path / "fakebin"
        bindir.mkdir(exist_ok=True)
        script = bindir / "nvidia-smi"
        (bindir / "gpus.csv").write_text(csv)
        script.write_text(f"#!/bin/sh\ncat {bindir / 'gpus.csv'}\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")

    return install


def test_rocm_smi_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ollamads.hardware import rocm_gpus

    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "rocm-smi"
    data = {"card0": {"VRAM Total Memory (B)": "25753026560", "VRAM Total Used Memory (B)": "1000"}}
    script.write_text(f"#!/bin/sh\necho '{json.dumps(data)}'\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    assert rocm_gpus() == [GPU("AMD card0", 25753026560, 25753025560, "rocm")]


# --- bad input: one line and the fix, exit 1; usage errors exit 2 ---------------------------


def one_line_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, out, err = run_cli(capsys, *args)
    assert code == 1, (out, err)
    assert err.count("\n") == 1 and err.startswith("Error: ") and " — " in err, err
    return err


@pytest.mark.parametrize("args, words", [
    (["--ram", "-1"], "cannot be negative"),
    (["--ram", "0"], "RAM must be more than zero"),
    (["--vram", "-24G"], "cannot be negative"),
    (["--ram", "lots"], "cannot read the RAM"),
    (["--ctx", "200000"], "more than"),
    (["--kv-type", "q5_1", "--server-line", "merged"], "does not accept the KV cache type"),
])
def test_bad_figures(capsys: pytest.CaptureFixture[str], v3_file: Path, no_server: None,
                     args: list[str], words: str) -> None:
    assert words in one_line_error(capsys, "plan", str(v3_file), *args)


def test_kv_type_whose_blocks_do_not_divide_the_rows(capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path, no_server: None) -> None:
    # K rows of 64 + 16 = 80 (a rope dimension of 16): llama.cpp refuses q8_0 (blocks of 32).
    from ollamads.tiny import TinyModelSpec

    tiny = write_tiny_model(tmp_path / "tiny.gguf", spec=TinyModelSpec("v3.1", qk_rope_head_dim=16))
    err = one_line_error(capsys, "plan", str(tiny), "--kv-type", "q8_0", "--ram", "8G")
    assert "not whole 32-element blocks" in err and "--kv-type f16" in err


def test_unknown_kv_type_is_a_usage_error(capsys: pytest.CaptureFixture[str], v3_file: Path) -> None:
    code, _, err = run_cli(capsys, "plan", str(v3_file), "--kv-type", "q3_k")
    assert code == 2 and "q3_k" in err


def test_unknown_quant(capsys: pytest.CaptureFixture[str]) -> None:
    assert "no quant" in one_line_error(capsys, "plan", "r1:Q9_K")


def test_truncated_and_pointer_files(capsys: pytest.CaptureFixture[str], v3_file: Path,
                                     tmp_path: Path) -> None:
    with open(v3_file, "rb") as f:
        head = f.read(8 << 20)  # the whole header (3.4 MB) and some data
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(head[: 1 << 19])  # ends inside the header
    assert "truncated" in one_line_error(capsys, "plan", str(cut))
    short = tmp_path / "short.gguf"
    with open(short, "wb") as f:  # a whole header, but a download that stopped half-way
        f.write(head)
        f.truncate(v3_file.stat().st_size // 2)
    err = one_line_error(capsys, "plan", str(short))
    assert "truncated" in err and "download this file again" in err
    pointer = tmp_path / "pointer.gguf"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n")
    assert "git-LFS pointer" in one_line_error(capsys, "plan", str(pointer))


def test_not_deepseek(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from ollamads.gguf.format import GGUFWriter

    w = GGUFWriter()
    w.add("general.architecture", "llama")
    w.write(tmp_path / "llama.gguf")
    assert "not DeepSeek" in one_line_error(capsys, "plan", str(tmp_path / "llama.gguf"))


def test_v3_dims_match_the_layout(v3_file: Path) -> None:
    memory = local_source(v3_file).memory
    assert memory.shape.n_embd == DEEPSEEK_V3.n_embd and memory.shape.n_vocab == DEEPSEEK_V3.n_vocab
    assert len([layer for layer in memory.layers if layer.routed_experts]) == 61 - 3
