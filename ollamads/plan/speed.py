"""How fast a placement decodes: the bytes each token reads on each device, over that device's
memory bandwidth.

Generating one token reads every weight it uses once: attention (with the norms and router),
dense FFNs, shared experts, ``n_expert_used`` of ``n_expert`` routed experts per MoE block, the
output head; and the KV cache of every token so far. On a big MoE model that reading, not
arithmetic, sets the speed, so the time per token is the sum over devices of
``bytes on that device / its bandwidth`` (the devices take turns, layer by layer). A CPU with
few cores cannot keep up with its own RAM: its time is the longer of reading the bytes and its
threads working through them (:data:`CPU_BYTES_PER_S_PER_THREAD`). This is an estimate: it
leaves out synchronisation and the PCIe hops between devices, and it is checked against
measurement on this machine's CPU (README, "How fast").

Bandwidth: the RAM's is measured once on this machine by a short copy probe and remembered; a
GPU's comes from :data:`GPU_BANDWIDTH` by the name ``nvidia-smi`` / ``rocm-smi`` give.
``OLLAMADS_RAM_BANDWIDTH`` / ``OLLAMADS_GPU_BANDWIDTH`` (GB/s) replace either.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ollamads.hardware import GPU, Machine
from ollamads.plan.memory import ModelMemory, kv_layer_bytes
from ollamads.plan.placement import CPU, layer_devices

GB = 1e9
RAM_BANDWIDTH_ENV = "OLLAMADS_RAM_BANDWIDTH"
GPU_BANDWIDTH_ENV = "OLLAMADS_GPU_BANDWIDTH"
BANDWIDTH_RECORD = "ram-bandwidth.json"
#: The probe: a buffer well past any CPU cache, copied a few times; the best copy counts.
PROBE_BYTES = 64 << 20
PROBE_COPIES = 6
#: A copy reads and writes each byte once: the memory moved twice the buffer.
COPY_TRAFFIC = 2
#: Bytes of weights one CPU thread gets through per second while decoding (dequantizing and
#: multiplying). On a machine with few cores this, not the RAM, sets the speed. Measured on
#: this project's machine (README "How fast": llama.cpp, one thread, 38 tokens per CPU-second
#: on a Q8_0 model reading 163 MB per token); the same thread did 4.9 GB/s on F16.
CPU_BYTES_PER_S_PER_THREAD = 6.2e9
#: Ollama <= 0.24's engine's decode speed on DeepSeek over llama.cpp's (llama-server), measured
#: on the same model and settings: generated tokens per CPU-second, one thread, Q8_0, 256
#: experts (README "How fast"; a first wall-clock run with two threads on F16 gave 0.6).
MERGED_ENGINE_SHARE = 0.8
#: Published memory bandwidth, GB/s, by a part of the name the GPU tools print (first match
#: wins, so longer names come first).
GPU_BANDWIDTH: tuple[tuple[str, float], ...] = (
    ("H200", 4800), ("H100 NVL", 3900), ("H100 PCIe", 2000), ("H100", 3350), ("H800", 3350),
    ("GH200", 4000), ("B200", 8000), ("A100-SXM4-80GB", 2039), ("A100 80GB", 1935), ("A100", 1555),
    ("A800", 1935), ("L40S", 864), ("L40", 864), ("L4", 300), ("A40", 696), ("A10G", 600),
    ("A10", 600), ("V100", 900), ("T4", 320),
    ("RTX 6000 Ada", 960), ("RTX A6000", 768), ("RTX A5000", 768), ("RTX A4000", 448),
    ("RTX PRO 6000", 1792), ("RTX 5090", 1792), ("RTX 5080", 960), ("RTX 5070 Ti", 896),
    ("RTX 4090", 1008), ("RTX 4080", 717), ("RTX 4070 Ti", 504), ("RTX 4070", 504),
    ("RTX 4060 Ti", 288), ("RTX 3090 Ti", 1008), ("RTX 3090", 936), ("RTX 3080 Ti", 912),
    ("RTX 3080", 760), ("RTX 3070", 448), ("RTX 3060", 360),
    ("MI300X", 5300), ("MI300A", 5300), ("MI250", 3277), ("MI210", 1638), ("MI100", 1229),
    ("7900 XTX", 960), ("7900 XT", 800), ("W7900", 864),
)


@dataclass(frozen=True)
class Bandwidth:
    bytes_per_s: float
    #: Where the figure came from, for the report.
    source: str


@dataclass(frozen=True)
class DeviceSpeed:
    name: str
    #: Bytes this device reads for one token at the start of a conversation, and per token of
    #: context already in its KV cache.
    bytes_per_token: int
    kv_bytes_per_context_token: float
    bandwidth: Bandwidth | None


@dataclass(frozen=True)
class SpeedEstimate:
    devices: tuple[DeviceSpeed, ...]
    ctx: int
    #: None when a device's bandwidth is unknown (a GPU missing from the table).
    decode_tokens_per_s: float | None
    #: The same with the whole context already in the KV cache.
    decode_tokens_per_s_at_ctx: float | None
    #: Not estimated: prompt processing is bound by arithmetic, not reading (see bench).
    prompt_tokens_per_s: float | None = None
    #: Below 1: the engine was measured to reach this share of llama.cpp's speed (<= 0.24).
    engine_share: float = 1.0
    #: CPU threads assumed, and whether the CPU's arithmetic (not its RAM) sets its time.
    threads: int = 1
    cpu_compute_bound: bool = False

    @property
    def bytes_per_token(self) -> int:
        return sum(d.bytes_per_token for d in self.devices)

    def basis(self) -> str:
        parts = []
        for d in self.devices:
            if d.bytes_per_token == 0:
                continue
            bw = "bandwidth unknown" if d.bandwidth is None else (
                f"{d.bandwidth.bytes_per_s / GB:.0f} GB/s, {d.bandwidth.source}")
            parts.append(f"{d.name} reads {d.bytes_per_token / 1e6:,.0f} MB/token ({bw})")
        if self.cpu_compute_bound:
            parts.append(f"the CPU's {self.threads} thread(s) at {CPU_BYTES_PER_S_PER_THREAD / GB:.1f} GB/s "
                         "each are slower than its RAM and set its time")
        return "; ".join(parts)


# --- bandwidth -----------------------------------------------------------------------------


def probe_ram_bandwidth(size: int = PROBE_BYTES, copies: int = PROBE_COPIES) -> float:
    """Bytes/s the RAM moves in a large copy on one thread (the best of a few)."""
    source = bytearray(os.urandom(1 << 20)) * (size >> 20)
    target = bytearray(size)
    view = memoryview(target)
    best = float("inf")
    for _ in range(copies):
        start = time.perf_counter()
        view[:] = source
        best = min(best, time.perf_counter() - start)
    return COPY_TRAFFIC * size / best


def _machine_key() -> str:
    return f"{platform.node()}|{platform.machine()}|{os.cpu_count()}"


def ram_bandwidth() -> Bandwidth:
    """The RAM's bandwidth: given, remembered from an earlier probe on this machine, or probed."""
    given = os.environ.get(RAM_BANDWIDTH_ENV)
    if given:
        return Bandwidth(float(given) * GB, f"{RAM_BANDWIDTH_ENV}")
    from ollamads.paths import ollamads_home, read_record, write_record

    path = ollamads_home() / BANDWIDTH_RECORD
    record = read_record(path)
    if record.get("machine") == _machine_key() and isinstance(record.get("bytes_per_s"), (int, float)):
        return Bandwidth(float(record["bytes_per_s"]), "measured on this machine")
    value = probe_ram_bandwidth()
    with contextlib.suppress(OSError):  # else measured again next time
        write_record(path, {"machine": _machine_key(), "bytes_per_s": value})
    return Bandwidth(value, "measured on this machine")


