"""A built-in tiny DeepSeek-V3-architecture model: backs ``ollamads demo`` and the tests.

It is the real thing in miniature: llama.cpp arch ``deepseek2`` with MLA attention (split
``attn_k_b``/``attn_v_b``), a leading dense block, routed experts with sigmoid gating and
groups, a shared expert, YaRN RoPE, DeepSeek's byte-level BPE tokenizer setup with every
special token, and the family's real Jinja chat template. The weights are random, so it
writes gibberish, but loading, splitting, merging, templating and generation all run for
real. :func:`write_scripted_model` writes the same architecture with weights that make greedy
decoding emit a chosen reply (a tool call, reasoning then an answer), for tests of what servers
and clients do with what a model writes. Deterministic (same arguments, same bytes) and
standard library only.
"""

from __future__ import annotations

import functools
import math
import random
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ollamads._resources import templates_dir
from ollamads.catalog.entries import UD_PREFIX, normalize_quant
from ollamads.catalog.families import BOS, EOS, PAD
from ollamads.catalog.families import FAMILIES as PROMPT_FAMILIES
from ollamads.gguf.deepseek2 import ARCH, OUTPUT, TOKEN_EMBD, DeepSeek2Dims, tensor_layout
from ollamads.gguf.format import (
    KEY_SPLIT_COUNT,
    KEY_SPLIT_NO,
    KEY_SPLIT_TENSORS_COUNT,
    GGMLQuantizationType,
    GGUFValueType,
    GGUFWriter,
)
from ollamads.gguf.shards import shard_name as split_name
from ollamads.tiny_script import plan_script
from ollamads.tiny_tokenizer import byte_tokens, merges

FAMILIES = tuple(PROMPT_FAMILIES)

#: Unsloth's upload names, which the shard files are named after.
DEFAULT_NAMES = {"v3.1": "DeepSeek-V3.1", "r1": "DeepSeek-R1", "v3": "DeepSeek-V3-0324"}


# llama_ftype / gguf-py LlamaFileType values for the weight types offered here.
_FILE_TYPES = {GGMLQuantizationType.Q8_0: 7, GGMLQuantizationType.F16: 1}
_LLAMA_EXPERT_GATING_FUNC_SIGMOID = 2
_QUANTIZATION_VERSION = 2  # GGML_QNT_VERSION

# gguf-py TokenType
_TOKEN_NORMAL = 1
_TOKEN_CONTROL = 3
_TOKEN_USER_DEFINED = 4

#: DeepSeek's added tokens after the three at ids 0-2, in their order in V3.1's tokenizer.json
#: (ids 128796..128814 there). The vocabulary here is tiny, so they get the ids after the BPE
#: tokens instead; only BOS 0, EOS 1 and pad 2 keep their real ids.
ADDED_TOKENS = (
    "<｜search▁begin｜>",
    "<｜search▁end｜>",
    "<think>",
    "</think>",
    "<｜fim▁hole｜>",
    "<｜fim▁begin｜>",
    "<｜fim▁end｜>",
    "<｜User｜>",
    "<｜Assistant｜>",
    "<|EOT|>",
    "<｜tool▁calls▁begin｜>",
    "<｜tool▁calls▁end｜>",
    "<｜tool▁call▁begin｜>",
    "<｜tool▁call▁end｜>",
    "<｜tool▁outputs▁begin｜>",
    "<｜tool▁outputs▁end｜>",
    "<｜tool▁output▁begin｜>",
    "<｜tool▁output▁end｜>",
    "<｜tool▁sep｜>",
)
#: convert_hf_to_gguf marks added tokens that look special (``<｜...｜>``, ``<|...|>``) as
#: CONTROL and the others as USER_DEFINED, so real DeepSeek GGUFs have <think>/</think> as
#: user-defined tokens: they stay visible in detokenized output, where reasoning parsers look.
_USER_DEFINED_TOKENS = frozenset({"<think>", "</think>"})

