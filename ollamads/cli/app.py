"""The typer app: one module per outside system, each adding its commands here.

Every command module imports only typer at import time (heavy libraries inside the command),
so ``ollamads --help`` stays instant.
"""

from typing import Annotated

import typer

from ollamads.cli import (
    bench_commands,
    catalog_commands,
    chat_commands,
    gguf_commands,
    hub_commands,
    ollama_commands,
    pipeline_commands,
    plan_commands,
    webui_commands,
    worker_commands,
)

app = typer.Typer(
    name="ollamads",
    help="Run DeepSeek V3.1 / V3 / R1 dynamic-quant GGUFs in a local Ollama.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help text: rendering it through rich costs more than all of typer's own import.
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from ollamads import __version__
        from ollamads.cli._output import data

        data(f"ollamads version {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Run DeepSeek V3.1 / V3 / R1 dynamic-quant GGUFs in a local Ollama."""


# The order `ollamads --help` lists them in: the main path first.
for module in (
    pipeline_commands, hub_commands, gguf_commands, ollama_commands, catalog_commands, plan_commands,
    bench_commands, chat_commands, webui_commands, worker_commands,
):
    module.register(app)
