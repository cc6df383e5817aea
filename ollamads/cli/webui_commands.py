"""``ollamads webui``: Open WebUI on the ollamads server, with defaults for these models."""

from pathlib import Path
from typing import Annotated

import typer

from ollamads.cli._options import HostOpt
from ollamads.cli._output import stderr_console


def webui(
    host: HostOpt = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port for Open WebUI on 127.0.0.1.")] = 8080,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Open WebUI's chats and database (default: ~/.local/share/ollamads/open-webui)."),
    ] = None,
    open_webui: Annotated[
        str | None, typer.Option("--open-webui", help="The open-webui executable (default: OLLAMADS_OPEN_WEBUI, then PATH).")
    ] = None,
) -> None:
    """Start Open WebUI (installed separately) wired to the Ollama server; Ctrl-C stops it.

    It listens on 127.0.0.1 only, without accounts. Background titles, tags and follow-ups are
    off and built-in tools are not sent, so a 671B model only answers what you ask.
    """
    from ollamads.cli._signals import run_in_foreground
    from ollamads.ollama.api import probe
    from ollamads.webui import OpenWebUI, WebUISettings, default_data_dir, find_open_webui, tested_version

    binary = find_open_webui(open_webui)  # not installed: the install command, before anything
    server = probe(host)
    settings = WebUISettings(ollama_url=server.host, data_dir=data_dir or default_data_dir(), port=port)
    console = stderr_console()
    ui = OpenWebUI(settings, binary=binary, die_with_parent=True)
    console.print(f"starting Open WebUI (checked with {tested_version()}) for Ollama {server.version} "
                  f"at {server.host}; log: {ui.log_path}", soft_wrap=True)
    ui.start()
    try:
        console.print(f"Open WebUI: {settings.url}", soft_wrap=True)
        run_in_foreground(ui)
    finally:
        ui.stop()


def register(app: typer.Typer) -> None:
    app.command()(webui)