@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the tiny model. Dimensions along a Q8_0 row must be multiples of 32, and so must
    the attention head sizes: ``ollamads serve`` quantises the KV cache to q8_0 (blocks of 32),
    and MLA's K head is kv_lora_rank + qk_rope_head_dim (real DeepSeek: 512 + 64 = 576)."""

    family: str
    seed: int = 0
    name: str | None = None
    n_layer: int = 3
    n_dense_lead: int = 1
    n_embd: int = 64
    n_ff: int = 128
    n_head: int = 4
    q_lora_rank: int = 32
    kv_lora_rank: int = 64
    qk_nope_head_dim: int = 32
    qk_rope_head_dim: int = 32
    v_head_dim: int = 32
    n_expert: int = 4
    n_expert_used: int = 2
    n_expert_shared: int = 1
    n_expert_groups: int = 2
    n_expert_groups_used: int = 1
    n_ff_exp: int = 32
    expert_weights_scale: float = 2.5
    context_length: int = 16384
    rope_freq_base: float = 10000.0
    yarn_factor: float = 4.0
    yarn_original_context: int = 4096
    yarn_log_multiplier: float = 0.1  # what convert_hf_to_gguf writes: 0.1 * mscale_all_dim
    rms_eps: float = 1e-6
    weight_type: GGMLQuantizationType = GGMLQuantizationType.Q8_0
    #: The output head is the embedding matrix (the scripted model needs a head of its own).
    tied_output: bool = True

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; expected one of {FAMILIES}")
        if self.weight_type not in _FILE_TYPES:
            raise ValueError(f"weight type {self.weight_type!r}: only Q8_0 and F16 are offered")

    @property
    def model_name(self) -> str:
        return self.name or DEFAULT_NAMES[self.family]

    def dims(self, n_vocab: int) -> DeepSeek2Dims:
        """The tensor shapes; the tiny model's output head is tied to the embeddings."""
        return DeepSeek2Dims(
            n_layer=self.n_layer, n_dense_lead=self.n_dense_lead, n_embd=self.n_embd,
            n_ff=self.n_ff, n_head=self.n_head, q_lora_rank=self.q_lora_rank,
            kv_lora_rank=self.kv_lora_rank, qk_nope_head_dim=self.qk_nope_head_dim,
            qk_rope_head_dim=self.qk_rope_head_dim, v_head_dim=self.v_head_dim,
            n_expert=self.n_expert, n_expert_shared=self.n_expert_shared,
            n_ff_exp=self.n_ff_exp, n_vocab=n_vocab, tied_output=self.tied_output,
        )


# --- tokenizer -----------------------------------------------------------------------------


def tokenizer_vocab() -> tuple[list[str], list[int]]:
    """Tokens and token types: BOS/EOS/pad at their real ids 0-2, bytes, merges, specials."""
    tokens = [BOS, EOS, PAD, *byte_tokens(), *(m.replace(" ", "") for m in merges())]
    types = [_TOKEN_CONTROL] * 3 + [_TOKEN_NORMAL] * (len(tokens) - 3)
    for tok in ADDED_TOKENS:
        tokens.append(tok)
        types.append(_TOKEN_USER_DEFINED if tok in _USER_DEFINED_TOKENS else _TOKEN_CONTROL)
    if len(set(tokens)) != len(tokens):
        raise AssertionError("tiny vocabulary has duplicate tokens")
    return tokens, types


def chat_template(family: str) -> str:
    return (templates_dir() / "chat" / PROMPT_FAMILIES[family].chat_template).read_text(encoding="utf-8")


# --- weights -------------------------------------------------------------------------------


def _q8_0(values: list[float]) -> bytes:
    """ggml's quantize_row_q8_0_ref: per 32 values an f16 scale and 32 int8s."""
    out = bytearray()
    for i in range(0, len(values), 32):
        block = values[i : i + 32]
        amax = max(abs(v) for v in block)
        d = amax / 127.0
        inv = 1.0 / d if d else 0.0
        out += struct.pack("<e", d)
        out += struct.pack("<32b", *(round(v * inv) for v in block))
    return bytes(out)


