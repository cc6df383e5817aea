"""DeepSeek-shaped GGUFs of any size, with a chosen mix of quant types, for memory checks.

The header is real (the tiny model's tokenizer and hyper-parameters, llama.cpp's deepseek2
tensor layout at the given dimensions); the tensor data is either left out (a sparse file made
by truncating: a 671B model costs a few MB of disk) or random bytes. llama.cpp loads either
with mmap and no warmup: it sizes and maps every tensor but computes nothing, so its buffer
sizes are the real ones for that header.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ollamads.catalog import CatalogEntry
from ollamads.gguf.deepseek2 import DEEPSEEK_V3, DeepSeek2Dims, Role, TensorSlot, tensor_layout
from ollamads.gguf.format import (
    GGML_QUANT_SIZES,
    KEY_SPLIT_COUNT,
    KEY_SPLIT_NO,
    KEY_SPLIT_TENSORS_COUNT,
    GGMLQuantizationType,
    GGUFValueType,
    TensorInfo,
    align_up,
    pack_header,
    tensor_nbytes,
)
from ollamads.gguf.shards import shard_name
from ollamads.tiny import TinyModelSpec, model_metadata, write_tiny_model, write_tiny_shards

Q = GGMLQuantizationType
TypeChoice = Callable[[TensorSlot], GGMLQuantizationType]
ALIGNMENT = 32
WRITE_CHUNK = 64 << 20


def spec_for(dims: DeepSeek2Dims, **overrides: object) -> TinyModelSpec:
    """Hyper-parameters for the metadata: the tiny model's, at these dimensions."""
    values: dict[str, object] = dict(
        family="v3.1", n_layer=dims.n_layer, n_dense_lead=dims.n_dense_lead, n_embd=dims.n_embd,
        n_ff=dims.n_ff, n_head=dims.n_head, q_lora_rank=dims.q_lora_rank,
        kv_lora_rank=dims.kv_lora_rank, qk_nope_head_dim=dims.qk_nope_head_dim,
        qk_rope_head_dim=dims.qk_rope_head_dim, v_head_dim=dims.v_head_dim,
        n_expert=dims.n_expert, n_expert_shared=dims.n_expert_shared, n_ff_exp=dims.n_ff_exp,
    )
    values.update(overrides)
    return TinyModelSpec(**values)  # type: ignore[arg-type]


#: DeepSeek V3's own hyper-parameters (context, experts used, groups, YaRN).
V3_SPEC_OVERRIDES = dict(
    n_expert_used=8, n_expert_groups=8, n_expert_groups_used=4, context_length=163840,
    yarn_factor=40.0,
)


def unsloth_like_types(slot: TensorSlot) -> GGMLQuantizationType:
    """A dynamic-quant mix in the spirit of Unsloth's 1.58-bit R1, as its guide describes it:
    routed experts at 1.56 bit (IQ1_S) with down_proj at 2.06 bit (IQ2_XXS) in the first MoE
    layers and 1.75 bit (IQ1_M) after; attention, dense and shared weights at 4-6 bit;
    attn_k_b/v_b (rows of 128) at Q8_0; norms and the router in F32. No TQ1_0 tensors: Unsloth's
    "UD-TQ1_0" DeepSeek files are named after the quant recipe, and their experts are IQ1-class
    types (:func:`ternary_experts` makes a file that really uses TQ1_0)."""
    name, shape = slot.name, slot.shape
    if len(shape) == 1 or "ffn_gate_inp" in name:
        return Q.F32
    if name == "token_embd.weight":
        return Q.Q4_K
    if name == "output.weight":
        return Q.Q6_K
    layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
    if slot.role == Role.ROUTED_EXPERTS:
        if "down" in name:
            return Q.IQ2_XXS if layer < 6 else Q.IQ1_M
        return Q.IQ1_S
    if shape[0] % 256:
        return Q.Q8_0
    if "down" in name or "kv_a_mqa" in name:
        return Q.Q6_K
    if "attn_q_a" in name:
        return Q.Q5_K
    return Q.Q4_K


