"""llama.cpp's ``deepseek2`` architecture as GGUF tensors: names, shapes, and what each one is.

DeepSeek V3 / V3.1 / R1 are all ``deepseek2`` in llama.cpp (MLA attention, a few leading dense
blocks, then routed experts plus one shared expert per block). The names and shapes here are
the ones ``src/models/deepseek2.cpp`` creates; the roles follow llama.cpp's own patterns
(``LLM_FFN_EXPS_REGEX`` in ``common/common.h`` is what ``--cpu-moe`` / ``--n-cpu-moe`` move),
so a byte count per role is a byte count of what those options move.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

ARCH = "deepseek2"

TOKEN_EMBD = "token_embd.weight"
OUTPUT = "output.weight"
OUTPUT_NORM = "output_norm.weight"


class Role(str, Enum):
    """What a tensor is for, as far as placing it on a device goes."""

    #: ``token_embd``: llama.cpp always keeps it on the CPU (the input "layer").
    INPUT = "input"
    #: ``output`` and ``output_norm``: the output head, offloaded as one more "layer".
    OUTPUT = "output"
    #: MLA projections and the norms and router of a block.
    ATTENTION = "attention"
    #: The FFN of a leading dense block.
    DENSE_FFN = "dense_ffn"
    #: The shared expert of an MoE block (``*_shexp``): used by every token, like dense weights.
    SHARED_EXPERT = "shared_expert"
    #: The routed experts (``*_exps``): most of the bytes, each token reads 8 of 256.
    ROUTED_EXPERTS = "routed_experts"
    #: Anything else in a block (an MTP ``nextn`` head, a future tensor).
    OTHER = "other"


#: llama.cpp's LLM_FFN_EXPS_REGEX (what --cpu-moe moves), anchored on a block's tensor name.
ROUTED_EXPERTS_RE = re.compile(r"\.ffn_(up|down|gate|gate_up)_(ch|)exps")
_SHARED_RE = re.compile(r"\.ffn_(up|down|gate)_shexp\.")
_DENSE_RE = re.compile(r"\.ffn_(up|down|gate)\.")
_ATTENTION_RE = re.compile(r"\.(attn_[a-z_]+|ffn_norm|ffn_gate_inp|exp_probs_b)\.")
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.")


def tensor_role(name: str) -> tuple[int | None, Role]:
    """``(block index or None, role)`` of a tensor name."""
    if name == TOKEN_EMBD:
        return None, Role.INPUT
    if name in (OUTPUT, OUTPUT_NORM):
        return None, Role.OUTPUT
    block = _BLOCK_RE.match(name)
    if block is None:
        return None, Role.OTHER
    layer = int(block[1])
    rest = name[block.end() - 1 :]
    if ROUTED_EXPERTS_RE.search(rest):
        return layer, Role.ROUTED_EXPERTS
    if _SHARED_RE.search(rest):
        return layer, Role.SHARED_EXPERT
    if _DENSE_RE.search(rest):
        return layer, Role.DENSE_FFN
    if _ATTENTION_RE.search(rest):
        return layer, Role.ATTENTION
    return layer, Role.OTHER


@dataclass(frozen=True)
class DeepSeek2Dims:
    """The dimensions that fix every tensor shape of a deepseek2 model."""

    n_layer: int
    n_dense_lead: int
    n_embd: int
    n_ff: int
    n_head: int
    q_lora_rank: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    n_expert: int
    n_expert_shared: int
    n_ff_exp: int
    n_vocab: int
    #: No ``output.weight``: llama.cpp reuses ``token_embd`` as the output head.
    tied_output: bool = False


#: DeepSeek V3 / V3.1 / R1 (671B), as their config.json and Unsloth's GGUF headers give them.
DEEPSEEK_V3 = DeepSeek2Dims(
    n_layer=61, n_dense_lead=3, n_embd=7168, n_ff=18432, n_head=128, q_lora_rank=1536,
    kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
    n_expert=256, n_expert_shared=1, n_ff_exp=2048, n_vocab=129280,
)


@dataclass(frozen=True)
class TensorSlot:
    name: str
    shape: tuple[int, ...]  # ne order, as GGUF stores it

    @property
    def role(self) -> Role:
        return tensor_role(self.name)[1]


def tensor_layout(d: DeepSeek2Dims) -> list[TensorSlot]:
    """Every tensor of the model, in the order convert_hf_to_gguf writes them."""
    k_mla = d.qk_nope_head_dim + d.qk_rope_head_dim
    shared = d.n_ff_exp * d.n_expert_shared
    slots = [TensorSlot(TOKEN_EMBD, (d.n_embd, d.n_vocab))]
    for i in range(d.n_layer):
        p = f"blk.{i}."
        slots += [
            TensorSlot(p + "attn_norm.weight", (d.n_embd,)),
            TensorSlot(p + "attn_q_a.weight", (d.n_embd, d.q_lora_rank)),
            TensorSlot(p + "attn_q_a_norm.weight", (d.q_lora_rank,)),
            TensorSlot(p + "attn_q_b.weight", (d.q_lora_rank, d.n_head * k_mla)),
            TensorSlot(p + "attn_kv_a_mqa.weight", (d.n_embd, d.kv_lora_rank + d.qk_rope_head_dim)),
            TensorSlot(p + "attn_kv_a_norm.weight", (d.kv_lora_rank,)),
            TensorSlot(p + "attn_k_b.weight", (d.qk_nope_head_dim, d.kv_lora_rank, d.n_head)),
            TensorSlot(p + "attn_v_b.weight", (d.kv_lora_rank, d.v_head_dim, d.n_head)),
            TensorSlot(p + "attn_output.weight", (d.n_head * d.v_head_dim, d.n_embd)),
            TensorSlot(p + "ffn_norm.weight", (d.n_embd,)),
        ]
        if i < d.n_dense_lead:
            slots += [
                TensorSlot(p + "ffn_gate.weight", (d.n_embd, d.n_ff)),
                TensorSlot(p + "ffn_up.weight", (d.n_embd, d.n_ff)),
                TensorSlot(p + "ffn_down.weight", (d.n_ff, d.n_embd)),
            ]
            continue
        slots += [
            TensorSlot(p + "ffn_gate_inp.weight", (d.n_embd, d.n_expert)),
            TensorSlot(p + "exp_probs_b.bias", (d.n_expert,)),
            TensorSlot(p + "ffn_gate_exps.weight", (d.n_embd, d.n_ff_exp, d.n_expert)),
            TensorSlot(p + "ffn_up_exps.weight", (d.n_embd, d.n_ff_exp, d.n_expert)),
            TensorSlot(p + "ffn_down_exps.weight", (d.n_ff_exp, d.n_embd, d.n_expert)),
            TensorSlot(p + "ffn_gate_shexp.weight", (d.n_embd, shared)),
            TensorSlot(p + "ffn_up_shexp.weight", (d.n_embd, shared)),
            TensorSlot(p + "ffn_down_shexp.weight", (shared, d.n_embd)),
        ]
    slots.append(TensorSlot(OUTPUT_NORM, (d.n_embd,)))
    if not d.tied_output:
        slots.append(TensorSlot(OUTPUT, (d.n_embd, d.n_vocab)))
    return slots


__all__ = [
    "ARCH",
    "DEEPSEEK_V3",
    "OUTPUT",
    "OUTPUT_NORM",
    "ROUTED_EXPERTS_RE",
    "TOKEN_EMBD",
    "DeepSeek2Dims",
    "Role",
    "TensorSlot",
    "tensor_layout",
    "tensor_role",
]
