"""``ollamads plan`` (which quant fits, how to offload it) and ``ollamads doctor``."""

import shlex
from typing import TYPE_CHECKING, Annotated

import typer

from ollamads.cli._options import (
    CtxOpt,
    HostOpt,
    JsonOpt,
    KVTypeChoice,
    KVTypeOpt,
    RamOpt,
    RevisionOpt,
    ServerLineChoice,
    ServerLineOpt,
    VramOpt,
    choice_value,
)
from ollamads.cli._output import data, data_json, stdout_console

if TYPE_CHECKING:
    from ollamads.hardware import Machine
    from ollamads.plan.planner import PlanResult

_FIT_WORDS = {
    "gpu": "fits on the GPU",
    "gpu+ram": "fits GPU + RAM",
    "ram": "fits in RAM (CPU only)",
    "disk": "does not fit: pages from disk",
    "no-load": "does not load on Ollama <= 0.24",
}
_SHORT_FIT = {"gpu": "GPU", "gpu+ram": "GPU+RAM", "ram": "RAM", "disk": "disk", "no-load": "no"}


# --- options shared with serve / create / list -------------------------------------------------


def machine_from_options(ram: str | None, vram: list[str] | None) -> "Machine":
    """This machine, with --ram / --vram (repeatable or comma lists) replacing what was found."""
    from ollamads.hardware import given_machine
    from ollamads.units import parse_size

    ram_bytes = None if ram is None else parse_size(ram, what="RAM")
    sizes = None
    if vram:
        sizes = [parse_size(part, what="GPU memory") for item in vram for part in item.split(",")
                 if part.strip()]
    return given_machine(ram_bytes, sizes)


def server_line(choice: ServerLineChoice | None, host: str | None = None) -> tuple[str, str]:
    """The line to plan for and why: the option, else the running server's, else split."""
    if choice is not None:
        return choice.value, "given"
    from ollamads.ollama.api import answers

    info = answers(host)
    if info is not None:
        return info.line, f"Ollama {info.version} at {info.host}"
    return "split", "no server answered; Ollama >= 0.30 assumed"


def short_fit(fit: str | None, exact: bool = True) -> str:
    if fit is None:
        return "?"
    return _SHORT_FIT[fit] + ("" if exact else "~")


# --- plan ----------------------------------------------------------------------------------


def _gb(n: int) -> str:
    from ollamads.units import format_gib

    return format_gib(n)


def _guides_layers(result: "PlanResult") -> str | None:
    """The guides' --n-gpu-layers table entry for this machine's GPUs, when it has one."""
    from ollamads.units import GIB

    entry, gpus = result.source.entry, result.plan.machine.gpus
    if entry is None or not entry.quant.gpu_layers or not gpus or result.plan.machine.unified:
        return None
    sizes = {round(g.total / GIB) for g in gpus}
    if len(sizes) != 1:
        return None
    size = sizes.pop()
    key = f"{size}GB" if len(gpus) == 1 else f"{len(gpus)}x{size}GB"
    layers = entry.quant.gpu_layers.get(key)
    return None if layers is None else f"the guides' table says {layers} layers for {key}"


