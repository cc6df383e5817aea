"""How many bytes a deepseek2 model needs, from its own GGUF tensor table.

The model's weights are counted per tensor from the real types and shapes (the same
``ggml_nbytes`` llama.cpp allocates), grouped the way llama.cpp places them:

* ``input``  ``token_embd``: llama.cpp keeps it on the CPU of the machine that runs llama-server
  (the head node), whatever is offloaded;
* ``output`` ``output`` + ``output_norm``: the output head, which ``-ngl`` counts as one more layer;
* one :class:`LayerBytes` per block: attention (with the block's norms and router), dense FFN,
  shared expert, and routed experts (what ``--cpu-moe`` / ``--n-cpu-moe`` / ``-ot exps=CPU``
  move).

The KV cache follows llama.cpp's MLA cache (K rows only, ``kv_lora_rank + rope`` wide, the
context padded to 256 cells) and, for the <= v0.24 line, Ollama's own engine (K and V rows).
Compute buffers are an estimate fitted to llama.cpp's reservations (see :func:`compute_bytes`).
Everything here is arithmetic on headers: a split across several devices (GPUs, RPC workers)
sums :meth:`LayerBytes.on_device` per layer plus :func:`kv_layer_bytes` per layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ollamads.errors import OllamadsError
from ollamads.gguf.deepseek2 import ARCH, Role, tensor_role
from ollamads.gguf.format import GGMLQuantizationType, GGUFFile, align_up, tensor_nbytes

#: llama.cpp pads the context to this many cells (llama-context.cpp, GGML_PAD(n_ctx, 256));
#: Ollama's own engine pads its cache the same (CachePadding 256).
KV_CELL_PADDING = 256
#: llama-server's and Ollama's micro-batch (-ub) unless changed.
DEFAULT_UBATCH = 512
# Compute-buffer constants, fitted to llama.cpp's reservations on the CPU backend (flash
# attention on, one sequence) for DeepSeek shapes with 16 to 128 heads and n_embd 2048 / 7168:
#: MLA attention, per head and token, per element of its K, V and MLA head widths (V3: 6240 B).
ATTENTION_BYTES_PER_HEAD_ELEMENT = 4.43
#: ... plus this much per embedding dimension (V3: 36.8 KB per token).
ATTENTION_BYTES_PER_EMBD = 5.14
#: The FFN / MoE phase, per embedding dimension and token (V3 with few heads: 315 KB).
FFN_BYTES_PER_EMBD = 44
_F16 = 2
_F32 = 4

KV_CACHE_TYPES: dict[str, GGMLQuantizationType] = {
    "f32": GGMLQuantizationType.F32,
    "f16": GGMLQuantizationType.F16,
    "bf16": GGMLQuantizationType.BF16,
    "q8_0": GGMLQuantizationType.Q8_0,
    "q4_0": GGMLQuantizationType.Q4_0,
    "q4_1": GGMLQuantizationType.Q4_1,
    "iq4_nl": GGMLQuantizationType.IQ4_NL,
    "q5_0": GGMLQuantizationType.Q5_0,
    "q5_1": GGMLQuantizationType.Q5_1,
}


# --- the model's shape ---------------------------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    """The hyper-parameters that size the KV cache and the compute buffers."""

    n_layer: int
    n_ctx_train: int
    n_embd: int
    n_head: int
    n_head_kv: int
    #: K and V widths per KV head (MLA: kv_lora_rank + rope, and kv_lora_rank).
    key_length: int
    value_length: int
    #: MLA (``key_length_mla`` / ``value_length_mla`` present): the cache stores K only.
    is_mla: bool
    n_vocab: int
    #: The per-head Q/K and V widths of MLA attention (0 when not MLA).
    key_length_mla: int = 0
    value_length_mla: int = 0
    n_expert: int = 0
    n_expert_used: int = 0
    n_dense_lead: int = 0

    @classmethod
    def from_header(cls, header: GGUFFile) -> ModelShape:
        arch = header.value("general.architecture")
        if arch != ARCH:
            raise OllamadsError(
                f"{header.path} is a {arch!r} model, not DeepSeek ({ARCH})",
                "plan works out the memory of DeepSeek V3 / V3.1 / R1 GGUFs",
            )

        def get(key: str, default: int | None = None) -> int:
            value = header.value(f"{ARCH}.{key}", default)
            if value is None:
                raise OllamadsError(f"{header.path} lacks {ARCH}.{key}", "the GGUF is incomplete or corrupt")
            if not isinstance(value, (int, float)):
                raise OllamadsError(f"{header.path}: {ARCH}.{key} is {value!r}, not a number", "the GGUF is corrupt")
            return int(value)

        n_head = get("attention.head_count")
        n_head_kv = get("attention.head_count_kv", n_head)
        n_embd = get("embedding_length")
        tokens = header.value("tokenizer.ggml.tokens")
        n_vocab = len(tokens) if isinstance(tokens, list) else get("vocab_size")
        k_mla, v_mla = get("attention.key_length_mla", 0), get("attention.value_length_mla", 0)
        is_mla = bool(k_mla and v_mla)
        return cls(
            n_layer=get("block_count") - get("nextn_predict_layers", 0),
            n_ctx_train=get("context_length"),
            n_embd=n_embd,
            n_head=n_head,
            n_head_kv=n_head_kv,
            key_length=get("attention.key_length", n_embd // n_head),
            value_length=get("attention.value_length", n_embd // n_head),
            is_mla=is_mla,
            n_vocab=n_vocab,
            key_length_mla=k_mla,
            value_length_mla=v_mla,
            n_expert=get("expert_count", 0),
            n_expert_used=get("expert_used_count", 0),
            n_dense_lead=get("leading_dense_block_count", 0),
        )


# --- weights -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerBytes:
    """Bytes of one block's weights, by what they are for."""

    index: int
    attention: int = 0
    dense_ffn: int = 0
    shared_expert: int = 0
    routed_experts: int = 0
    other: int = 0

    @property
    def non_expert(self) -> int:
        """What stays with the layer's device when its experts are kept on the CPU."""
        return self.attention + self.dense_ffn + self.shared_expert + self.other

    @property
    def total(self) -> int:
        return self.non_expert + self.routed_experts

    @classmethod
    def from_roles(cls, index: int, roles: Mapping[Role, int]) -> LayerBytes:
        """Block ``index`` from its bytes per :class:`Role`."""
        return cls(
            index=index,
            attention=roles.get(Role.ATTENTION, 0),
            dense_ffn=roles.get(Role.DENSE_FFN, 0),
            shared_expert=roles.get(Role.SHARED_EXPERT, 0),
            routed_experts=roles.get(Role.ROUTED_EXPERTS, 0),
            other=roles.get(Role.OTHER, 0),
        )

    def on_device(self, experts_on_cpu: bool) -> int:
        """Bytes on the layer's device: all of it, or all but the routed experts."""
        return self.non_expert if experts_on_cpu else self.total


