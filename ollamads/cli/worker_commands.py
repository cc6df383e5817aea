"""``ollamads worker`` (a machine lending its memory) and the head side of ``serve --workers``."""

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ollamads.cli._output import ready, stderr_console, warning

if TYPE_CHECKING:
    from rich.console import Console

    from ollamads.ollama.serve import OllamaServe, ServeSettings
    from ollamads.rpc.head import HeadPlan

WATCH_INTERVAL_S = 0.5


def worker(
    host: Annotated[
        str,
        typer.Option(help="IPv4 address to listen on; anything but loopback needs --allow-remote."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 50052,
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote",
            help="Listen on a non-loopback address. The RPC protocol has no authentication or "
            "encryption: trusted networks only.",
        ),
    ] = False,
    mem: Annotated[
        str | None,
        typer.Option(
            "--mem",
            help="Cap each device at this much memory, e.g. 64GiB (rpc-server has no cap of its "
            "own: a relay in front of it enforces this one).",
        ),
    ] = None,
    cache: Annotated[
        bool, typer.Option("--cache", help="Keep large tensors in llama.cpp's local cache, so reloads skip sending them.")
    ] = False,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="LLAMA_CACHE for rpc-server (implies --cache; files go to DIR/rpc).")
    ] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads (rpc-server's default: half the cores).")] = None,
    device: Annotated[
        list[str] | None,
        typer.Option("--device", help="Device(s) to expose, e.g. CUDA0 (default: every GPU, else the CPU)."),
    ] = None,
    rpc_server: Annotated[
        str | None,
        typer.Option("--rpc-server", help="llama.cpp's rpc-server (default: OLLAMADS_RPC_SERVER, then PATH)."),
    ] = None,
    log: Annotated[Path | None, typer.Option(help="rpc-server's log (default: <home>/worker-PORT.log).")] = None,
) -> None:
    """Lend this machine's memory to a head node: run llama.cpp's rpc-server; Ctrl-C stops it."""
    from ollamads.cli._signals import exit_on_signals
    from ollamads.errors import WorkerError
    from ollamads.paths import ollamads_home
    from ollamads.rpc.worker import SECURITY_WARNING, RpcWorker, worker_settings
    from ollamads.units import format_mib

    console = stderr_console()
    devices = tuple(name.strip() for item in device or [] for name in item.split(",") if name.strip())
    settings = worker_settings(
        binary=rpc_server, host=host, port=port, allow_remote=allow_remote, memory_cap=mem,
        cache=cache, cache_dir=cache_dir, threads=threads, devices=devices,
    )
    if settings.exposed:
        warning(f"listening on {settings.host}. {SECURITY_WARNING}")
    log_path = log or ollamads_home() / f"worker-{settings.port}.log"
    running = RpcWorker(settings, log_path)
    try:
        with exit_on_signals():
            answer = running.start()
            # Only now: a failed start is one line (its output is in the log).
            running.child.on_line = lambda line: console.print(
                f"rpc-server: {line}", style="dim", soft_wrap=True, markup=False, highlight=False
            )
            memory = ", ".join(f"{format_mib(d.free)} free of {format_mib(d.total)}" for d in answer.devices)
            cap = f" (capped at {format_mib(settings.memory_cap)} per device)" if settings.memory_cap else ""
            console.print(f"rpc-server {answer.version_text} ({settings.binary}) serves {memory}{cap}", soft_wrap=True)
            if settings.cache_path:
                console.print(f"  cache: {settings.cache_path}")
            console.print(f"  log: {log_path}")
            console.print(f"  on the head node: ollamads serve --workers {','.join(settings.advertised())}", soft_wrap=True)
            ready()
            code = running.exit_code()
            raise WorkerError(f"rpc-server exited with code {code}", f"see its log {log_path}")
    finally:
        running.stop()
        if running.relay is not None:
            traffic = running.relay.traffic
            console.print(
                f"relayed {traffic.from_head:,} bytes from and {traffic.to_head:,} bytes to the head; "
                f"{running.relay.refused} allocation(s) refused by the cap", soft_wrap=True,
            )


def prepare_workers(workers: str, ollama_binary: str | None) -> "HeadPlan":
    """``serve --workers``: every check, before the server or its store is touched."""
    from ollamads.ollama.serve import find_ollama
    from ollamads.rpc.endpoints import parse_workers
    from ollamads.rpc.head import prepare_head

    endpoints = parse_workers(workers)
    return prepare_head(find_ollama(ollama_binary), endpoints)


def with_workers(settings: "ServeSettings", head: "HeadPlan") -> "ServeSettings":
    """The serve settings plus ``LLAMA_ARG_RPC``, which llama-server inherits from Ollama."""
    import dataclasses

    return dataclasses.replace(settings, environment={**settings.environment, **head.environment})


def report_workers(console: "Console", head: "HeadPlan") -> None:
    console.print(f"  {len(head.workers)} RPC worker(s), memory as llama-server sees it:")
    for report in head.workers:
        console.print(f"    {report.describe()}", soft_wrap=True, highlight=False)


def watch_workers(console: "Console", server: "OllamaServe", head: "HeadPlan") -> None:
    """Until the server exits: say which worker failed whenever llama-server loses one."""
    from ollamads.cli._errors import error_line
    from ollamads.rpc.head import WorkerWatch

    watch = WorkerWatch(server.log_path, [w.endpoint for w in head.workers])
    assert server.process is not None
    while server.process.poll() is None:
        for error in watch.poll():
            console.print(error_line(error), soft_wrap=True, markup=False, highlight=False)
        time.sleep(WATCH_INTERVAL_S)


def register(app: typer.Typer) -> None:
    app.command()(worker)
