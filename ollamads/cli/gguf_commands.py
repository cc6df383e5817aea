"""``ollamads merge``: split GGUF shards into one file, optionally with the fixed template."""

from pathlib import Path
from typing import Annotated

import typer

from ollamads.cli._options import DryRunOpt, ForceOpt, MergeMethodChoice
from ollamads.cli._output import data, stderr_console


def merge_command(
    first_shard: Annotated[Path, typer.Argument(help="The -00001-of-0000N.gguf shard.")],
    out: Annotated[Path, typer.Argument(help="The merged .gguf to write.")],
    method: Annotated[
        MergeMethodChoice,
        typer.Option(help="auto: llama-gguf-split when found, else the built-in merger."),
    ] = MergeMethodChoice.auto,
    gguf_split: Annotated[
        str | None,
        typer.Option("--gguf-split", help="Path of llama-gguf-split (else OLLAMADS_GGUF_SPLIT, PATH)."),
    ] = None,
    fix_template: Annotated[
        bool,
        typer.Option("--fix-template", help="Write Unsloth's fixed V3.1 chat template into the output (for llama.cpp --jinja)."),
    ] = False,
    force: ForceOpt = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Merge split GGUF shards into one file (what Ollama up to v0.24 needs)."""
    from ollamads.cli._progress import progress_display
    from ollamads.errors import OllamadsError
    from ollamads.gguf.merge import merge, merge_plan
    from ollamads.progress import bytes_callback

    if fix_template:
        from ollamads.catalog.families import guess_family
        from ollamads.gguf.format import read_gguf

        name = str(read_gguf(first_shard).value("general.name") or first_shard.name)
        if guess_family(name) != "v3.1":
            raise OllamadsError(
                f"--fix-template is for DeepSeek V3.1 / V3.1-Terminus GGUFs, not {name!r}",
                "merge without --fix-template",
            )
    if dry_run:
        plan = merge_plan(first_shard, out, method=method.value, binary=gguf_split, force=force)
        tool = f" ({plan.binary})" if plan.binary else ""
        data(plan.shards.describe())
        data(f"would write {plan.out} ({plan.nbytes:,} bytes) with {plan.method}{tool}")
        data(f"free disk: {plan.disk_free:,} bytes{'' if plan.enough_space else ' - NOT ENOUGH'}")
        return
    console = stderr_console()
    with progress_display(console) as progress:
        result = merge(
            first_shard, out, method=method.value, binary=gguf_split, force=force,
            progress=bytes_callback(progress, "merge", out.name),
        )
    changed = False
    if fix_template:
        from ollamads.gguf.retemplate import apply_fixed_template

        try:
            changed = apply_fixed_template(result.out, "v3.1")
        except BaseException:
            # Without the fix the output is not what was asked for: leave nothing under its
            # name, so that the same command works once the cause is gone.
            result.out.unlink(missing_ok=True)
            raise
    console.print(f"merged with {result.method}: {result.out} ({result.nbytes:,} bytes)")
    if fix_template:
        console.print("wrote the fixed V3.1 chat template" if changed else "the chat template was already the fixed one")


def register(app: typer.Typer) -> None:
    app.command("merge")(merge_command)
