"""What the benchmarks share: a big DeepSeek-shaped model, cold caches, and disk counters.

* :func:`write_big_shards` writes a real ``deepseek2`` GGUF (the tiny model's layout with
  bigger dimensions and random F16 weights) as split shards, fast: headers from ollamads' own
  writer, tensor data streamed from one random buffer. llama.cpp and both Ollama lines load it.
* :class:`DiskMeter` reads bytes written to the block device that holds a folder
  (``/proc/diskstats``) and samples free space every 50 ms for the peak extra disk.
* :func:`drop_caches` syncs and empties the page cache (root only) for cold runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ollamads.gguf.format import (
    GGMLQuantizationType,
    GGUFValueType,
    TensorInfo,
    align_up,
    pack_header,
    tensor_nbytes,
)
from ollamads.gguf.deepseek2 import tensor_layout
from ollamads.tiny import TinyModelSpec, model_metadata, shard_name, tokenizer_vocab

ALIGN = 32
RANDOM_BLOCK = 16 << 20


def big_spec(family: str = "v3.1", layers: int = 7) -> TinyModelSpec:
    """About 0.4 GB per MoE layer (64 experts of 1024x1024 F16, three matrices)."""
    return TinyModelSpec(
        family, weight_type=GGMLQuantizationType.F16, n_layer=layers, n_embd=1024, n_ff=2048,
        n_head=8, q_lora_rank=256, kv_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32,
        v_head_dim=64, n_expert=64, n_expert_used=4, n_expert_groups=4, n_expert_groups_used=2,
        n_ff_exp=1024,
    )


def _weight_type(spec: TinyModelSpec, name: str, shape: tuple[int, ...]) -> GGMLQuantizationType:
    """As the tiny model stores them: norms, the router and its bias in F32, the rest F16."""
    small = (len(shape) == 1 and name.endswith("norm.weight")) or name.endswith(
        ("ffn_gate_inp.weight", "exp_probs_b.bias"))
    return GGMLQuantizationType.F32 if small else spec.weight_type


def _kv_map(items: list[tuple]) -> dict[str, tuple[GGUFValueType, object]]:
    kv: dict[str, tuple[GGUFValueType, object]] = {}
    for key, value, vtype in items:
        if isinstance(value, (list, tuple)):
            kv[key] = (GGUFValueType.ARRAY, (vtype, list(value)))
        else:
            kv[key] = (vtype, value)
    return kv


def write_big_shards(directory: Path, n_shards: int = 4, *, family: str = "v3.1", layers: int = 7,
                     quant: str = "Q2_K_XL", name: str = "DeepSeek-V3.1") -> list[Path]:
    spec = big_spec(family, layers)
    tokens, _ = tokenizer_vocab()
    layout = [(slot.name, slot.shape, _weight_type(spec, slot.name, slot.shape))
              for slot in tensor_layout(spec.dims(len(tokens)))]
    sizes = [tensor_nbytes(t, shape) for _, shape, t in layout]
    # Cut where the bytes are even, keeping tensor order (as llama-gguf-split --split-max-size).
    target, groups, current, acc = sum(sizes) / n_shards, [], [], 0
    for entry, size in zip(layout, sizes):
        if current and acc + size > target * (len(groups) + 1) and len(groups) < n_shards - 1:
            groups.append(current)
            current = []
        current.append(entry)
        acc += size
    groups.append(current)
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(RANDOM_BLOCK // 2) * 0.02).astype(np.float16).tobytes()
    directory.mkdir(parents=True, exist_ok=True)
    metadata = model_metadata(spec)
    paths = []
    for i, group in enumerate(groups):
        kv = _kv_map(metadata) if i == 0 else {}
        kv["split.no"] = (GGUFValueType.UINT16, i)
        kv["split.tensors.count"] = (GGUFValueType.INT32, len(layout))
        kv["split.count"] = (GGUFValueType.UINT16, len(groups))
        infos, offset = [], 0
        for tname, shape, ggml_type in group:
            infos.append(TensorInfo(tname, shape, ggml_type, offset))
            offset += align_up(tensor_nbytes(ggml_type, shape), ALIGN)
        header = pack_header(kv, infos)
        path = directory / shard_name(name, quant, i + 1, len(groups))
        with open(path, "wb") as out:
            out.write(header + bytes(align_up(len(header), ALIGN) - len(header)))
            for tname, shape, ggml_type in group:
                n = tensor_nbytes(ggml_type, shape)
                if ggml_type == GGMLQuantizationType.F32:
                    data = np.ones(n // 4, dtype=np.float32).tobytes()
                    out.write(data)
                else:
                    left = n
                    while left:
                        piece = noise[: min(left, len(noise))]
                        out.write(piece)
                        left -= len(piece)
                out.write(bytes(align_up(n, ALIGN) - n))
        paths.append(path)
    return paths


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        raise SystemExit(f"cold runs need root to drop the page cache ({exc.strerror})") from None


def _device_of(path: Path) -> str:
    """The /proc/diskstats name of the block device holding ``path`` (its whole disk)."""
    dev = os.stat(path).st_dev
    major, minor = os.major(dev), os.minor(dev)
    name = Path(f"/sys/dev/block/{major}:{minor}").resolve().name
    parent = Path(f"/sys/class/block/{name}/..").resolve().name
    return parent if Path(f"/sys/class/block/{parent}/stat").exists() and parent != "block" else name


def _sectors_written(device: str) -> int:
    for line in Path("/proc/diskstats").read_text().splitlines():
        fields = line.split()
        if fields[2] == device:
            return int(fields[9])
    raise SystemExit(f"no {device} in /proc/diskstats")


@dataclass
class Measured:
    seconds: float
    bytes_written: int
    peak_extra_disk: int


class DiskMeter:
    """``with DiskMeter(folder) as m: ...`` then ``m.result``: time, device writes, peak disk."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.device = _device_of(folder)
        self.result: Measured | None = None

    def __enter__(self) -> DiskMeter:
        subprocess.run(["sync"], check=True)
        self._free0 = shutil.disk_usage(self.folder).free
        self._min_free = self._free0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        self._sectors0 = _sectors_written(self.device)
        self._t0 = time.perf_counter()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self._min_free = min(self._min_free, shutil.disk_usage(self.folder).free)

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["sync"], check=True)  # writes still in the page cache count too
        seconds = time.perf_counter() - self._t0
        sectors = _sectors_written(self.device) - self._sectors0
        self._stop.set()
        self._sampler.join()
        self._min_free = min(self._min_free, shutil.disk_usage(self.folder).free)
        self.result = Measured(seconds, sectors * 512, self._free0 - self._min_free)