def _render(result: "PlanResult", line_reason: str) -> str:
    from ollamads.plan.recommend import gpu_budgets, ram_budget
    from ollamads.units import format_bytes

    plan, memory, source = result.plan, result.plan.memory, result.source
    request, machine = plan.request, plan.machine
    out: list[str] = []
    where = {"local files": "read from the local files",
             "Hub headers": (f"read from the Hub's headers ({format_bytes(source.fetched)} fetched now)"
                             if source.fetched else "read from cached Hub headers"),
             "published size": "estimated from the published size"}[memory.source]
    files = f"{len(memory.files)} file(s)" if memory.files else "?"
    out.append(f"{source.label}: {format_bytes(memory.file_size)} in {files}; tensor table {where}")
    out.append(f"machine: {machine.describe()} ({machine.source}); context {request.ctx}, "
               f"KV cache {request.kv_type}; server line {request.line} ({line_reason})")
    moe = [layer for layer in memory.layers if layer.routed_experts]
    non_expert = sum(layer.non_expert for layer in memory.layers)
    largest_layer = max((layer.non_expert for layer in memory.layers), default=0)
    rows = [
        ("embeddings (stay on the CPU)", memory.input, ""),
        ("output head", memory.output, "  (a copy of the embeddings)" if memory.output_tied else ""),
        (f"{memory.shape.n_layer} layers: attention/dense/shared", non_expert,
         f"  (largest layer {_gb(largest_layer)})"),
        ("           routed experts", memory.routed_expert_bytes,
         f"  ({_gb(moe[0].routed_experts)} per MoE layer, {len(moe)} layers)" if moe else ""),
        (f"KV cache, {plan.llama.kv_type}, {request.ctx} tokens", plan.llama.kv_bytes,
         f"  (Ollama <= 0.24: {_gb(plan.merged.kv_bytes)}, f16 K and V)"),
        ("compute buffer (estimate)", max((load.compute for load in plan.llama.loads), default=0), ""),
    ]
    out += ["", "bytes"] + [f"  {label:38} {_gb(n):>10}{extra}" for label, n, extra in rows]
    layout = plan.layout
    out += ["", f"{_FIT_WORDS[layout.fit]}: {plan.speed}"]
    for load, budget in zip(layout.gpu_loads, gpu_budgets(machine, request), strict=True):
        out.append(f"  {load.name:5} {_gb(load.total):>10} of {_gb(budget)} usable "
                   f"(weights {_gb(load.weights)}, KV {_gb(load.kv)}, compute {_gb(load.compute)})")
    cpu = layout.cpu_load
    out.append(f"  {'RAM':5} {_gb(cpu.total):>10} of {_gb(ram_budget(machine, request))} usable "
               f"(weights {_gb(cpu.weights)}, KV {_gb(cpu.kv)}, compute {_gb(cpu.compute)})")
    out.append(f"  placement: {layout.offload.describe(memory.shape.n_layer)}")
    out += _speed_lines(result)
    spec = source.label if source.entry else str(source.model_path)
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in plan.environment.items())
    out += ["", f"Ollama >= 0.30 ({_FIT_WORDS[plan.llama.fit]}): start the server with",
            f"  {env} ollama serve",
            f"  (`ollamads serve --plan {spec}` does); leave num_gpu unset; PARAMETER num_ctx {request.ctx}"]
    if "use_mmap" in plan.parameters and request.line == "split":
        out.append("  and PARAMETER use_mmap true: without a GPU Ollama turns mmap off, and the "
                   "weights would have to fit in RAM")
    guides = _guides_layers(result)
    out.append(f"Ollama <= 0.24 ({_FIT_WORDS[plan.merged.fit]}): whole layers only: PARAMETER "
               f"num_gpu {plan.merged.offload.gpu_layers}, PARAMETER num_ctx {request.ctx}"
               + (f" ({guides})" if guides else ""))
    if source.entry:
        params = ", ".join(f"{k} {v}" for k, v in plan.parameters.items())
        out.append(f"  `ollamads create {spec} --plan` writes this line's PARAMETERs ({params})")
    out += ["llama.cpp:", "  " + shlex.join(plan.llama_server)]
    if result.family:
        largest = result.largest
        if largest is None or largest.plan is None:
            out.append("\nno quant of this model runs from this machine's memory")
        else:
            how = "" if largest.exact else " (estimated from its published size)"
            out.append(f"\nlargest quant of {largest.entry.model.key} that fits this machine: "
                       f"{largest.entry.quant.name}, {_FIT_WORDS[largest.plan.fit]}{how}")
        out.append("  " + "  ".join(
            f"{f.entry.quant.name} {short_fit(f.plan.fit if f.plan else None, f.exact)}"
            for f in result.family))
    out += [f"note: {note}" for note in plan.notes]
    return "\n".join(out)


def _speed_lines(result: "PlanResult") -> list[str]:
    speed = result.speed
    if speed is None:
        return []
    if speed.decode_tokens_per_s is None:
        return [f"  speed: not estimated ({speed.basis()}; set OLLAMADS_GPU_BANDWIDTH in GB/s)"]
    lines = [f"  speed (estimate): about {speed.decode_tokens_per_s:.1f} tokens/s generating, "
             f"{speed.decode_tokens_per_s_at_ctx or 0:.1f} with all {speed.ctx} tokens of context "
             "in use; prompt speed not estimated (`ollamads bench` measures both)",
             f"    from the bytes each token reads: {speed.basis()}"]
    if speed.engine_share < 1:
        lines.append(f"    times {speed.engine_share:.1f}: Ollama <= 0.24's own engine was measured at "
                     "that share of llama.cpp's speed on DeepSeek")
    if result.plan.machine.source == "given":
        lines.append("    (the RAM's bandwidth is this machine's, not the given machine's)")
    upgrade = result.upgrade_speed
    if upgrade is not None and upgrade.decode_tokens_per_s:
        lines.append(f"  on Ollama >= 0.30 (llama-server, {result.plan.llama.offload.describe(result.plan.memory.shape.n_layer)}): "
                     f"about {upgrade.decode_tokens_per_s:.1f} tokens/s; the upgrade costs no disk: "
                     f"the shards register as they are and the merged copy "
                     f"({result.plan.memory.file_size / 1e9:.1f} GB) is no longer needed")
    return lines


