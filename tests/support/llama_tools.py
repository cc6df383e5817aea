"""Test helpers: the real llama-gguf-split binary, and small split GGUF sets written by
our own GGUFWriter (random tensors of several types, an [7, 1] tensor, every KV kind)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ollamads.gguf.format import (
    KEY_ALIGNMENT,
    KEY_ARCHITECTURE,
    KEY_CHAT_TEMPLATE,
    KEY_SPLIT_COUNT,
    KEY_SPLIT_NO,
    KEY_SPLIT_TENSORS_COUNT,
    GGUFWriter,
    tensor_nbytes,
)
from ollamads.gguf.format import (
    GGMLQuantizationType as Q,
)
from ollamads.gguf.format import (
    GGUFValueType as V,
)
from ollamads.gguf.shards import shard_name
from tests.support.toolchain import component_path, executable

LFS_POINTER = (
    b"version https://git-lfs.github.com/spec/v1\n"
    b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    b"size 123\n"
)

Tensor = tuple[str, tuple[int, ...], int, bytes]
KV = tuple[str, object, "V | None"]


def gguf_split_path() -> Path:
    """Where scripts/toolchain.sh puts llama-gguf-split, or $OLLAMADS_GGUF_SPLIT."""
    return component_path("OLLAMADS_GGUF_SPLIT")


def require_gguf_split() -> str:
    """The binary's path; a missing binary fails the test in CI and skips it elsewhere."""
    return str(executable("OLLAMADS_GGUF_SPLIT", "llama-gguf-split"))


def model_kv(alignment: int | None = None) -> list[KV]:
    kv: list[KV] = [
        (KEY_ARCHITECTURE, "deepseek2", None),
        ("general.name", "Tiny DeepSeek ｜▁ naïve ünïcode", None),
        ("deepseek2.block_count", 2, V.UINT32),
        ("deepseek2.rope.freq_base", 10000.0, None),
        ("deepseek2.expert_weights_norm", True, None),
        ("deepseek2.leading_dense_block_count", -1, V.INT64),
        ("deepseek2.small", 3, V.UINT8),
        ("deepseek2.scale", 2.5, V.FLOAT64),
        ("tokenizer.ggml.tokens", ["<｜begin▁of▁sentence｜>", "a", "ß", "", "</think>"], None),
        ("tokenizer.ggml.token_type", [3, 1, 1, 1, 4], None),
        ("tokenizer.ggml.scores", [0.0, -1.5, 2.25, 0.0, 1e-3], None),
        ("tokenizer.ggml.flags", [True, False, True], None),
        ("tokenizer.ggml.empty", [], V.UINT16),
        (KEY_CHAT_TEMPLATE, "{% for m in messages %}{{ m['content'] }}{% endfor %}", None),
    ]
    if alignment is not None:
        kv.insert(2, (KEY_ALIGNMENT, alignment, None))
    return kv


def model_tensors(seed: int = 0, big: bool = False) -> list[Tensor]:
    """Tensors of several types with sizes that are not multiples of 32 bytes."""
    rng = np.random.default_rng(seed)

    def f32(*shape: int) -> bytes:
        return rng.standard_normal(shape[::-1], dtype=np.float32).tobytes()

    def f16(*shape: int) -> bytes:
        return rng.standard_normal(shape[::-1]).astype(np.float16).tobytes()

    def raw(t: Q, *shape: int) -> bytes:
        return rng.bytes(tensor_nbytes(t, shape))

    tensors: list[Tensor] = [
        ("token_embd.weight", (64, 5), Q.F16, f16(64, 5)),
        ("output_norm.weight", (7, 1), Q.F32, f32(7, 1)),
        ("blk.0.attn_q.weight", (64, 3), Q.Q8_0, raw(Q.Q8_0, 64, 3)),
        ("blk.0.attn_norm.weight", (7,), Q.F32, f32(7)),
        ("blk.0.ffn_up.weight", (32, 2, 3), Q.BF16, raw(Q.BF16, 32, 2, 3)),
        ("blk.1.ffn_down.weight", (256, 2), Q.Q4_K, raw(Q.Q4_K, 256, 2)),
        ("blk.1.attn_norm.weight", (5, 1, 1), Q.F32, f32(5, 1, 1)),
        ("blk.1.ffn_gate.weight", (32, 3), Q.Q4_0, raw(Q.Q4_0, 32, 3)),
    ]
    if big:  # about 3 MB, so --split-max-size 1M makes several shards
        tensors += [(f"blk.2.big{i}.weight", (1024, 300), Q.F16, f16(1024, 300)) for i in range(5)]
    return tensors


def _add_kv(w: GGUFWriter, items: Iterable[KV]) -> None:
    for key, value, vtype in items:
        w.add(key, value, vtype)


def write_model(
    path: Path, kv: Sequence[KV] | None = None, tensors: Sequence[Tensor] | None = None
) -> Path:
    w = GGUFWriter()
    _add_kv(w, model_kv() if kv is None else kv)
    for t in model_tensors() if tensors is None else tensors:
        w.add_tensor(*t)
    w.write(path)
    return path


def write_split_set(
    directory: Path,
    prefix: str,
    groups: Sequence[Sequence[Tensor]],
    kv: Sequence[KV] | None = None,
    *,
    split_keys_at: int | None = None,
    overrides: dict[int, dict[str, object]] | None = None,
) -> list[Path]:
    """Write ``groups`` as shards ``prefix-0000i-of-0000N.gguf``; shard 1 gets all KVs.

    ``split_keys_at`` puts shard 1's split.* keys at that KV position (None: after all KVs,
    like llama-gguf-split); ``overrides[i]`` replaces split.* values (None drops the key)
    in shard i (0-based), to build broken sets.
    """
    kv = model_kv() if kv is None else list(kv)
    n, total = len(groups), sum(len(g) for g in groups)
    paths = []
    for i, group in enumerate(groups):
        split: dict[str, object] = {
            KEY_SPLIT_NO: i,
            KEY_SPLIT_COUNT: n,
            KEY_SPLIT_TENSORS_COUNT: total,
        }
        split.update((overrides or {}).get(i, {}))
        split_items = [(k, v, None) for k, v in split.items() if v is not None]
        items = list(kv) if i == 0 else []
        at = len(items) if split_keys_at is None or i else split_keys_at
        items[at:at] = split_items
        w = GGUFWriter()
        _add_kv(w, items)
        for t in group:
            w.add_tensor(*t)
        path = directory / shard_name(prefix, i + 1, n)
        w.write(path)
        paths.append(path)
    return paths


def split_evenly(tensors: Sequence[Tensor], n: int) -> list[list[Tensor]]:
    size = -(-len(tensors) // n)
    return [list(tensors[i : i + size]) for i in range(0, len(tensors), size)]
