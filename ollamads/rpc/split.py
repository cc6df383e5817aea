"""Which layers go where when one model is spread over a head node and RPC workers.

The layout follows llama.cpp's own rules (src/llama-model.cpp, ``llama_prepare_model_devices``):
RPC devices come first in device order, local GPUs after them; ``-ngl N`` offloads the *last*
N "layers", where the output head counts as one more layer after the last block; ``-ts``
splits the offloaded layers over the devices in order, so each device holds one contiguous
range and the output head lands on the last one; ``token_embd`` always stays on the head's CPU.

So the model is cut into ranges, in this order:

* the head's RAM: the first layers nobody else holds (not offloaded), plus ``token_embd``;
* the workers, one range each, in the order given to ``--workers``;
* the head's GPU, if it has one: the last layers and the output head.

Where the routed experts stay (``ffn_{gate,up,down}_exps``, most of DeepSeek's bytes):

* on a worker, with their layer. A layer whose experts live on another machine sends its
  activations over the network and back for every token; a contiguous range crosses it once.
* on the head's GPU, with their layer while they fit; past that, in the head's RAM (what
  ``-ot 'blk\\.N\\.ffn_.*_exps=CPU'`` and ``--n-cpu-moe`` do: a PCIe hop, not a network one), so
  the GPU keeps the dense part of as many layers as possible.

Every device is filled as far as it goes, from the output end backwards: this leaves the fewest
layers to the head's CPU, and for contiguous ranges on devices in a fixed order, filling each
one to the brim is the packing that fits whenever any packing fits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ollamads.gguf.format import GGUFFile, align_up, read_gguf

#: llama.cpp's LLM_FFN_EXPS_REGEX (common/common.h): the routed experts, fused or not.
EXPERTS_RE = re.compile(r"\.ffn_(up|down|gate|gate_up)_(ch|)exps")
_LAYER_RE = re.compile(r"^blk\.(\d+)\.")
_INPUT = "token_embd."
_OUTPUT = ("output.", "output_norm.")


@dataclass(frozen=True)
class LayerBytes:
    index: int
    dense: int  # attention, norms, router, shared experts, dense FFN
    experts: int  # routed experts

    @property
    def total(self) -> int:
        return self.dense + self.experts


@dataclass(frozen=True)
class ModelBytes:
    """A model's weights by where llama.cpp can place them."""

    layers: tuple[LayerBytes, ...]
    input: int  # token_embd (and anything else outside the blocks): always the head's CPU
    output: int  # output head (output_norm + output, or token_embd again when tied)

    @property
    def total(self) -> int:
        return self.input + self.output + sum(layer.total for layer in self.layers)


def model_bytes(headers: Iterable[GGUFFile]) -> ModelBytes:
    """Per-layer bytes of a model from its GGUF header(s) (every shard of a split set)."""
    dense: dict[int, int] = {}
    experts: dict[int, int] = {}
    inputs = output = embedding = 0
    has_output_weight = False
    for header in headers:
        for tensor in header.tensors:
            size = align_up(tensor.nbytes, header.alignment)
            layer = _LAYER_RE.match(tensor.name)
            if layer:
                index = int(layer[1])
                bucket = experts if EXPERTS_RE.search(tensor.name) else dense
                bucket[index] = bucket.get(index, 0) + size
                dense.setdefault(index, 0)
            elif tensor.name.startswith(_OUTPUT):
                output += size
                has_output_weight |= tensor.name.startswith("output.weight")
            else:
                inputs += size
                if tensor.name.startswith(_INPUT):
                    embedding += size
    if not has_output_weight:
        output += embedding  # tied embeddings: llama.cpp loads token_embd again as the output
    layers = tuple(LayerBytes(i, dense[i], experts.get(i, 0)) for i in sorted(dense))
    return ModelBytes(layers, inputs, output)


def model_bytes_of(paths: Sequence[str | Path]) -> ModelBytes:
    return model_bytes(read_gguf(path) for path in paths)


@dataclass(frozen=True)
class Host:
    """Memory one device can give the model: ``memory`` minus ``reserve`` (compute buffers,
    the OS...) holds weights and the KV cache of its layers."""

    name: str
    memory: int
    reserve: int = 0

    @property
    def room(self) -> int:
        return max(self.memory - self.reserve, 0)


