"""`ollamads list`, `ollamads show` and `ollamads modelfiles`: the catalog, read-only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ollamads.cli._options import JsonOpt

GIB = 1 << 30  # Unsloth's published "GB" are GiB (the Hub's byte counts say so)


def _entry_record(entry: Any, machine: Any) -> dict[str, Any]:
    size = int(entry.quant.size_gb * GIB) if entry.quant.size_gb else None
    return {
        "model": entry.model.key,
        "quant": entry.quant.name,
        "hub_name": entry.quant.hub_name,
        "repo": entry.repo,
        "path": entry.quant.path,
        "moe_bits": entry.quant.moe_bits,
        "size_gb": entry.quant.size_gb,
        "shards": entry.quant.shards,
        "family": entry.prompt_family.name,
        "thinking": entry.model.thinking,
        "ollama_name": entry.ollama_name,
        "fits_memory": machine.fits_memory(size) if size else None,
        "fits_disk": machine.fits_disk(size) if size else None,
        "parameters": dict(entry.parameters),
        "source": entry.quant.source,
    }


def _machine() -> Any:
    from ollamads.hardware import this_machine
    from ollamads.paths import models_dir

    return this_machine(models_dir())


def _yes_no(value: bool | None) -> str:
    return "?" if value is None else ("yes" if value else "no")


def list_command(as_json: JsonOpt = False) -> None:
    """Every DeepSeek model and quant ollamads knows, and whether it fits this machine."""
    from rich.console import Console
    from rich.table import Table

    from ollamads.catalog import load_catalog

    machine = _machine()
    records = [_entry_record(e, machine) for e in load_catalog().entries()]
    if as_json:
        typer.echo(json.dumps(records, indent=1, ensure_ascii=False))
        return
    table = Table(title=f"RAM {machine.ram / GIB:.0f} GiB + VRAM {machine.vram / GIB:.0f} GiB, "
                        f"{machine.disk_free / GIB:.0f} GiB free disk")
    for column in ("model", "quant", "bits", "size", "shards", "fits RAM+VRAM", "fits disk"):
        table.add_column(column)
    for r in records:
        table.add_row(
            r["model"], r["quant"], str(r["moe_bits"] or "?"),
            f"{r['size_gb']} GB" if r["size_gb"] else "?", str(r["shards"] or "?"),
            _yes_no(r["fits_memory"]), _yes_no(r["fits_disk"]),
        )
    Console().print(table)


def show_command(
    model: Annotated[str, typer.Argument(help="Catalog model and quant, e.g. r1:IQ1_S.")],
    as_json: JsonOpt = False,
) -> None:
    """Everything about one catalog entry, including the Modelfile `create` would write."""
    from ollamads.catalog import resolve
    from ollamads.catalog.rendered import LINES, entry_definition

    entry = resolve(model)
    record = _entry_record(entry, _machine())
    modelfiles = {}
    for line, server in LINES.items():
        header = f"Ollama {line.removeprefix('ollama-')}"
        definition = entry_definition(entry, server)
        modelfiles[line] = definition.modelfile(header)
        for companion in definition.companions:  # keyed by the name: "ollama-0.24 <name>-think"
            modelfiles[f"{line} {companion.name}"] = companion.modelfile(header)
    record["modelfiles"] = modelfiles
    if as_json:
        typer.echo(json.dumps(record, indent=1, ensure_ascii=False))
        return
    for key, value in record.items():
        if key != "modelfiles":
            typer.echo(f"{key:13} {value}")
    for line, text in record["modelfiles"].items():
        typer.echo(f"\n--- Modelfile for {line} ---\n{text}", nl=False)


def modelfiles_command(
    write: Annotated[bool, typer.Option("--write", help="Rewrite modelfiles/ instead of checking it.")] = False,
    directory: Annotated[Optional[Path], typer.Option(help="Default: the repository's modelfiles/.")] = None,
) -> None:
    """Check (or --write) the rendered Modelfiles of every catalog entry."""
    from ollamads._resources import modelfiles_dir
    from ollamads.catalog.rendered import stale, write_all
    from ollamads.errors import OllamadsError

    target = directory or modelfiles_dir()
    if write:
        typer.echo(f"wrote {len(write_all(target))} Modelfiles under {target}")
        return
    changed = stale(target)
    if changed:
        raise OllamadsError(
            f"{len(changed)} Modelfiles under {target} are out of date (e.g. {changed[0]})",
            "run `ollamads modelfiles --write` and commit the result",
        )
    typer.echo("modelfiles are up to date")


def register(app: typer.Typer) -> None:
    app.command("list")(list_command)
    app.command("show")(show_command)
    app.command("modelfiles", hidden=True)(modelfiles_command)
