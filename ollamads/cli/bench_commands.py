"""``ollamads bench MODEL``: load time, prompt and generation tokens/s of a registered model, and
``--sweep`` for the fastest settings on this machine."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ollamads.cli._options import HostOpt, JsonOpt, ModelsDirOpt, OllamaBinaryOpt, ParameterOpt
from ollamads.cli._output import data, data_json

if TYPE_CHECKING:
    from ollamads.ollama.bench import BenchResult
    from ollamads.ollama.sweep import SweepResult

ModelArg = Annotated[str, typer.Argument(help="A registered model, e.g. deepseek-v3.1:tq1_0.")]
PromptOpt = Annotated[
    list[int] | None,
    typer.Option("--prompt", min=1, help="Prompt length in tokens (repeatable; default 128, with --sweep 1536)."),
]
GenerateOpt = Annotated[int, typer.Option("--generate", min=1, help="Tokens to generate per run.")]
RunsOpt = Annotated[int, typer.Option("--runs", min=1, help="Runs per prompt length (medians).")]
SweepOpt = Annotated[
    bool,
    typer.Option("--sweep", help="Try threads, flash attention, micro-batch (and with a GPU the "
                                 "experts kept in RAM) on servers of its own; print the fastest."),
]
CpuMoeOpt = Annotated[
    int | None,
    typer.Option("--cpu-moe", min=0, help="With --sweep: the LLAMA_ARG_N_CPU_MOE to sweep around "
                                          "(default with a GPU: the plan's; without one: not swept)."),
]


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _render(result: "BenchResult") -> str:
    out = [f"{result.model} on Ollama {result.version} at {result.host} "
           f"(median of {result.settings.runs} runs, {result.settings.generate_tokens} tokens "
           "generated, greedy; Ollama's own counters)"]
    if result.load_s is not None:
        out.append(f"  load: {result.load_s:.2f} s")
    if result.size:
        vram = result.size_vram or 0
        out.append(f"  in memory: {result.size / 1e9:.2f} GB, {vram / 1e9:.2f} GB of it on the GPU "
                   f"({100 * vram / result.size:.0f}%, as Ollama's /api/ps reports)")
    out.append(f"  {'prompt':>8} {'prompt tok/s':>13} {'generation tok/s':>17} {'first token':>12}")
    for length in result.lengths:
        first = "-" if length.first_token_s is None else f"{length.first_token_s:.3f} s"
        out.append(f"  {length.prompt_tokens:>8} {_rate(length.prompt_tokens_per_s):>13} "
                   f"{_rate(length.generation_tokens_per_s):>17} {first:>12}")
    return "\n".join(out)


def _render_sweep(result: "SweepResult") -> str:
    out = [f"sweep of {result.model} on Ollama {result.version} (servers of the sweep's own):"]
    for p in result.points:
        figures = (f"prompt {_rate(p.result.prompt_tokens_per_s)} tok/s, generation "
                   f"{_rate(p.result.generation_tokens_per_s)} tok/s" if p.result else f"failed: {p.error}")
        out.append(f"  {p.factor:16} {p.setting.describe():48} {figures}")
    best = result.best_point()
    if best and best.result:
        out.append(f"fastest: prompt {_rate(best.result.prompt_tokens_per_s)} tok/s, generation "
                   f"{_rate(best.result.generation_tokens_per_s)} tok/s")
    out.append("start the server with:")
    out.append(f"  {result.serve_line()}")
    params = result.parameters()
    if params:
        out.append("and register the model with these PARAMETERs (`ollamads create ... "
                   + " ".join(f"-p {k}={v}" for k, v in params.items()) + "`):")
        out += [f"  PARAMETER {k} {v}" for k, v in params.items()]
    out += [f"note: {n}" for n in result.notes]
    return "\n".join(out)


def _models_dir(models: Path | None, host: str | None) -> Path:
    """The running server's store: given, else the one ollamads knows for that server."""
    if models is not None:
        return models
    from ollamads.errors import OllamadsError
    from ollamads.ollama.api import probe
    from ollamads.ollama.store import find_store

    check = find_store(probe(host))
    if check.store is None:
        raise OllamadsError(f"--sweep needs the server's model store: {check.reason}",
                            "pass --models with the server's OLLAMA_MODELS")
    return check.store.root


def _planned_cpu_moe(store: Path, model: str) -> int | None:
    """With a GPU: the plan's --n-cpu-moe for the model's own file(s) in the store, to sweep
    around; None without a GPU or when the plan keeps no experts in RAM."""
    from ollamads.gguf.format import read_gguf
    from ollamads.hardware import this_machine
    from ollamads.ollama.store import MEDIA_MODEL, LocalStore
    from ollamads.plan.memory import model_memory
    from ollamads.plan.planner import DEFAULT_CTX
    from ollamads.plan.recommend import PlanRequest, make_plan

    machine = this_machine()
    local = LocalStore(store)
    manifest = local.manifest(model)
    if not machine.gpus or manifest is None:
        return None
    blobs = [local.blob_path(layer["digest"]) for layer in manifest.get("layers", [])
             if layer.get("mediaType") == MEDIA_MODEL]
    if not blobs:
        return None
    memory = model_memory([read_gguf(b) for b in blobs], name=model, source="local files")
    ctx = min(DEFAULT_CTX, memory.shape.n_ctx_train)
    plan = make_plan(memory, machine, PlanRequest(ctx=ctx))
    return plan.llama.offload.cpu_moe_layers or None


def bench_command(
    model: ModelArg,
    prompt: PromptOpt = None,
    generate: GenerateOpt = 64,
    runs: RunsOpt = 3,
    parameter: ParameterOpt = None,
    sweep: SweepOpt = False,
    cpu_moe: CpuMoeOpt = None,
    ollama_binary: OllamaBinaryOpt = None,
    models: ModelsDirOpt = None,
    host: HostOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Time a registered model on the running server: load, prompt and generation tokens/s."""
    from ollamads.cli._progress import steps_display
    from ollamads.ollama.bench import BenchSettings, result_record, run_bench
    from ollamads.ollama.modelfile import parse_parameters

    # A sweep's prompt is longer than its largest micro-batch, so the micro-batch can matter.
    settings = BenchSettings(prompt_tokens=tuple(prompt or ((1536,) if sweep else (128,))), generate_tokens=generate,
                             runs=runs, options=parse_parameters(parameter or []))
    settings.check()
    if sweep:
        from ollamads.ollama.sweep import record, run_sweep

        store = _models_dir(models, host)
        if cpu_moe is None:
            cpu_moe = _planned_cpu_moe(store, model)
        with steps_display() as progress:
            swept = run_sweep(model, settings, host=host, models_dir=store, binary=ollama_binary,
                              cpu_moe_plan=cpu_moe, progress=progress)
        if as_json:
            data_json(record(swept))
        else:
            data(_render_sweep(swept))
        return
    with steps_display() as progress:
        result = run_bench(model, settings, host=host, progress=progress)
    if as_json:
        data_json(result_record(result))
    else:
        data(_render(result))


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_command)


__all__ = ["bench_command", "register"]