@dataclass(frozen=True)
class FileBytes:
    """One GGUF file: its name, size, and the byte span of its tensor data."""

    name: str
    size: int
    #: From the first tensor's start to the last one's end: what llama.cpp maps from this file
    #: (its ``CPU_Mapped model buffer``) when every tensor is on the CPU.
    data_span: int


@dataclass(frozen=True)
class ModelMemory:
    name: str
    shape: ModelShape
    layers: tuple[LayerBytes, ...]
    #: token_embd: always on the CPU of the head node.
    input: int
    #: output + output_norm (plus a second copy of token_embd when the output is tied to it,
    #: which llama.cpp loads onto the output's device when that is not the CPU).
    output: int
    output_tied: bool
    files: tuple[FileBytes, ...] = ()
    #: "local files", "Hub headers" or "published size" (an estimate, see plan.reference)
    source: str = "local files"
    #: Tensor types seen, with their bytes (for the report).
    types: tuple[tuple[str, int], ...] = field(default=(), compare=False)

    @property
    def exact(self) -> bool:
        return self.source != "published size"

    @property
    def layer_bytes(self) -> int:
        return sum(layer.total for layer in self.layers)

    @property
    def routed_expert_bytes(self) -> int:
        return sum(layer.routed_experts for layer in self.layers)

    @property
    def output_weights(self) -> int:
        """The output head's own tensors (without a tied copy of the embeddings)."""
        return self.output - (self.input if self.output_tied else 0)

    @property
    def weights(self) -> int:
        """Bytes of every tensor, each counted once (what the files hold)."""
        return self.input + self.output_weights + self.layer_bytes

    @property
    def file_size(self) -> int:
        return sum(f.size for f in self.files) if self.files else self.weights

    @property
    def mapped_bytes(self) -> int:
        """llama.cpp's CPU_Mapped model buffers, summed, when everything stays on the CPU."""
        return sum(f.data_span for f in self.files) if self.files else self.weights


def _file_bytes(header: GGUFFile) -> FileBytes:
    if not header.tensors:
        return FileBytes(header.path.name, header.file_size, 0)
    start = min(t.offset for t in header.tensors)
    return FileBytes(header.path.name, header.file_size, header.data_size - start)


def model_memory(headers: Sequence[GGUFFile], *, name: str, source: str) -> ModelMemory:
    """Count the tensors of every file of a model (all shards, shard 1 first)."""
    if not headers:
        raise OllamadsError(f"no GGUF files for {name}", "pass the model's files")
    shape = ModelShape.from_header(headers[0])
    per_layer: dict[int, dict[Role, int]] = {i: {} for i in range(shape.n_layer)}
    input_bytes = output_bytes = 0
    has_output = False
    types: dict[str, int] = {}
    for header in headers:
        for tensor in header.tensors:
            nbytes = tensor.nbytes
            type_name = GGMLQuantizationType(tensor.ggml_type).name
            types[type_name] = types.get(type_name, 0) + nbytes
            layer, role = tensor_role(tensor.name)
            if role == Role.INPUT:
                input_bytes += nbytes
            elif role == Role.OUTPUT:
                output_bytes += nbytes
                has_output = has_output or tensor.name == "output.weight"
            elif layer is not None and layer < shape.n_layer:
                roles = per_layer[layer]
                roles[role] = roles.get(role, 0) + nbytes
            else:
                # An MTP block past n_layer, or an unknown tensor: llama.cpp loads it with the
                # output device's layers; count it there so no byte is lost.
                output_bytes += nbytes
    layers = tuple(LayerBytes.from_roles(i, roles) for i, roles in sorted(per_layer.items()))
    tied = not has_output
    if tied:
        output_bytes += input_bytes
    return ModelMemory(
        name=name, shape=shape, layers=layers, input=input_bytes, output=output_bytes,
        output_tied=tied, files=tuple(_file_bytes(h) for h in headers), source=source,
        types=tuple(sorted(types.items(), key=lambda kv: -kv[1])),
    )