@dataclass(frozen=True)
class Share:
    """What one device holds. ``layers`` is a contiguous range; ``experts_in_ram`` are layers of
    this range whose routed experts stay in the head's RAM instead (head GPU only)."""

    host: Host
    role: str  # "head-ram", "worker" or "head-gpu"
    layers: range
    output: bool = False
    experts_in_ram: range = range(0)
    used: int = 0

    @property
    def free(self) -> int:
        return self.host.room - self.used


@dataclass(frozen=True)
class SplitPlan:
    """Shares in llama.cpp's device order: head RAM, the workers, then the head's GPU."""

    shares: tuple[Share, ...]
    n_layers: int
    fits: bool
    shortfall: int  # bytes the head's RAM lacks; 0 when it fits
    warnings: tuple[str, ...] = field(default=())

    def share(self, role: str) -> Share | None:
        return next((s for s in self.shares if s.role == role), None)

    @property
    def offloaded(self) -> int:
        """llama.cpp's ``-ngl``: every layer not on the head's CPU, plus the output head."""
        on_devices = [s for s in self.shares if s.role != "head-ram"]
        return sum(len(s.layers) for s in on_devices) + any(s.output for s in on_devices)

    def where_experts_stay(self, layer: int) -> str:
        for share in self.shares:
            if layer in share.layers:
                return self.shares[0].host.name if layer in share.experts_in_ram else share.host.name
        raise IndexError(layer)

    def llama_arguments(self) -> list[str]:
        """The llama-server options that give this layout (``-ngl``, ``-ts``, ``-ot``)."""
        devices = [s for s in self.shares if s.role != "head-ram"]
        args = ["-ngl", str(self.offloaded)]
        if self.offloaded:
            counts = [len(s.layers) + s.output for s in devices]
            args += ["-ts", ",".join(map(str, counts))]
        moved = [str(i) for s in devices for i in s.experts_in_ram]
        if moved:
            args += ["-ot", rf"blk\.({'|'.join(moved)})\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU"]
        return args


def split_layers(
    model: ModelBytes,
    head_ram: Host,
    workers: Sequence[Host],
    *,
    head_gpu: Host | None = None,
    kv_per_layer: int = 0,
) -> SplitPlan:
    """Spread ``model`` over the workers (and the head's GPU), the rest in the head's RAM."""
    layers = list(model.layers)
    end = len(layers)  # layers [0, end) are not placed yet
    shares: list[Share] = []
    experts_to_ram = 0
    output_placed = False

    if head_gpu is not None:
        used = model.output
        whole_from = end
        dense_from = end
        for layer in reversed(layers):
            if dense_from == whole_from and used + layer.total + kv_per_layer <= head_gpu.room:
                used += layer.total + kv_per_layer
                whole_from = dense_from = layer.index
            elif used + layer.dense + kv_per_layer <= head_gpu.room:
                used += layer.dense + kv_per_layer
                experts_to_ram += layer.experts
                dense_from = layer.index
            else:
                break
        output_placed = model.output <= head_gpu.room
        if not output_placed:
            used = 0
            dense_from = whole_from = end
            experts_to_ram = 0
        shares.append(Share(head_gpu, "head-gpu", range(dense_from, end), output_placed, range(dense_from, whole_from), used))
        end = dense_from

    for worker in reversed(workers):
        used = 0 if output_placed else model.output
        start = end
        while start > 0 and used + layers[start - 1].total + kv_per_layer <= worker.room:
            start -= 1
            used += layers[start].total + kv_per_layer
        takes_output = not output_placed and start < end
        shares.append(Share(worker, "worker", range(start, end), takes_output, used=used if start < end else 0))
        output_placed |= takes_output
        end = start

    ram_used = model.input + experts_to_ram + sum(layers[i].total + kv_per_layer for i in range(end))
    if not output_placed:
        ram_used += model.output
    shares.append(Share(head_ram, "head-ram", range(end), not output_placed, used=ram_used))
    shortfall = max(ram_used - head_ram.room, 0)
    warnings = tuple(
        f"{s.host.name} holds no layer: it is too small for one" for s in shares if s.role == "worker" and not s.layers
    )
    return SplitPlan(tuple(reversed(shares)), len(layers), shortfall == 0, shortfall, warnings)


__all__ = [
    "EXPERTS_RE",
    "Host",
    "LayerBytes",
    "ModelBytes",
    "Share",
    "SplitPlan",
    "model_bytes",
    "model_bytes_of",
    "split_layers",
]