def _encode(values: list[float], ggml_type: GGMLQuantizationType) -> bytes:
    if ggml_type == GGMLQuantizationType.Q8_0:
        return _q8_0(values)
    if ggml_type == GGMLQuantizationType.F16:
        return struct.pack(f"<{len(values)}e", *values)
    return struct.pack(f"<{len(values)}f", *values)


@dataclass(frozen=True)
class _Tensor:
    name: str
    shape: tuple[int, ...]  # ggml ne order
    ggml_type: GGMLQuantizationType
    data: bytes


def _tensors(spec: TinyModelSpec, n_vocab: int, special_ids: set[int]) -> Iterator[_Tensor]:
    """Every tensor of :func:`~ollamads.gguf.deepseek2.tensor_layout`, with random data."""
    rng = random.Random(spec.seed)
    wt = spec.weight_type
    f32 = GGMLQuantizationType.F32

    def uniform(n: int, scale: float = 1.0) -> list[float]:
        return [(rng.random() * 2.0 - 1.0) * scale for _ in range(n)]

    for slot in tensor_layout(spec.dims(n_vocab)):
        name, shape = slot.name, slot.shape
        n = math.prod(shape)
        if name == TOKEN_EMBD:
            # Zero embedding rows for the special tokens: with tied output weights their
            # logits stay 0, so greedy decoding of random weights prints text instead of
            # stopping at once.
            e = shape[0]
            embd = [
                0.0 if row in special_ids else (rng.random() * 2.0 - 1.0)
                for row in range(n_vocab)
                for _ in range(e)
            ]
            yield _Tensor(name, shape, wt, _encode(embd, wt))
        elif len(shape) == 1 and name.endswith("norm.weight"):
            yield _Tensor(name, shape, f32, _encode([1.0] * n, f32))
        elif name.endswith("ffn_gate_inp.weight"):
            yield _Tensor(name, shape, f32, _encode(uniform(n), f32))
        elif name.endswith("exp_probs_b.bias"):
            bias = [(rng.random() - 0.5) * 0.1 for _ in range(n)]
            yield _Tensor(name, shape, f32, _encode(bias, f32))
        else:
            yield _Tensor(name, shape, wt, _encode(uniform(n, 0.5), wt))


# --- metadata ------------------------------------------------------------------------------