def ternary_experts(slot: TensorSlot) -> GGMLQuantizationType:
    """Routed experts as TQ1_0 (where a row is whole 256-element blocks), the rest at Q8_0/F32:
    a file with a tensor type that some Ollama releases cannot read."""
    if len(slot.shape) == 1 or "ffn_gate_inp" in slot.name:
        return Q.F32
    if slot.role == Role.ROUTED_EXPERTS:
        return fitting(Q.TQ1_0, slot)
    return fitting(Q.Q8_0, slot)


def fitting(ggml_type: GGMLQuantizationType, slot: TensorSlot) -> GGMLQuantizationType:
    """``ggml_type`` if a row of the tensor is whole blocks of it, else Q8_0, else F16."""
    for candidate in (ggml_type, Q.Q8_0, Q.F16):
        if slot.shape[0] % GGML_QUANT_SIZES[candidate][0] == 0:
            return candidate
    return Q.F32


def uniform_types(ggml_type: GGMLQuantizationType) -> TypeChoice:
    def choose(slot: TensorSlot) -> GGMLQuantizationType:
        if len(slot.shape) == 1 or "ffn_gate_inp" in slot.name:
            return Q.F32
        return fitting(ggml_type, slot)
    return choose


def _infos(slots: list[TensorSlot], types: TypeChoice) -> list[TensorInfo]:
    infos, offset = [], 0
    for slot in slots:
        ggml_type = types(slot)
        infos.append(TensorInfo(slot.name, slot.shape, int(ggml_type), offset))
        offset += align_up(tensor_nbytes(ggml_type, slot.shape), ALIGNMENT)
    return infos


def _kv_map(rows: list[tuple]) -> dict:
    kv: dict = {}
    for key, value, vtype in rows:
        if isinstance(value, list):
            kv[key] = (GGUFValueType.ARRAY, (vtype, value))
        else:
            kv[key] = (vtype, value)
    return kv


