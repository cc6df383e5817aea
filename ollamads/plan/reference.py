"""A quant's memory when its tensor table has not been read: from the published size.

Every catalog model is DeepSeek V3's shape, so everything but the routed experts is known up to
its quant types. Unsloth's dynamic quants keep those tensors at 4-6 bits (the guides: "1 bit
for unimportant MoE layers, 2-4 bit for important ones, 6-8 bit for the rest"), so this
estimate puts them at Q5_K (attn_k_b / attn_v_b, whose rows of 128 fit no K-quant, at Q8_0),
the embeddings at Q4_K and the output at Q6_K, and gives the routed experts of every MoE block
an equal share of what is left of the published size. ``list`` uses it for quants whose headers
were never fetched; ``plan`` reads the real table and says when it had to estimate.
"""

from __future__ import annotations

from ollamads.gguf.deepseek2 import DEEPSEEK_V3, Role, tensor_layout, tensor_role
from ollamads.gguf.format import GGMLQuantizationType, tensor_nbytes
from ollamads.plan.memory import LayerBytes, ModelMemory, ModelShape

_Q = GGMLQuantizationType

#: DeepSeek V3 / V3.1 / R1 as llama.cpp reads their GGUFs (MLA: K rows of 512 + 64).
V3_SHAPE = ModelShape(
    n_layer=DEEPSEEK_V3.n_layer, n_ctx_train=163840, n_embd=DEEPSEEK_V3.n_embd,
    n_head=DEEPSEEK_V3.n_head, n_head_kv=1,
    key_length=DEEPSEEK_V3.kv_lora_rank + DEEPSEEK_V3.qk_rope_head_dim,
    value_length=DEEPSEEK_V3.kv_lora_rank, is_mla=True, n_vocab=DEEPSEEK_V3.n_vocab,
    key_length_mla=DEEPSEEK_V3.qk_nope_head_dim + DEEPSEEK_V3.qk_rope_head_dim,
    value_length_mla=DEEPSEEK_V3.v_head_dim,
    n_expert=DEEPSEEK_V3.n_expert, n_expert_used=8, n_dense_lead=DEEPSEEK_V3.n_dense_lead,
)


def _assumed_type(name: str, shape: tuple[int, ...]) -> GGMLQuantizationType:
    if len(shape) == 1 or "ffn_gate_inp" in name:
        return _Q.F32
    if name == "token_embd.weight":
        return _Q.Q4_K
    if name == "output.weight":
        return _Q.Q6_K
    return _Q.Q5_K if shape[0] % 256 == 0 else _Q.Q8_0


def published_size_memory(name: str, size_bytes: int) -> ModelMemory:
    """V3's layout with the non-expert tensors at the assumed types and the routed experts
    filling the rest of ``size_bytes``."""
    per_layer: dict[int, dict[Role, int]] = {i: {} for i in range(DEEPSEEK_V3.n_layer)}
    input_bytes = output_bytes = 0
    moe_layers = []
    for slot in tensor_layout(DEEPSEEK_V3):
        layer, role = tensor_role(slot.name)
        if role == Role.ROUTED_EXPERTS:
            if layer not in moe_layers:
                moe_layers.append(layer)
            continue
        nbytes = tensor_nbytes(_assumed_type(slot.name, slot.shape), slot.shape)
        if role == Role.INPUT:
            input_bytes += nbytes
        elif role == Role.OUTPUT:
            output_bytes += nbytes
        else:
            assert layer is not None, f"{slot.name}: only the input and output tensors have no layer"
            roles = per_layer[layer]
            roles[role] = roles.get(role, 0) + nbytes
    fixed = input_bytes + output_bytes + sum(sum(r.values()) for r in per_layer.values())
    experts_each = max(0, size_bytes - fixed) // len(moe_layers)
    layers = tuple(
        LayerBytes.from_roles(i, {**roles, Role.ROUTED_EXPERTS: experts_each if i in moe_layers else 0})
        for i, roles in sorted(per_layer.items())
    )
    return ModelMemory(
        name=name, shape=V3_SHAPE, layers=layers, input=input_bytes, output=output_bytes,
        output_tied=False, source="published size",
    )


__all__ = ["V3_SHAPE", "published_size_memory"]
