"""``ollamads create`` (Hub -> Ollama in one command) and ``ollamads demo``."""

from typing import Annotated

import typer

from ollamads.cli._options import (
    ConnectionsOpt,
    DryRunOpt,
    HostOpt,
    ModelArg,
    OllamaBinaryOpt,
    ParameterOpt,
    TemplateModeOpt,
    template_mode_value,
)
from ollamads.cli._output import data, done, stderr_console, step


def create(
    model: ModelArg,
    name: Annotated[str | None, typer.Option(help="Ollama model name (default: e.g. deepseek-v3.1-terminus:tq1_0).")] = None,
    keep_shards: Annotated[
        bool, typer.Option("--keep-shards/--delete-shards", help="After the server has the model, keep or delete the downloaded shards.")
    ] = True,
    template_mode: TemplateModeOpt = None,
    parameter: ParameterOpt = None,
    connections: ConnectionsOpt = None,
    host: HostOpt = None,
    dry_run: DryRunOpt = False,
    plan: Annotated[
        bool, typer.Option("--plan", help="Add the PARAMETERs `ollamads plan` gives for this machine "
                                          "and server (num_ctx; num_gpu on Ollama <= 0.24).")
    ] = False,
) -> None:
    """Download (parallel, resumable, verified), merge if the server needs it, and register."""
    from ollamads.cli._progress import progress_display
    from ollamads.cli.hub_commands import format_plan
    from ollamads.ollama.modelfile import parse_parameters
    from ollamads.pipeline import create as create_model
    from ollamads.pipeline import plan_create

    overrides = parse_parameters(parameter or [])
    console = stderr_console()
    if plan:
        from ollamads.cli.plan_commands import create_plan_parameters

        planned, said = create_plan_parameters(model, host)
        console.print(said, soft_wrap=True)
        overrides = {**planned, **overrides}
    if dry_run:
        from ollamads.units import format_bytes, shortfalls

        planned_create = plan_create(model, name=name, host=host, delete_shards=not keep_shards)
        data(format_plan(planned_create.pull))
        data(f"Ollama {planned_create.server.version} at {planned_create.server.host}: {planned_create.describe_route()}")
        for note in planned_create.notes():
            data(f"note: {note}")
        for need in planned_create.needs:
            data(f"  disk: {need.what} {format_bytes(need.bytes)} in {need.directory}")
        if len(planned_create.needs) == 1:
            data("  disk: nothing else (the server's store gets the files without a copy)")
        for short in shortfalls(planned_create.needs):
            data(f"NOT ENOUGH DISK: {short.describe()}")
        data(f"would register {planned_create.name}")
        return
    with progress_display(console) as progress:
        result = create_model(
            model, name=name, host=host, keep_shards=keep_shards,
            template_mode=template_mode_value(template_mode),
            parameters=overrides, connections=connections,
            report=step,
            progress=progress,
        )
    console.print(
        f"{result.name}: {result.bytes_downloaded:,} bytes downloaded, "
        f"{result.bytes_written:,} written into the store, {result.bytes_uploaded:,} uploaded "
        f"(route: {result.route})" + ("" if result.created else ", already registered"),
        soft_wrap=True,
    )
    console.print(f"Modelfile: {result.modelfile}", soft_wrap=True)
    from ollamads.cli.ollama_commands import echo_run_lines

    echo_run_lines(result.name, result.companions)


def demo(ollama_binary: OllamaBinaryOpt = None) -> None:
    """Run the whole pipeline on a built-in tiny DeepSeek V3.1 (no downloads)."""
    from ollamads.demo import run_demo

    result = run_demo(step, ollama_binary=ollama_binary)
    done(f"{result.model} and its thinking name ran on Ollama {result.server.version} "
         "(random weights: the words are gibberish)")


def register(app: typer.Typer) -> None:
    app.command()(create)
    app.command()(demo)