def write_synthetic(
    directory: Path,
    name: str,
    dims: DeepSeek2Dims,
    types: TypeChoice,
    *,
    spec: TinyModelSpec | None = None,
    shards: int = 1,
    data: str = "sparse",
) -> list[Path]:
    """Write the model as ``shards`` files (llama.cpp split names when more than one).

    ``data``: "sparse" (no bytes written: the file is truncated to its size), "random" (random
    bytes), or "finite" (F32 tensors all ones, F16 ones small random values: what Ollama's
    create-time validation and llama.cpp's row checks accept)."""
    spec = spec or spec_for(dims)
    kv_rows = model_metadata(spec, dims.n_vocab)
    slots = tensor_layout(dims)
    per = -(-len(slots) // shards)
    groups = [slots[i : i + per] for i in range(0, len(slots), per)]
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, group in enumerate(groups):
        rows = list(kv_rows) if i == 0 else []
        if len(groups) > 1:
            rows += [
                (KEY_SPLIT_NO, i, GGUFValueType.UINT16),
                (KEY_SPLIT_TENSORS_COUNT, len(slots), GGUFValueType.INT32),
                (KEY_SPLIT_COUNT, len(groups), GGUFValueType.UINT16),
            ]
        infos = _infos(group, types)
        header = pack_header(_kv_map(rows), infos)
        data_start = align_up(len(header), ALIGNMENT)
        last = infos[-1]
        size = data_start + last.offset + tensor_nbytes(last.ggml_type, last.shape)
        path = directory / (shard_name(name, i + 1, len(groups)) if len(groups) > 1 else f"{name}.gguf")
        with open(path, "wb") as f:
            f.write(header + bytes(data_start - len(header)))
            if data == "finite":
                _write_finite(f, infos)
            elif data == "random":
                remaining = size - data_start
                while remaining:
                    chunk = min(WRITE_CHUNK, remaining)
                    f.write(os.urandom(chunk))
                    remaining -= chunk
            f.truncate(size)
        paths.append(path)
    return paths


_NOISE: list[bytes] = []


def _write_finite(f: object, infos: list[TensorInfo]) -> None:
    import numpy as np

    if not _NOISE:
        rng = np.random.default_rng(0)
        _NOISE.append((rng.standard_normal(WRITE_CHUNK // 8) * 0.02).astype(np.float16).tobytes())
    noise = _NOISE[0]
    for info in infos:
        n = tensor_nbytes(info.ggml_type, info.shape)
        if info.ggml_type == Q.F32:
            f.write(np.ones(n // 4, dtype=np.float32).tobytes())  # type: ignore[attr-defined]
        elif info.ggml_type == Q.F16:
            left = n
            while left:
                piece = noise[: min(left, len(noise))]
                f.write(piece)  # type: ignore[attr-defined]
                left -= len(piece)
        elif info.ggml_type == Q.Q8_0:
            _write_q8_0(f, n)
        else:
            raise ValueError(f"finite data only for F32, F16 and Q8_0 tensors, not {Q(info.ggml_type).name}")
        f.write(bytes(align_up(n, ALIGNMENT) - n))  # type: ignore[attr-defined]


_Q8_NOISE: list[bytes] = []
#: Q8_0 blocks: an f16 scale, then 32 int8 values.
_Q8_BLOCK = 34


def _write_q8_0(f: object, n: int) -> None:
    """``n`` bytes of Q8_0 blocks: random int8 values at a scale that gives values of about
    +-0.06 (finite, like the F16 noise)."""
    import numpy as np

    if not _Q8_NOISE:
        rng = np.random.default_rng(1)
        blocks = (WRITE_CHUNK // _Q8_BLOCK)
        data = np.empty((blocks, _Q8_BLOCK), dtype=np.uint8)
        data[:, :2] = np.frombuffer(np.full(blocks, 0.0005, dtype=np.float16).tobytes(),
                                    dtype=np.uint8).reshape(blocks, 2)
        data[:, 2:] = rng.integers(-127, 128, size=(blocks, 32), dtype=np.int8).view(np.uint8)
        _Q8_NOISE.append(data.tobytes())
    noise = _Q8_NOISE[0]
    left = n
    while left:
        piece = noise[: min(left, len(noise))]
        f.write(piece)  # type: ignore[attr-defined]
        left -= len(piece)


def deepseek_v3_sparse(directory: Path, types: TypeChoice = unsloth_like_types, *, shards: int = 1,
                       n_layer: int | None = None) -> list[Path]:
    """The real 671B shape (61 layers, 256 experts, vocab 129280), sparse: a few MB on disk."""
    dims = DEEPSEEK_V3 if n_layer is None else replace(DEEPSEEK_V3, n_layer=n_layer)
    spec = spec_for(dims, **V3_SPEC_OVERRIDES)  # type: ignore[arg-type]
    return write_synthetic(directory, "DeepSeek-V3-shape", dims, types, spec=spec, shards=shards)


#: Small, but with experts large enough that moving one block's shows in MiB with 2 decimals;
#: K rows of 256 + 32 (whole blocks of any cache type).
SMALL_MOE_DIMS = DeepSeek2Dims(n_layer=4, n_dense_lead=1, n_embd=1024, n_ff=2048, n_head=8, q_lora_rank=256,
                               kv_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64,
                               n_expert=32, n_expert_shared=1, n_ff_exp=1024, n_vocab=4096)


def small_q8_model(directory: Path, name: str) -> Path:
    """A one-file Q8_0 model at :data:`SMALL_MOE_DIMS` (sparse: a server maps it, computes nothing)."""
    return write_synthetic(directory, name, SMALL_MOE_DIMS, uniform_types(Q.Q8_0))[0]


def tiny_repo(entry: CatalogEntry, tmp: Path) -> dict[str, bytes]:
    """The entry's files as Unsloth lays them out, holding the tiny model of its family."""
    family = entry.prompt_family.name
    if entry.quant.is_single_file:
        assert entry.quant.path
        path = write_tiny_model(tmp / entry.quant.path, family)
        return {entry.quant.path: path.read_bytes()}
    shards = write_tiny_shards(
        tmp, family, n_shards=entry.quant.shards or 3, quant=entry.quant.hub_name,
        name=entry.model.file_prefix,
    )
    folder = f"{entry.quant.folder}/" if entry.quant.folder else ""
    return {folder + p.name: p.read_bytes() for p in shards}


__all__ = [
    "SMALL_MOE_DIMS",
    "V3_SPEC_OVERRIDES",
    "deepseek_v3_sparse",
    "small_q8_model",
    "spec_for",
    "ternary_experts",
    "tiny_repo",
    "uniform_types",
    "unsloth_like_types",
    "write_synthetic",
]