def gpu_bandwidth(gpu: GPU) -> Bandwidth | None:
    given = os.environ.get(GPU_BANDWIDTH_ENV)
    if given:
        return Bandwidth(float(given) * GB, GPU_BANDWIDTH_ENV)
    for part, gbps in GPU_BANDWIDTH:
        if part.lower() in gpu.name.lower():
            return Bandwidth(gbps * GB, f"published for {part}")
    return None


def merged_engine_share(estimate: SpeedEstimate) -> SpeedEstimate:
    """Ollama <= 0.24's own engine decodes DeepSeek at :data:`MERGED_ENGINE_SHARE` of llama.cpp."""
    def scaled(value: float | None) -> float | None:
        return None if value is None else value * MERGED_ENGINE_SHARE
    return replace(estimate, decode_tokens_per_s=scaled(estimate.decode_tokens_per_s),
                   decode_tokens_per_s_at_ctx=scaled(estimate.decode_tokens_per_s_at_ctx),
                   engine_share=MERGED_ENGINE_SHARE)


# --- the estimate --------------------------------------------------------------------------


def token_bytes(memory: ModelMemory, gpu_layers: int, cpu_moe_layers: int, n_devices: int,
                split: Sequence[float], kv_layer_per_token: float) -> tuple[list[int], list[float]]:
    """Bytes one token reads per device (GPUs in order, then the CPU), and KV bytes per
    context token per device."""
    shape = memory.shape
    share = shape.n_expert_used / shape.n_expert if shape.n_expert else 1.0
    where = layer_devices(shape.n_layer, gpu_layers, split)
    cpu = n_devices
    weights = [0.0] * (n_devices + 1)
    kv = [0.0] * (n_devices + 1)
    for layer in memory.layers:
        device = where[layer.index]
        home = cpu if device is None else device
        weights[home] += layer.non_expert
        experts_home = cpu if layer.index < cpu_moe_layers else home
        weights[experts_home] += layer.routed_experts * share
        kv[home] += kv_layer_per_token
    out = where[shape.n_layer]
    weights[cpu if out is None else out] += memory.output_weights
    return [int(w) for w in weights], kv


