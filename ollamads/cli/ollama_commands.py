"""``ollamads serve`` and ``ollamads register``: the Ollama server and its store."""

from pathlib import Path
from typing import Annotated

import typer

from ollamads.cli._options import (
    CtxOpt,
    DryRunOpt,
    FamilyChoice,
    HostOpt,
    KVTypeChoice,
    KVTypeOpt,
    ModelsDirOpt,
    OllamaBinaryOpt,
    ParameterOpt,
    RamOpt,
    TemplateModeOpt,
    VramOpt,
    choice_value,
    template_mode_value,
)
from ollamads.cli._output import data, message, stderr_console, step, warning


def register_command(
    name: Annotated[str, typer.Argument(help="Model name for Ollama, e.g. deepseek-v3.1:tq1_0.")],
    files: Annotated[list[Path], typer.Argument(help="One merged GGUF, or every shard of a split set.")],
    family: Annotated[FamilyChoice, typer.Option(help="Prompt format.")] = FamilyChoice.v3_1,
    template_mode: TemplateModeOpt = None,
    modelfile: Annotated[Path | None, typer.Option(help="Also write the Modelfile here.")] = None,
    parameter: ParameterOpt = None,
    host: HostOpt = None,
    dry_run: DryRunOpt = False,
) -> None:
    """Register local GGUF files with a running Ollama (blobs + create).

    A V3.1 model also gets NAME-think on the same blobs, which thinks unless asked not to.
    """
    from ollamads.catalog.families import get_family
    from ollamads.cli._progress import progress_display
    from ollamads.errors import OllamadsError
    from ollamads.gguf.shards import open_shard_set
    from ollamads.ollama.api import probe
    from ollamads.ollama.modelfile import ModelDefinition, parse_parameters
    from ollamads.registration import plan_registration, register_files

    overrides = parse_parameters(parameter or [])
    for path in files:
        if not path.is_file():
            raise OllamadsError(f"{path} does not exist", "pass the GGUF files to register")
    from ollamads.units import format_bytes

    shard_set = open_shard_set(files[0])
    if len(files) > 1 and sorted(files) != sorted(shard_set.paths):
        raise OllamadsError(
            f"the files given are not exactly the {shard_set.count} shards of {files[0].name}",
            "pass every shard of one set, or one merged file",
        )
    server = probe(host)
    definition = ModelDefinition.for_family(
        name, get_family(family.value), list(shard_set.paths), server=server,
        mode=template_mode_value(template_mode), parameters=overrides,
    )
    header = f"Ollama {server.version}"
    plan = plan_registration(server, shard_set)
    if dry_run:
        for each in (definition, *definition.companions):
            data(each.modelfile(header), newline=False)
        data(f"# route: {plan.route} ({plan.store_reason})")
        for need in plan.needs:
            data(f"# disk: {need.what} {format_bytes(need.bytes)} in {need.directory}")
        for note in (server.untested_note(), plan.store_check.fix):
            if note:
                data(f"# note: {note}")
        return
    from ollamads.units import check_space

    check_space(plan.needs, name)
    if modelfile:
        from ollamads.ollama.modelfile import THINKING_TAG_SUFFIX

        modelfile.write_text(definition.modelfile(header), encoding="utf-8")
        for companion in definition.companions:  # V3.1's thinking name: PATH-think
            modelfile.with_name(modelfile.name + THINKING_TAG_SUFFIX).write_text(
                companion.modelfile(header), encoding="utf-8")
    console = stderr_console()
    for note in (server.untested_note(), plan.store_check.fix):
        if note:
            message(f"note: {note}")
    with progress_display(console) as progress:
        result = register_files(plan, definition, progress=progress,
                                report=step)
    console.print(
        f"registered {result.name} ({result.route}: {result.bytes_written:,} bytes written into the "
        f"store, {result.bytes_uploaded:,} uploaded)", soft_wrap=True,
    )
    echo_run_lines(result.name, result.companions)


def echo_run_lines(name: str, companions: tuple[str, ...]) -> None:
    """The `ollama run` line of each registered name (V3.1: its thinking name too)."""
    data(f"ollama run {name}")
    for companion in companions:
        data(f"ollama run {companion}    # thinks unless asked not to")


def serve(
    models: ModelsDirOpt = None,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default 127.0.0.1:11434: loopback only).")
    ] = None,
    ollama_binary: OllamaBinaryOpt = None,
    workers: Annotated[
        str | None,
        typer.Option(
            "--workers",
            help="Spread models over llama.cpp RPC workers (`ollamads worker`), host:port,... "
            "(Ollama >= 0.30 with an RPC-enabled llama-server).",
        ),
    ] = None,
    plan: Annotated[
        str | None, typer.Option("--plan", metavar="MODEL:QUANT",
                                    help="Also set the offload environment `ollamads plan` gives this model.")
    ] = None,
    ram: RamOpt = None,
    vram: VramOpt = None,
    ctx: CtxOpt = None,
    kv_type: KVTypeOpt = KVTypeChoice.q8_0,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", metavar="NAME=VALUE",
                     help="Also set this in the server's environment, over the defaults and the "
                          "plan's (repeatable; `ollamads bench --sweep` prints these)."),
    ] = None,
) -> None:
    """Start `ollama serve` with the settings DeepSeek's big GGUFs want; Ctrl-C stops it.

    SIGINT, SIGTERM and SIGHUP are passed on to `ollama serve`, and it is stopped whenever this
    command ends, so it never runs on alone.
    """
    from ollamads.cli._signals import run_in_foreground
    from ollamads.ollama.serve import OllamaServe, serve_settings

    console = stderr_console()
    head = None
    if workers is not None:  # every check before anything is created
        from ollamads.cli import worker_commands

        head = worker_commands.prepare_workers(workers, ollama_binary)
    planned: dict[str, str] = {"OLLAMA_KV_CACHE_TYPE": str(choice_value(kv_type))}
    if plan:
        from ollamads.cli.plan_commands import serve_plan

        planned, said = serve_plan(plan, ollama_binary, ram, vram, ctx, kv_type)
        for line in said:
            console.print(line, soft_wrap=True)
    for item in env or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise typer.BadParameter(f"{item!r}: write it as NAME=VALUE", param_hint="--env")
        planned[name.strip()] = value
    settings = serve_settings(models, host, planned)
    if head is not None:
        settings = worker_commands.with_workers(settings, head)
    server = OllamaServe(
        settings.models_dir,
        binary=ollama_binary,
        host=settings.bind,
        env=settings.environment,
        log_path=settings.models_dir / "serve.log",
        die_with_parent=True,
    )
    info = server.start()
    try:
        console.print(f"Ollama {info.version} is serving {settings.models_dir} at {settings.url}")
        if settings.reachable_from_other_machines:
            warning(
                f"listening on {settings.bind}, not only on loopback: "
                "Ollama has no authentication, so anyone who can reach this machine can run, "
                "pull, replace and delete its models (leave out --host to listen on 127.0.0.1)"
            )
        console.print("  " + " ".join(f"{k}={v}" for k, v in settings.variables.items()), soft_wrap=True)
        console.print(f"  log: {server.log_path}")
        console.print(f"  Open WebUI: {settings.open_webui_hint()}")
        if head is not None:
            worker_commands.report_workers(console, head)
            import threading

            # Until the server exits, in the background.
            threading.Thread(target=worker_commands.watch_workers, args=(console, server, head),
                             daemon=True, name="ollamads-watch-workers").start()
        run_in_foreground(server)
    finally:
        server.stop()


def register(app: typer.Typer) -> None:
    app.command("register")(register_command)
    app.command()(serve)