def _metadata(spec: TinyModelSpec, tokens: list[str], types: list[int]) -> list[tuple]:
    """(key, value, type) in the order convert_hf_to_gguf writes a DeepSeek V3 model."""
    u32, f32, b, s = (
        GGUFValueType.UINT32,
        GGUFValueType.FLOAT32,
        GGUFValueType.BOOL,
        GGUFValueType.STRING,
    )
    a = ARCH
    k_mla = spec.qk_nope_head_dim + spec.qk_rope_head_dim
    return [
        ("general.architecture", a, s),
        ("general.type", "model", s),
        ("general.name", f"{spec.model_name} (ollamads tiny test model)", s),
        ("general.file_type", _FILE_TYPES[spec.weight_type], u32),
        ("general.quantization_version", _QUANTIZATION_VERSION, u32),
        (f"{a}.block_count", spec.n_layer, u32),
        (f"{a}.context_length", spec.context_length, u32),
        (f"{a}.embedding_length", spec.n_embd, u32),
        (f"{a}.feed_forward_length", spec.n_ff, u32),
        (f"{a}.attention.head_count", spec.n_head, u32),
        # MLA runs as MQA over the compressed KV: one KV head of kv_lora + rope dims.
        (f"{a}.attention.head_count_kv", 1, u32),
        (f"{a}.rope.freq_base", spec.rope_freq_base, f32),
        (f"{a}.attention.layer_norm_rms_epsilon", spec.rms_eps, f32),
        (f"{a}.expert_used_count", spec.n_expert_used, u32),
        (f"{a}.expert_group_count", spec.n_expert_groups, u32),
        (f"{a}.expert_group_used_count", spec.n_expert_groups_used, u32),
        # Without it llama.cpp silently falls back to softmax gating (V2 behaviour).
        (f"{a}.expert_gating_func", _LLAMA_EXPERT_GATING_FUNC_SIGMOID, u32),
        (f"{a}.leading_dense_block_count", spec.n_dense_lead, u32),
        (f"{a}.vocab_size", len(tokens), u32),
        (f"{a}.attention.q_lora_rank", spec.q_lora_rank, u32),
        (f"{a}.attention.kv_lora_rank", spec.kv_lora_rank, u32),
        (f"{a}.attention.key_length", spec.kv_lora_rank + spec.qk_rope_head_dim, u32),
        (f"{a}.attention.value_length", spec.kv_lora_rank, u32),
        # With these two llama.cpp expects the split attn_k_b/attn_v_b, not legacy attn_kv_b.
        (f"{a}.attention.key_length_mla", k_mla, u32),
        (f"{a}.attention.value_length_mla", spec.v_head_dim, u32),
        (f"{a}.expert_feed_forward_length", spec.n_ff_exp, u32),
        (f"{a}.expert_count", spec.n_expert, u32),
        (f"{a}.expert_shared_count", spec.n_expert_shared, u32),
        (f"{a}.expert_weights_scale", spec.expert_weights_scale, f32),
        (f"{a}.expert_weights_norm", True, b),
        (f"{a}.rope.dimension_count", spec.qk_rope_head_dim, u32),
        (f"{a}.rope.scaling.type", "yarn", s),
        (f"{a}.rope.scaling.factor", spec.yarn_factor, f32),
        (f"{a}.rope.scaling.original_context_length", spec.yarn_original_context, u32),
        (f"{a}.rope.scaling.yarn_log_multiplier", spec.yarn_log_multiplier, f32),
        ("tokenizer.ggml.model", "gpt2", s),
        ("tokenizer.ggml.pre", "deepseek-v3", s),
        ("tokenizer.ggml.tokens", tokens, s),
        ("tokenizer.ggml.token_type", types, GGUFValueType.INT32),
        ("tokenizer.ggml.merges", list(merges()), s),
        ("tokenizer.ggml.bos_token_id", 0, u32),
        ("tokenizer.ggml.eos_token_id", 1, u32),
        # DeepSeek's tokenizer_config.json sets pad_token to EOS; Unsloth's GGUFs carry 1 here.
        ("tokenizer.ggml.padding_token_id", 1, u32),
        ("tokenizer.ggml.add_bos_token", True, b),
        ("tokenizer.ggml.add_eos_token", False, b),
        ("tokenizer.chat_template", chat_template(spec.family), s),
    ]


def model_metadata(spec: TinyModelSpec, n_vocab: int | None = None) -> list[tuple]:
    """The key/values of the model as ``(key, value, type)``; with ``n_vocab`` the vocabulary is
    padded with unused tokens to that size, for full-size shapes (DeepSeek's 129280)."""
    tokens, types = tokenizer_vocab()
    if n_vocab is not None:
        if n_vocab < len(tokens):
            raise ValueError(f"n_vocab must be at least {len(tokens)}, got {n_vocab}")
        filler = n_vocab - len(tokens)
        tokens = tokens + [f"<unused_{i}>" for i in range(filler)]
        types = types + [_TOKEN_USER_DEFINED] * filler
    return _metadata(spec, tokens, types)


@functools.cache
def _build(spec: TinyModelSpec) -> tuple[tuple[tuple, ...], tuple[_Tensor, ...]]:
    """Built once per spec and process: the tests write the same few models many times."""
    tokens, types = tokenizer_vocab()
    special_ids = {i for i, t in enumerate(types) if t != _TOKEN_NORMAL}
    return tuple(_metadata(spec, tokens, types)), tuple(_tensors(spec, len(tokens), special_ids))


def _writer(kvs: Sequence[tuple], tensors: Sequence[_Tensor]) -> GGUFWriter:
    w = GGUFWriter()
    for key, value, vtype in kvs:
        w.add(key, value, vtype)
    for t in tensors:
        w.add_tensor(t.name, t.shape, t.ggml_type, t.data)
    return w