def cpu_threads() -> int:
    """What llama-server uses unless told: the cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def estimate_speed(memory: ModelMemory, machine: Machine, gpu_layers: int, cpu_moe_layers: int,
                   *, ctx: int, kv_type: str, engine: str = "llama.cpp",
                   split: Sequence[float] = (), ram: Bandwidth | None = None,
                   threads: int | None = None) -> SpeedEstimate:
    """Decode tokens/s of a placement (``-ngl gpu_layers``, ``--n-cpu-moe cpu_moe_layers``).
    The CPU's time per token is the longer of reading its bytes and its threads working through
    them."""
    gpus = machine.gpus
    # The KV cache of one layer per token of context (its padded size over its cells).
    per_token_kv = kv_layer_bytes(memory.shape, ctx, kv_type, engine=engine) / max(ctx, 1)
    weights, kv = token_bytes(memory, gpu_layers, cpu_moe_layers, len(gpus),
                              split or [g.total for g in gpus] or [1.0], per_token_kv)
    ram_bw = ram or ram_bandwidth()
    bandwidths: list[Bandwidth | None] = [gpu_bandwidth(g) for g in gpus]
    # Unified memory (Apple): the GPU reads the same RAM.
    if machine.unified:
        bandwidths = [ram_bw for _ in gpus]
    # The CPU's arithmetic as a bandwidth: what its threads get through.
    n_threads = threads or cpu_threads()
    compute = n_threads * CPU_BYTES_PER_S_PER_THREAD
    bound = compute < ram_bw.bytes_per_s
    bandwidths.append(Bandwidth(compute, f"{n_threads} thread(s) multiplying") if bound else ram_bw)
    names = [g.name for g in gpus] + [CPU]
    devices = tuple(DeviceSpeed(names[i], weights[i], kv[i], bandwidths[i]) for i in range(len(names)))

    def rate(context: int) -> float | None:
        seconds = 0.0
        for d in devices:
            read = d.bytes_per_token + d.kv_bytes_per_context_token * context
            if read == 0:
                continue
            if d.bandwidth is None:
                return None
            seconds += read / d.bandwidth.bytes_per_s
        return 1 / seconds if seconds > 0 else None

    return SpeedEstimate(devices, ctx, rate(0), rate(ctx), threads=n_threads,
                         cpu_compute_bound=bound and weights[-1] > 0)


__all__ = [
    "CPU_BYTES_PER_S_PER_THREAD",
    "GPU_BANDWIDTH",
    "Bandwidth",
    "DeviceSpeed",
    "SpeedEstimate",
    "cpu_threads",
    "estimate_speed",
    "gpu_bandwidth",
    "merged_engine_share",
    "probe_ram_bandwidth",
    "ram_bandwidth",
    "token_bytes",
]
