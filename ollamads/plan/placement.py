"""Which bytes land on which device, for a given offload: llama.cpp's rules, as arithmetic.

``-ngl N`` offloads the last N "layers", the output head counting as layer ``n_layer``; the
offloaded layers are split across the GPUs in proportion to their memory (llama.cpp's default
``tensor_split``, llama-model.cpp); ``--n-cpu-moe K`` keeps the routed experts of blocks
``0..K-1`` on the CPU; ``token_embd`` never leaves the CPU. Each layer's KV cache lives on its
layer's device. A device plan for several hosts (RPC workers) is the same arithmetic with more
devices: :func:`device_loads` takes any list of device weights.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from ollamads.plan.memory import ModelMemory

CPU = "CPU"


@dataclass(frozen=True)
class Offload:
    """One placement of the model: how many layers go to the GPUs, whose experts stay home."""

    #: llama.cpp's -ngl: the last ``gpu_layers`` of the ``n_layer + 1`` layers (output included).
    gpu_layers: int
    #: llama.cpp's --n-cpu-moe: routed experts of blocks ``0..cpu_moe_layers-1`` stay on the CPU.
    cpu_moe_layers: int = 0

    def describe(self, n_layer: int) -> str:
        if self.gpu_layers == 0:
            return "everything on the CPU"
        layers = "all layers" if self.gpu_layers >= n_layer + 1 else f"the last {self.gpu_layers} layers"
        if self.cpu_moe_layers == 0:
            return f"{layers} on the GPU"
        if self.cpu_moe_layers >= n_layer:
            return f"{layers} on the GPU, every routed expert in RAM"
        return f"{layers} on the GPU, routed experts of blocks 0-{self.cpu_moe_layers - 1} in RAM"


@dataclass(frozen=True)
class DeviceLoad:
    name: str
    weights: int
    kv: int
    compute: int

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.compute


def layer_devices(n_layer: int, gpu_layers: int, split: Sequence[float]) -> list[int | None]:
    """Device index (into ``split``) of layers ``0..n_layer`` (the last is the output head), or
    None for the CPU: llama.cpp's i_gpu_start and upper_bound over the cumulative split."""
    if not split or gpu_layers <= 0:
        return [None] * (n_layer + 1)
    total = sum(split)
    cumulative, running = [], 0.0
    for share in split:
        running += share / total
        cumulative.append(running)
    start = max(n_layer + 1 - gpu_layers, 0)
    active = min(gpu_layers, n_layer + 1)
    devices: list[int | None] = []
    for il in range(n_layer + 1):
        if il < start:
            devices.append(None)
        else:
            index = bisect.bisect_right(cumulative, (il - start) / active)
            devices.append(min(index, len(split) - 1))
    return devices


def device_loads(
    memory: ModelMemory,
    offload: Offload,
    gpus: Sequence[str],
    split: Sequence[float],
    *,
    kv_layer: int,
    compute_main: int,
    compute_other: int,
) -> list[DeviceLoad]:
    """Bytes per device (``gpus`` in order, then the CPU) for ``offload``.

    ``compute_main`` is the compute buffer of the device that holds the output head (it holds
    the logits); every other device that computes gets ``compute_other``."""
    n_layer = memory.shape.n_layer
    where = layer_devices(n_layer, offload.gpu_layers, split)
    weights = [0] * (len(gpus) + 1)  # the CPU last
    kv = [0] * (len(gpus) + 1)
    cpu = len(gpus)
    weights[cpu] += memory.input
    for layer in memory.layers:
        device = where[layer.index]
        home = cpu if device is None else device
        experts_home = layer.index < offload.cpu_moe_layers
        weights[home] += layer.on_device(experts_on_cpu=experts_home and home != cpu)
        if experts_home and home != cpu:
            weights[cpu] += layer.routed_experts
        kv[home] += kv_layer
    out_device = where[n_layer]
    out_home = cpu if out_device is None else out_device
    # A tied output head shares token_embd's bytes while both are on the CPU.
    weights[out_home] += memory.output_weights if out_home == cpu else memory.output
    computes = [0] * (len(gpus) + 1)
    busy = {cpu if d is None else d for d in where}
    if any(layer.index < offload.cpu_moe_layers for layer in memory.layers):
        busy.add(cpu)
    for device in busy:
        computes[device] = compute_main if device == out_home else compute_other
    names = [*gpus, CPU]
    return [DeviceLoad(names[i], weights[i], kv[i], computes[i]) for i in range(len(names))]


__all__ = ["CPU", "DeviceLoad", "Offload", "device_loads", "layer_devices"]