# --- public API ----------------------------------------------------------------------------


def write_tiny_model(
    path: str | Path,
    family: str = "v3.1",
    *,
    seed: int = 0,
    weight_type: GGMLQuantizationType = GGMLQuantizationType.Q8_0,
    spec: TinyModelSpec | None = None,
) -> Path:
    """Write the tiny model of ``family`` as one GGUF file at ``path`` (Q8_0 or F16 matrices).

    ``spec`` writes other dimensions instead (its own family, seed and weight type apply)."""
    path = Path(path)
    kvs, tensors = _build(spec or TinyModelSpec(family, seed, weight_type=weight_type))
    path.parent.mkdir(parents=True, exist_ok=True)
    _writer(kvs, tensors).write(path)
    return path


# --- the scripted model ----------------------------------------------------------------------

#: Matrices whose products are added to the residual stream: zero, so that the stream carries
#: only the embedding of the token just read (attention, dense FFN, routed and shared experts).
_RESIDUAL_WRITERS = (
    "attn_output.weight", "ffn_down.weight", "ffn_down_exps.weight", "ffn_down_shexp.weight",
)
#: The last token of a prompt that hands tool results back (V3.1 ends on the last output, R1
#: and V3 close the outputs block): where the scripted model starts its ``after_tool`` reply.
TOOL_RESULT_ENDS = ("<｜tool▁output▁end｜>", "<｜tool▁outputs▁end｜>")
_START, _AFTER_TOOL = 0, 1  # embedding dimensions of the two starting states


def _rows(dims: Sequence[Sequence[int]], width: int) -> list[float]:
    """One row of ``width`` per token, 1.0 in each of its dimensions."""
    values = [0.0] * (len(dims) * width)
    for i, row in enumerate(dims):
        for d in row:
            values[i * width + d] = 1.0
    return values


@functools.cache
def _build_scripted(
    spec: TinyModelSpec, reply: str, after_tool: str | None
) -> tuple[tuple[tuple, ...], tuple[_Tensor, ...]]:
    tokens, types = tokenizer_vocab()
    specials = {t: i for i, t in enumerate(tokens) if types[i] != _TOKEN_NORMAL and i > 2}
    replies = [reply] + ([after_tool] if after_tool is not None else [])
    plan = plan_script(tokens, specials, replies)
    tokens = tokens + list(plan.added)
    types = types + [_TOKEN_USER_DEFINED] * len(plan.added)
    n_vocab, width = len(tokens), spec.n_embd

    # Token -> embedding dimension: every token starts the reply, except the ends of tool
    # results (they start the after-tool reply) and the reply's own tokens (one dimension each).
    dim = [_START] * n_vocab
    if after_tool is not None:
        for end in TOOL_RESULT_ENDS:
            dim[tokens.index(end)] = _AFTER_TOOL
    nxt: dict[int, int] = {}  # dimension -> the token it makes next
    free = 2
    for start, chain in zip((_START, _AFTER_TOOL), plan.chains, strict=False):
        nxt[start] = chain[0]
        for tok, following in zip(chain, (*chain[1:], 1), strict=True):  # EOS (id 1) ends it
            if free >= width:
                raise ValueError(
                    f"the scripted replies need more than {width - 2} tokens; shorten them"
                )
            dim[tok], nxt[free] = free, following
            free += 1
    # The head's row of a token has a 1 in each dimension that makes it next: one, except EOS.
    head: list[list[int]] = [[] for _ in range(n_vocab)]
    for d, tok in nxt.items():
        head[tok].append(d)

    kvs = _metadata(spec, tokens, types)
    out: list[_Tensor] = []
    for t in _tensors(spec, n_vocab, set()):
        if t.name == TOKEN_EMBD:
            t = _Tensor(t.name, t.shape, t.ggml_type, _encode(_rows([[d] for d in dim], width), t.ggml_type))
        elif t.name == OUTPUT:
            t = _Tensor(t.name, t.shape, t.ggml_type, _encode(_rows(head, width), t.ggml_type))
        elif t.name.endswith(_RESIDUAL_WRITERS):
            t = _Tensor(t.name, t.shape, t.ggml_type, _encode([0.0] * math.prod(t.shape), t.ggml_type))
        out.append(t)
    return tuple(kvs), tuple(out)


