"""The plan's speed estimate: the bytes each token reads, counted from the GGUF's own tensor table
independently of the plan's grouping, over each device's bandwidth (the RAM's probe, a GPU's
published figure by the name a fake ``nvidia-smi`` prints), in ``plan`` and ``plan --json``."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from ollamads.gguf.format import read_gguf
from ollamads.hardware import GPU, Machine
from ollamads.plan.memory import kv_layer_bytes
from ollamads.plan.planner import plan_model
from ollamads.plan.sources import local_source
from ollamads.plan.speed import (
    BANDWIDTH_RECORD,
    GB,
    MERGED_ENGINE_SHARE,
    estimate_speed,
    gpu_bandwidth,
    probe_ram_bandwidth,
    ram_bandwidth,
)
from tests.support.cli import run_cli
from tests.support.synthetic import deepseek_v3_sparse

RTX_4090 = "NVIDIA GeForce RTX 4090, 24564, 24000\n"


@pytest.fixture(scope="module")
def v3_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return deepseek_v3_sparse(tmp_path_factory.mktemp("v3"))[0]


@pytest.fixture
def ram_10gbs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMADS_RAM_BANDWIDTH", "10")
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:1")  # no server: the >= 0.30 line


@pytest.fixture
def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    def install(csv: str) -> None:
        bindir = tmp_path / "fakebin"
        bindir.mkdir(exist_ok=True)
        (bindir / "gpus.csv").write_text(csv)
        script = bindir / "nvidia-smi"
        script.write_text(f"#!/bin/sh\ncat {bindir / 'gpus.csv'}\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return install


def read_per_token(path: Path, *, experts_used: int, n_expert: int) -> int:
    """Bytes a token reads, from the tensor names: every weight except the input embeddings,
    the routed experts (``_exps``) at experts_used / n_expert."""
    total = 0.0
    for tensor in read_gguf(path).tensors:
        if tensor.name == "token_embd.weight":
            continue
        share = experts_used / n_expert if "_exps." in tensor.name else 1.0
        total += tensor.nbytes * share
    return int(total)


def plan_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    code, out, err = run_cli(capsys, "plan", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_cpu_only_decode_is_bytes_over_bandwidth(capsys: pytest.CaptureFixture[str], v3_file: Path,
                                                 ram_10gbs: None) -> None:
    record = plan_json(capsys, str(v3_file), "--ram", "256G", "--vram", "0", "--ctx", "4096")
    expected_bytes = read_per_token(v3_file, experts_used=8, n_expert=256)
    speed = record["speed"]
    assert speed["estimate"] is True
    assert abs(speed["bytes_per_token"] - expected_bytes) <= 256  # rounding of the expert share
    assert record["decode_tokens_per_s"] == pytest.approx(10 * GB / expected_bytes, rel=1e-4)
    # The full context's KV cache adds its bytes per token.
    memory = local_source(v3_file).memory
    kv = memory.shape.n_layer * kv_layer_bytes(memory.shape, 4096, "q8_0")
    assert speed["decode_tokens_per_s_at_ctx"] == pytest.approx(10 * GB / (expected_bytes + kv), rel=1e-3)
    assert record["prompt_tokens_per_s"] is None  # not estimated
    assert "CPU reads" in speed["basis"] and "OLLAMADS_RAM_BANDWIDTH" in speed["basis"]


def test_gpu_from_nvidia_smi_uses_its_published_bandwidth(
    capsys: pytest.CaptureFixture[str], v3_file: Path, ram_10gbs: None,
    fake_nvidia_smi: Callable[[str], None],
) -> None:
    fake_nvidia_smi(RTX_4090)
    record = plan_json(capsys, str(v3_file), "--ram", "128G")
    assert record["fit"] == "gpu+ram"
    gpu, cpu = record["speed"]["devices"]
    assert gpu["bandwidth"] == 1008 * GB and "RTX 4090" in gpu["bandwidth_source"]
    assert cpu["bandwidth"] == 10 * GB
    # Every byte a token reads is on one of the two, and the GPU's share is the plan's layers.
    assert gpu["bytes_per_token"] + cpu["bytes_per_token"] == pytest.approx(
        read_per_token(v3_file, experts_used=8, n_expert=256), abs=512)
    seconds = gpu["bytes_per_token"] / (1008 * GB) + cpu["bytes_per_token"] / (10 * GB)
    assert record["decode_tokens_per_s"] == pytest.approx(1 / seconds, rel=1e-4)
    # Keeping the experts of blocks 0..K-1 in RAM moves their share to the CPU: slower than all
    # on the GPU, faster than all in RAM.
    cpu_only = read_per_token(v3_file, experts_used=8, n_expert=256) / (10 * GB)
    assert 1 / cpu_only < record["decode_tokens_per_s"]


def test_a_gpu_not_in_the_table_gives_no_figure(capsys: pytest.CaptureFixture[str], v3_file: Path,
                                               ram_10gbs: None, fake_nvidia_smi: Callable[[str], None]) -> None:
    fake_nvidia_smi("Mystery Accelerator 9000, 24564, 24000\n")
    record = plan_json(capsys, str(v3_file), "--ram", "128G")
    assert record["decode_tokens_per_s"] is None
    assert "bandwidth unknown" in record["speed"]["basis"]
    code, out, _ = run_cli(capsys, "plan", str(v3_file), "--ram", "128G")
    assert code == 0 and "speed: not estimated" in out and "OLLAMADS_GPU_BANDWIDTH" in out


def test_merged_line_is_scaled_and_shows_the_upgrade(capsys: pytest.CaptureFixture[str], v3_file: Path,
                                                     ram_10gbs: None) -> None:
    merged = plan_json(capsys, str(v3_file), "--ram", "256G", "--vram", "0", "--server-line", "merged")
    split = plan_json(capsys, str(v3_file), "--ram", "256G", "--vram", "0", "--server-line", "split")
    assert merged["speed"]["engine_share"] == MERGED_ENGINE_SHARE
    # Ollama <= 0.24 keeps K and V at f16: more KV bytes, so compare at an empty context.
    assert merged["decode_tokens_per_s"] == pytest.approx(split["decode_tokens_per_s"] * MERGED_ENGINE_SHARE)
    assert merged["upgrade_speed"]["decode_tokens_per_s"] == pytest.approx(split["decode_tokens_per_s"], rel=1e-3)
    code, out, _ = run_cli(capsys, "plan", str(v3_file), "--ram", "256G", "--vram", "0",
                           "--server-line", "merged")
    assert code == 0
    assert "speed (estimate)" in out and "on Ollama >= 0.30" in out and "no longer needed" in out


def test_ram_probe_runs_once_per_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OLLAMADS_RAM_BANDWIDTH", raising=False)
    monkeypatch.setenv("OLLAMADS_HOME", str(tmp_path))
    first = ram_bandwidth()
    assert first.source == "measured on this machine" and first.bytes_per_s > 1e8
    record = json.loads((tmp_path / BANDWIDTH_RECORD).read_text())
    record["bytes_per_s"] = 12345e6  # a remembered figure is used as it is
    (tmp_path / BANDWIDTH_RECORD).write_text(json.dumps(record))
    assert ram_bandwidth().bytes_per_s == 12345e6
    record["machine"] = "another machine"
    (tmp_path / BANDWIDTH_RECORD).write_text(json.dumps(record))
    assert ram_bandwidth().bytes_per_s != 12345e6  # probed again


def test_probe_is_short_and_plausible() -> None:
    import time

    start = time.perf_counter()
    value = probe_ram_bandwidth()
    assert time.perf_counter() - start < 5
    assert 1e8 < value < 2e12  # between 0.1 GB/s and 2 TB/s


@pytest.mark.parametrize(("name", "gbps"), [
    ("NVIDIA GeForce RTX 4090", 1008), ("NVIDIA H100 80GB HBM3", 3350), ("NVIDIA H100 PCIe", 2000),
    ("NVIDIA A100-SXM4-80GB", 2039), ("NVIDIA A100-PCIE-40GB", 1555), ("NVIDIA GeForce RTX 3090", 936),
    ("NVIDIA GeForce RTX 3090 Ti", 1008), ("AMD Instinct MI300X", 5300), ("NVIDIA L4", 300),
    ("NVIDIA L40S", 864),
])
def test_gpu_table(name: str, gbps: float) -> None:
    found = gpu_bandwidth(GPU(name, 24 << 30))
    assert found is not None and found.bytes_per_s == gbps * GB


def test_unified_memory_reads_at_the_rams_speed(v3_file: Path, ram_10gbs: None) -> None:
    memory = local_source(v3_file).memory
    apple = Machine(192 << 30, (GPU("Apple GPU (unified memory)", 144 << 30, None, "metal"),), unified=True)
    result = plan_model(str(v3_file), apple, ctx=4096)
    assert result.speed is not None and result.speed.decode_tokens_per_s is not None
    everything = estimate_speed(memory, Machine(192 << 30), 0, 0, ctx=4096, kv_type="q8_0")
    assert result.speed.decode_tokens_per_s == pytest.approx(everything.decode_tokens_per_s, rel=1e-6)


def test_rocm_product_name_finds_the_bandwidth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ollamads.hardware import rocm_gpus

    bindir = tmp_path / "bin"
    bindir.mkdir()
    memory = {"card0": {"VRAM Total Memory (B)": "206141652992", "VRAM Total Used Memory (B)": "1000"}}
    names = {"card0": {"Card Series": "AMD Instinct MI300X", "Card Vendor": "Advanced Micro Devices"}}
    (bindir / "mem.json").write_text(json.dumps(memory))
    (bindir / "names.json").write_text(json.dumps(names))
    script = bindir / "rocm-smi"
    script.write_text(f'#!/bin/sh\ncase "$*" in *showproductname*) cat {bindir}/names.json;; '
                      f'*) cat {bindir}/mem.json;; esac\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    (gpu,) = rocm_gpus()
    assert gpu.name == "AMD Instinct MI300X" and gpu.total == 206141652992
    found = gpu_bandwidth(gpu)
    assert found is not None and found.bytes_per_s == 5300 * GB


def test_a_gpu_with_too_little_free_memory_is_named(capsys: pytest.CaptureFixture[str], v3_file: Path,
                                                    ram_10gbs: None, fake_nvidia_smi: Callable[[str], None]) -> None:
    """The plan budgets each GPU's total; when nvidia-smi says less is free than the plan puts
    there, the plan says the load would fail (llama-server's fit does not step in)."""
    fake_nvidia_smi("NVIDIA GeForce RTX 4090, 24564, 12000\n")
    record = plan_json(capsys, str(v3_file), "--ram", "128G")
    (gpu,) = record["llama_cpp"]["devices"][:1]
    assert gpu["total"] > 12000 << 20
    (note,) = [n for n in record["notes"] if "free now" in n]
    assert "NVIDIA GeForce RTX 4090 has 11.7 GiB free now" in note and "--vram 11.7G" in note
    fake_nvidia_smi("NVIDIA GeForce RTX 4090, 24564, 24000\n")
    assert not [n for n in plan_json(capsys, str(v3_file), "--ram", "128G")["notes"] if "free now" in n]


def test_few_cpu_threads_set_the_cpus_time(v3_file: Path, ram_10gbs: None) -> None:
    """With fast RAM and one thread the CPU's arithmetic is the limit; with many threads the RAM."""
    from ollamads.plan.speed import CPU_BYTES_PER_S_PER_THREAD, Bandwidth

    memory = local_source(v3_file).memory
    fast = Bandwidth(100 * GB, "given")
    one = estimate_speed(memory, Machine(256 << 30), 0, 0, ctx=4096, kv_type="q8_0", ram=fast, threads=1)
    many = estimate_speed(memory, Machine(256 << 30), 0, 0, ctx=4096, kv_type="q8_0", ram=fast, threads=64)
    assert one.cpu_compute_bound and not many.cpu_compute_bound
    assert one.decode_tokens_per_s == pytest.approx(CPU_BYTES_PER_S_PER_THREAD / one.bytes_per_token)
    assert many.decode_tokens_per_s == pytest.approx(100 * GB / many.bytes_per_token)
    assert "1 thread(s)" in one.basis()
