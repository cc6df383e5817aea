"""`ollamads list`, `ollamads show` and `ollamads modelfiles`: the catalog, read-only."""

from pathlib import Path
from typing import Annotated, Any

import typer

from ollamads.cli._options import JsonOpt
from ollamads.cli._output import data, data_json, message, stdout_console

RefreshOpt = Annotated[
    bool, typer.Option("--refresh", help="Read the Hub's listing for every catalog repo first (sizes, shards).")
]


def _entry_record(known: Any, machine: Any) -> dict[str, Any]:
    from ollamads.plan.family import plan_entry
    from ollamads.plan.recommend import PlanRequest, fits_machine
    from ollamads.units import GIB

    entry, size = known.entry, known.size_bytes
    # The same model as `ollamads plan`: exact when the quant's headers were read before,
    # else estimated from the published size; the catalog's context, a q8_0 KV cache.
    ctx = entry.parameters.get("num_ctx", 16384)
    plan = plan_entry(entry, machine, PlanRequest(ctx=int(ctx), kv_type="q8_0"))
    return {
        "model": entry.model.key,
        "quant": entry.quant.name,
        "hub_name": entry.quant.hub_name,
        "repo": entry.repo,
        "path": entry.quant.path,
        "moe_bits": entry.quant.moe_bits,
        "size_bytes": size,
        # Binary units, as everywhere in ollamads (Unsloth's published "GB" are GiB too).
        "size_gib": round(size / GIB, 1) if size else None,
        "shards": known.shards,
        "on_hub": known.on_hub,
        "figures_from": known.source,
        "fetched": known.fetched,
        "family": entry.prompt_family.name,
        "thinking": entry.model.thinking,
        "ollama_name": entry.ollama_name,
        "fit": plan.fit if plan else None,
        "fit_exact": plan.memory.exact if plan else None,
        "fits_memory": fits_machine(plan.fit) if plan else None,
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


def _records(refresh: bool, entries: Any = None) -> list[dict[str, Any]]:
    from ollamads.listing import known_entries
    from ollamads.listing import refresh as refresh_listing

    if refresh:
        refresh_listing(message)
    machine = _machine()
    return [_entry_record(k, machine) for k in known_entries(entries)]


def list_command(as_json: JsonOpt = False, refresh: RefreshOpt = False) -> None:
    """Every DeepSeek model and quant ollamads knows, and whether it fits this machine."""
    from rich import box
    from rich.table import Table

    records = _records(refresh)
    if as_json:
        data_json(records)
        return
    machine = _machine()
    from ollamads.cli.plan_commands import short_fit
    from ollamads.units import format_bytes

    fetched = sorted({r["fetched"] for r in records if r["fetched"]})
    title = (f"sizes from the Hub's listing of {fetched[-1]}" if fetched
             else "sizes as published (`ollamads list --refresh` asks the Hub)")
    table = Table(
        title=title, box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left",
        caption=f"this machine: {machine.describe()}, {format_bytes(machine.disk_free)} free disk\n"
                "fits: where `ollamads plan` puts it (GPU, GPU+RAM, RAM; disk: pages from disk);"
                " ~ estimated from the published size", caption_justify="left",
    )
    # The names never wrap or shrink: V3.1, V3.1-Terminus and V3-0324 differ only at the end.
    table.add_column("model", no_wrap=True, min_width=max(len(r["model"]) for r in records))
    table.add_column("quant", no_wrap=True)
    for column in ("bits", "GiB", "files", "fits", "disk"):
        table.add_column(column, justify="right" if column in ("bits", "GiB", "files") else "left",
                         no_wrap=True)
    previous = None
    for r in records:
        table.add_row(
            r["model"] if r["model"] != previous else "", r["quant"], str(r["moe_bits"] or "?"),
            f"{r['size_gib']:.1f}" if r["size_gib"] else ("none" if r["on_hub"] is False else "?"),
            str(r["shards"] or "?"), short_fit(r["fit"], bool(r["fit_exact"])), _yes_no(r["fits_disk"]),
        )
        previous = r["model"]
    stdout_console().print(table)


def show_command(
    model: Annotated[str, typer.Argument(help="Catalog model and quant, e.g. r1:IQ1_S.")],
    as_json: JsonOpt = False,
    refresh: RefreshOpt = False,
) -> None:
    """Everything about one catalog entry, including the Modelfile `create` would write."""
    from ollamads.catalog import resolve
    from ollamads.rendered import LINES, entry_definition

    entry = resolve(model)
    (record,) = _records(refresh, [entry])
    modelfiles = {}
    for line, server in LINES.items():
        header = f"Ollama {line.removeprefix('ollama-')}"
        definition = entry_definition(entry, server)
        modelfiles[line] = definition.modelfile(header)
        for companion in definition.companions:  # keyed by the name: "ollama-0.24 <name>-think"
            modelfiles[f"{line} {companion.name}"] = companion.modelfile(header)
    record["modelfiles"] = modelfiles
    if as_json:
        data_json(record)
        return
    data(describe_entry(record))
    for key, text in record["modelfiles"].items():
        line, _, name = key.partition(" ")
        name = name or record["ollama_name"]
        data(f"\n--- Modelfile of {name} on Ollama {line.removeprefix('ollama-')} ---\n{text}", newline=False)


_THINKING = {
    "hybrid": "answers without reasoning unless asked; {name}{think} reasons unless asked not to",
    "always": "always reasons",
    "never": "never reasons",
}


def _parameter_text(value: object) -> str:
    """A parameter as its Modelfile line writes it (a list: each value)."""
    from ollamads.ollama.modelfile import format_parameter

    if isinstance(value, (list, tuple)):
        return " ".join(_parameter_text(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else format_parameter(value)


def describe_entry(record: dict[str, Any]) -> str:
    """``ollamads show``'s text: what the entry is, its size, whether it fits, its settings."""
    from ollamads.ollama.modelfile import THINKING_TAG_SUFFIX
    from ollamads.plan.recommend import SPEED
    from ollamads.units import format_bytes

    size = record["size_bytes"]
    if size:
        where = (f"the Hub's listing of {record['fetched']}" if record["figures_from"] == "hub"
                 else "as published (`--refresh` reads the Hub's listing)")
        size_text = f"{format_bytes(size)} ({size:,} bytes), {where}"
    else:
        size_text = "not published (`--refresh` reads the Hub's listing)"
    files = "1 file" if record["shards"] == 1 else f"{record['shards']} shards" if record["shards"] else "?"
    if record["on_hub"] is False:
        files += "; not on the Hub at its last listing"
    fit = record["fit"]
    fit_text = "?" if fit is None else f"{fit}: {SPEED[fit]}"
    if fit is not None and not record["fit_exact"]:
        fit_text += " (estimated from the published size until `ollamads plan` reads its headers)"
    disk = {True: "room for it", False: "not enough free", None: "?"}[record["fits_disk"]]
    thinking = _THINKING.get(record["thinking"], record["thinking"]).format(
        name=record["ollama_name"], think=THINKING_TAG_SUFFIX)
    parameters = ", ".join(f"{k} {_parameter_text(v)}" for k, v in record["parameters"].items())
    rows = [
        ("Ollama name", record["ollama_name"]),
        ("Hub", f"{record['repo']}, {record['hub_name']}: {record['path'] or '?'} ({files})"),
        ("size", size_text),
        ("MoE bits", str(record["moe_bits"] or "?")),
        ("prompt", f"{record['family']} family; {thinking}"),
        ("fits", fit_text),
        ("disk", disk),
        ("parameters", parameters or "none"),
        ("source", record["source"]),
    ]
    width = max(len(label) for label, _ in rows)
    head = f"{record['model']}:{record['quant']}"
    return "\n".join([head, *(f"  {label:<{width}}  {value}" for label, value in rows)])


def modelfiles_command(
    write: Annotated[bool, typer.Option("--write", help="Rewrite modelfiles/ instead of checking it.")] = False,
    directory: Annotated[Path | None, typer.Option(help="Default: the repository's modelfiles/.")] = None,
) -> None:
    """Check (or --write) the rendered Modelfiles of every catalog entry."""
    from ollamads._resources import modelfiles_dir
    from ollamads.errors import OllamadsError
    from ollamads.rendered import stale, write_all

    target = directory or modelfiles_dir()
    if write:
        data(f"wrote {len(write_all(target))} Modelfiles under {target}")
        return
    changed = stale(target)
    if changed:
        raise OllamadsError(
            f"{len(changed)} Modelfiles under {target} are out of date (e.g. {changed[0]})",
            "run `ollamads modelfiles --write` and commit the result",
        )
    data("modelfiles are up to date")


def register(app: typer.Typer) -> None:
    app.command("list")(list_command)
    app.command("show")(show_command)
    app.command("modelfiles", hidden=True)(modelfiles_command)