def write_scripted_model(
    path: str | Path, family: str, reply: str, *, after_tool: str | None = None
) -> Path:
    """Write a tiny model of ``family`` that answers ``reply`` to any prompt of its family, under
    greedy decoding (``temperature`` 0 or ``top_k`` 1), then stops (EOS).

    ``reply`` is what the model writes after the prompt's last token: for V3.1 without thinking
    that is after ``</think>``, for R1 after ``<think>\n`` (so a reasoning reply is
    ``"...</think>\n\nanswer"``). With ``after_tool`` it writes that instead when the prompt
    ends with tool results. The model is deepseek2 throughout (MLA, routed experts with sigmoid
    gating, norms): attention and FFN outputs are zero, each reply token has a one-hot
    embedding, and the output head maps each to the token after it.
    """
    path = Path(path)
    spec = TinyModelSpec(family, name=f"{DEFAULT_NAMES[family]} scripted", tied_output=False)
    kvs, tensors = _build_scripted(spec, reply, after_tool)
    path.parent.mkdir(parents=True, exist_ok=True)
    _writer(kvs, tensors).write(path)
    return path


def shard_name(name: str, quant: str, no: int, count: int) -> str:
    """``DeepSeek-V3.1-UD-TQ1_0-00001-of-00003.gguf``: llama.cpp's split naming with
    Unsloth's ``-UD-<QUANT>``, for shard ``no`` (1-based)."""
    return split_name(f"{name}-{UD_PREFIX}{normalize_quant(quant)}", no, count)


def _split_sizes(n_items: int, n_parts: int) -> list[int]:
    q, r = divmod(n_items, n_parts)
    return [q + 1] * r + [q] * (n_parts - r)


def write_tiny_shards(
    directory: str | Path,
    family: str = "v3.1",
    *,
    n_shards: int = 3,
    quant: str = "TQ1_0",
    name: str | None = None,
    seed: int = 0,
) -> list[Path]:
    """Write the tiny model as Unsloth-style split shards, the way ``llama-gguf-split --split``
    lays them out: every key/value in shard 1, only the split keys in the others, tensors in
    order, spread as evenly as possible. ``quant`` only names the files (weights are Q8_0)."""
    spec = TinyModelSpec(family, seed, name=name)
    kvs, tensors = _build(spec)
    if not 1 <= n_shards <= len(tensors):
        raise ValueError(f"n_shards must be between 1 and {len(tensors)}, got {n_shards}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths, start = [], 0
    for i, size in enumerate(_split_sizes(len(tensors), n_shards)):
        # gguf-split sets split.count last (a placeholder first, then the real value), and
        # setting an existing key moves it to the end: no, tensors.count, count.
        split_kvs = [
            (KEY_SPLIT_NO, i, GGUFValueType.UINT16),
            (KEY_SPLIT_TENSORS_COUNT, len(tensors), GGUFValueType.INT32),
            (KEY_SPLIT_COUNT, n_shards, GGUFValueType.UINT16),
        ]
        shard_kvs = (list(kvs) if i == 0 else []) + split_kvs
        path = directory / shard_name(spec.model_name, quant, i + 1, n_shards)
        _writer(shard_kvs, tensors[start : start + size]).write(path)
        paths.append(path)
        start += size
    return paths


__all__ = [
    "DEFAULT_NAMES",
    "FAMILIES",
    "TOOL_RESULT_ENDS",
    "TinyModelSpec",
    "model_metadata",
    "shard_name",
    "tokenizer_vocab",
    "write_scripted_model",
    "write_tiny_model",
    "write_tiny_shards",
]
