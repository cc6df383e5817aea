"""``plan MODEL:QUANT``: the model's bytes, this machine, one plan, and the family's best fit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ollamads.hardware import Machine
from ollamads.plan.family import QuantFit, family_fits, largest_fitting
from ollamads.plan.memory import compute_bytes
from ollamads.plan.recommend import SPEED, Layout, Plan, PlanRequest, make_plan
from ollamads.plan.sources import ModelSource, resolve_source
from ollamads.plan.speed import SpeedEstimate, estimate_speed, merged_engine_share

#: Context when neither the user nor the catalog names one (the guides' examples use 16K).
DEFAULT_CTX = 16384


@dataclass(frozen=True)
class PlanResult:
    source: ModelSource
    plan: Plan
    family: tuple[QuantFit, ...] = ()
    #: Decode speed of the plan's layout (an estimate from bytes read and bandwidth).
    speed: SpeedEstimate | None = None
    #: On the <= 0.24 line: the same model's estimate on Ollama >= 0.30 (llama-server).
    upgrade_speed: SpeedEstimate | None = None

    @property
    def largest(self) -> QuantFit | None:
        return largest_fitting(list(self.family))


def default_ctx(source: ModelSource) -> int:
    named = source.entry.parameters.get("num_ctx") if source.entry else None
    ctx = named if isinstance(named, int) else DEFAULT_CTX
    return min(ctx, source.memory.shape.n_ctx_train)


def plan_model(
    model: str,
    machine: Machine,
    *,
    ctx: int | None = None,
    kv_type: str = "q8_0",
    line: str = "split",
    revision: str | None = None,
) -> PlanResult:
    """Read ``model``'s tensor table (local files, cached or fetched headers) and plan it."""
    source = resolve_source(model, revision=revision)
    request = PlanRequest(ctx=ctx if ctx is not None else default_ctx(source), kv_type=kv_type, line=line)
    sampling = source.entry.parameters if source.entry else {}
    plan = make_plan(source.memory, machine, request, model_path=str(source.model_path),
                     sampling=sampling)
    family: tuple[QuantFit, ...] = ()
    if source.entry is not None:
        family = tuple(family_fits(source.entry.model, machine, request, {source.entry.spec: source}))
    upgrade = None
    if request.line == "merged":
        llama = plan.llama
        upgrade = estimate_speed(plan.memory, plan.machine, llama.offload.gpu_layers,
                                 llama.offload.cpu_moe_layers, ctx=request.ctx, kv_type=llama.kv_type)
    return PlanResult(source, plan, family, plan_speed(plan), upgrade)


def plan_speed(plan: Plan) -> SpeedEstimate:
    """The decode estimate for the layout of the plan's server line. The <= 0.24 line runs its
    own engine: llama.cpp's estimate times the share of it that engine was measured to reach."""
    layout, request = plan.layout, plan.request
    estimate = estimate_speed(plan.memory, plan.machine, layout.offload.gpu_layers,
                              layout.offload.cpu_moe_layers, ctx=request.ctx, kv_type=layout.kv_type,
                              engine="ollama" if request.line == "merged" else "llama.cpp")
    if request.line == "merged":
        estimate = merged_engine_share(estimate)
    return estimate


def speed_record(speed: SpeedEstimate | None) -> dict[str, Any] | None:
    if speed is None:
        return None
    def rate(value: float | None) -> float | None:
        return None if value is None else round(value, 4)
    return {
        "decode_tokens_per_s": rate(speed.decode_tokens_per_s),
        "decode_tokens_per_s_at_ctx": rate(speed.decode_tokens_per_s_at_ctx),
        "prompt_tokens_per_s": rate(speed.prompt_tokens_per_s),
        "estimate": True,
        "basis": speed.basis(),
        "bytes_per_token": speed.bytes_per_token,
        "devices": [
            {"name": d.name, "bytes_per_token": d.bytes_per_token,
             "kv_bytes_per_context_token": round(d.kv_bytes_per_context_token, 1),
             "bandwidth": None if d.bandwidth is None else round(d.bandwidth.bytes_per_s),
             "bandwidth_source": None if d.bandwidth is None else d.bandwidth.source}
            for d in speed.devices
        ],
        "engine_share": speed.engine_share,
    }


# --- as data (``--json``) ----------------------------------------------------------------------


def _layout_record(layout: Layout) -> dict[str, Any]:
    return {
        "fit": layout.fit,
        "speed": SPEED[layout.fit],
        "gpu_layers": layout.offload.gpu_layers,
        "cpu_moe_layers": layout.offload.cpu_moe_layers,
        "kv_type": layout.kv_type,
        "kv_bytes": layout.kv_bytes,
        "devices": [
            {"name": load.name, "weights": load.weights, "kv": load.kv, "compute": load.compute,
             "total": load.total}
            for load in layout.loads
        ],
    }


def result_record(result: PlanResult) -> dict[str, Any]:
    plan, memory = result.plan, result.plan.memory
    largest = result.largest
    return {
        "model": result.source.label,
        "source": memory.source,
        "header_bytes_fetched": result.source.fetched,
        "model_path": str(result.source.model_path),
        "machine": {
            "ram": plan.machine.ram,
            "gpus": [{"name": g.name, "memory": g.total, "kind": g.kind} for g in plan.machine.gpus],
            "unified": plan.machine.unified,
            "source": plan.machine.source,
        },
        "request": {"ctx": plan.request.ctx, "kv_type": plan.request.kv_type,
                    "server_line": plan.request.line, "n_ubatch": plan.request.n_ubatch},
        "memory": {
            "weights": memory.weights,
            "file_size": memory.file_size,
            "input": memory.input,
            "output": memory.output,
            "output_tied": memory.output_tied,
            "n_layer": memory.shape.n_layer,
            "n_ctx_train": memory.shape.n_ctx_train,
            "layers": [
                {"index": layer.index, "attention": layer.attention, "dense_ffn": layer.dense_ffn,
                 "shared_expert": layer.shared_expert, "routed_experts": layer.routed_experts,
                 "other": layer.other}
                for layer in memory.layers
            ],
            "types": dict(memory.types),
            "compute_estimate": compute_bytes(memory.shape, plan.request.ctx,
                                              n_ubatch=plan.request.n_ubatch),
        },
        "fit": plan.fit,
        "speed": speed_record(result.speed),
        "upgrade_speed": speed_record(result.upgrade_speed),
        "decode_tokens_per_s": None if result.speed is None else result.speed.decode_tokens_per_s,
        "prompt_tokens_per_s": None if result.speed is None else result.speed.prompt_tokens_per_s,
        "llama_cpp": _layout_record(plan.llama),
        "ollama_merged_line": _layout_record(plan.merged),
        "environment": dict(plan.environment),
        "parameters": dict(plan.parameters),
        "llama_server": list(plan.llama_server),
        "largest_fitting": None if largest is None else {
            "quant": largest.entry.quant.name, "exact": largest.exact,
            "fit": None if largest.plan is None else largest.plan.fit,
        },
        "family": [
            {"quant": f.entry.quant.name, "fit": None if f.plan is None else f.plan.fit,
             "exact": f.exact, "weights": None if f.plan is None else f.plan.memory.weights}
            for f in result.family
        ],
        "notes": list(plan.notes),
    }


__all__ = ["DEFAULT_CTX", "PlanResult", "default_ctx", "plan_model", "plan_speed", "result_record",
           "speed_record"]