def plan_command(
    model: Annotated[str, typer.Argument(help="Catalog model and quant (r1:IQ1_S), or a .gguf file (first shard).")],
    ram: RamOpt = None,
    vram: VramOpt = None,
    ctx: CtxOpt = None,
    kv_type: KVTypeOpt = KVTypeChoice.q8_0,
    line: ServerLineOpt = None,
    host: HostOpt = None,
    revision: RevisionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Which quant fits this machine and how to offload it, from the model's own tensor table."""
    from ollamads.plan.planner import plan_model, result_record

    machine = machine_from_options(ram, vram)
    line_value, reason = server_line(line, host)
    result = plan_model(model, machine, ctx=ctx, kv_type=str(choice_value(kv_type)),
                        line=line_value, revision=revision)
    if as_json:
        record = result_record(result)
        record["server_line_reason"] = reason
        data_json(record)
        return
    data(_render(result, reason))


def serve_plan(
    model: str, binary: str | None, ram: str | None, vram: list[str] | None, ctx: int | None,
    kv_type: KVTypeChoice,
) -> tuple[dict[str, str], list[str]]:
    """``serve --plan``: the environment for the binary's line, and lines saying what it does."""
    from ollamads.ollama.serve import find_ollama, ollama_version
    from ollamads.ollama.versions import ServerInfo
    from ollamads.plan.planner import plan_model

    version = ollama_version(find_ollama(binary))
    line = ServerInfo("", version).line
    result = plan_model(model, machine_from_options(ram, vram), ctx=ctx,
                        kv_type=str(choice_value(kv_type)), line=line)
    plan = result.plan
    said = [f"plan for {result.source.label} on Ollama {version}: {_FIT_WORDS[plan.fit]} "
            f"({plan.layout.offload.describe(plan.memory.shape.n_layer)})"]
    if line == "split":
        env = dict(plan.environment)
        said.append("  these apply to every model this server loads; leave num_gpu unset "
                    "(a num_gpu makes Ollama pass -ngl)")
    else:
        env = {"OLLAMA_CONTEXT_LENGTH": str(plan.request.ctx)}
        said.append(f"  Ollama {version} cannot keep experts on the CPU: register the model with "
                    f"PARAMETER num_gpu {plan.merged.offload.gpu_layers} "
                    f"(`ollamads create {result.source.label} --plan`)")
    return env, said


def create_plan_parameters(model: str, host: str | None) -> tuple[dict[str, object], str]:
    """``create --plan``: the plan's PARAMETERs for the server at ``host`` and this machine."""
    from ollamads.hardware import this_machine
    from ollamads.ollama.api import probe
    from ollamads.plan.planner import plan_model

    server = probe(host)
    result = plan_model(model, this_machine(), line=server.line)
    plan = result.plan
    params = dict(plan.parameters)
    shown = ", ".join(f"{k} {v}" for k, v in params.items())
    return params, (f"plan for Ollama {server.version}: {_FIT_WORDS[plan.fit]}; "
                    f"PARAMETERs {shown}")


# --- doctor --------------------------------------------------------------------------------


_STATUS_STYLE = {"ok": "green", "info": "cyan", "warn": "yellow", "fail": "red"}


def doctor_command(host: HostOpt = None, as_json: JsonOpt = False) -> None:
    """Check the server, KV cache, store, memory, llama.cpp, the Hub and Open WebUI; a fix for
    each finding. Exit code: 0 all fine, 3 warnings, 4 failures."""
    from rich.markup import escape

    from ollamads.doctor import exit_code, run_checks, worst

    findings = run_checks(host)
    code = exit_code(findings)
    if as_json:
        data_json({
            "worst": worst(findings), "exit_code": code,
            "findings": [{"check": f.check, "status": f.status, "summary": f.summary, "fix": f.fix,
                          "details": dict(f.details)} for f in findings],
        })
    else:
        console = stdout_console(soft_wrap=True)
        for f in findings:
            style = _STATUS_STYLE[f.status]
            console.print(f"[{style}]{f.status:4}[/] {f.check:11} {escape(f.summary)}")
            if f.fix and f.status != "ok":
                console.print(f"{'':4} {'':11} fix: {escape(f.fix)}")
        console.print(f"worst: {worst(findings)} (exit {code})")
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_command)
    app.command("doctor")(doctor_command)


__all__ = ["create_plan_parameters", "machine_from_options", "plan_command", "register", "serve_plan", "server_line", "short_fit"]