# --- KV cache ------------------------------------------------------------------------------


def kv_cells(n_ctx: int, n_seq: int = 1) -> int:
    """Cells llama.cpp (and Ollama's engine) allocate for ``n_ctx`` tokens per sequence."""
    return align_up(n_ctx * n_seq, KV_CELL_PADDING)


def kv_row_bytes(cache_type: str, n: int) -> int:
    try:
        ggml_type = KV_CACHE_TYPES[cache_type]
    except KeyError:
        raise OllamadsError(
            f"unknown KV cache type {cache_type!r}", f"use one of {', '.join(KV_CACHE_TYPES)}"
        ) from None
    return tensor_nbytes(ggml_type, (n,))


def kv_layer_bytes(
    shape: ModelShape, n_ctx: int, cache_type: str, *, engine: str = "llama.cpp", n_seq: int = 1
) -> int:
    """KV cache bytes of one layer. ``engine`` is ``llama.cpp`` (llama-server: MLA caches K
    only) or ``ollama`` (Ollama <= 0.24's own engine: K and V rows even for MLA)."""
    cells = kv_cells(n_ctx, n_seq)
    k = shape.key_length * shape.n_head_kv
    v = shape.value_length * shape.n_head_kv
    if engine == "llama.cpp":
        row = kv_row_bytes(cache_type, k) + (0 if shape.is_mla else kv_row_bytes(cache_type, v))
    elif engine == "ollama":
        row = kv_row_bytes(cache_type, k) + kv_row_bytes(cache_type, v)
    else:
        raise ValueError(f"unknown engine {engine!r}")
    return row * cells


def kv_bytes(
    shape: ModelShape, n_ctx: int, cache_type: str, *, engine: str = "llama.cpp", n_seq: int = 1
) -> int:
    """The whole KV cache: every layer has one."""
    return shape.n_layer * kv_layer_bytes(shape, n_ctx, cache_type, engine=engine, n_seq=n_seq)


# --- compute buffers -----------------------------------------------------------------------


def compute_bytes(
    shape: ModelShape,
    n_ctx: int,
    *,
    n_ubatch: int = DEFAULT_UBATCH,
    flash_attention: bool = True,
    logits: bool = True,
) -> int:
    """An estimate of llama.cpp's compute buffer for one device holding every layer.

    llama.cpp reserves it for a worst-case micro-batch of ``min(n_ctx, n_ubatch)`` tokens. Its
    allocator reuses memory, so the size is the largest of a few phases, per token: the logits
    of every token (``4 * n_vocab``), MLA attention (per head), or the FFN; plus, alongside
    them, the attention mask over the whole context (f16 with flash attention) or, without
    flash attention, f32 scores per head. The constants are fitted (see above): exact for V3
    (412 / 440 / 568 MiB at 4K / 32K / 160K context), within a few percent on the other
    shapes measured (benchmarks/plan_accuracy.py); GPU backends differ somewhat. Only the
    device holding the output head computes logits (``logits=False`` for the others). The mask
    is counted with the attention and FFN phases only: a model whose vocabulary dominates (the
    tiny one) measured that way.
    """
    tokens = min(n_ctx, n_ubatch)
    cells = kv_cells(n_ctx)
    widths = shape.key_length + shape.value_length + shape.key_length_mla + shape.value_length_mla
    scores = _F16 * cells if flash_attention else (_F32 * shape.n_head + _F32) * cells
    # The mask lives beside the attention and FFN phases, not beside the logits at the end.
    per_token = max(
        _F32 * (shape.n_vocab + shape.n_embd) if logits else 0,
        shape.n_head * ATTENTION_BYTES_PER_HEAD_ELEMENT * widths
        + ATTENTION_BYTES_PER_EMBD * shape.n_embd + scores,
        FFN_BYTES_PER_EMBD * shape.n_embd + scores,
    )
    return int(tokens * per_token)


__all__ = [
    "DEFAULT_UBATCH",
    "KV_CACHE_TYPES",
    "KV_CELL_PADDING",
    "FileBytes",
    "LayerBytes",
    "ModelMemory",
    "ModelShape",
    "compute_bytes",
    "kv_bytes",
    "kv_cells",
    "kv_layer_bytes",
    "kv_row_bytes",
    "model_memory",
]
