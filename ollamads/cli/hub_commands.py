"""``ollamads pull``: fetch a catalog model's GGUF files, resumably and verified.

Register on the main app with ``register(app)`` (or ``app.command("pull")(pull_command)``).
This module imports nothing heavy at import time, so ``ollamads --help`` stays instant.
"""

from typing import TYPE_CHECKING

import typer

from ollamads.cli._options import ConnectionsOpt, DryRunOpt, ModelArg, RevisionOpt
from ollamads.cli._output import data, stderr_console

if TYPE_CHECKING:
    from ollamads.hub import PullPlan


_STATE_WORDS = {
    "verified": "ok",
    "partial": "partial",
    "missing": "to fetch",
    "mismatch": "differs, refetch",
}


def format_plan(plan: "PullPlan") -> str:
    """The plan as a few lines of text: one per file, then the totals and the disk check."""
    from ollamads.units import format_bytes as _gb

    lines = [f"{plan.label} from {plan.repo} at {plan.revision[:12]}, into {plan.directory}"]
    width = max(len(f.path) for f in plan.files)
    for f in plan.files:
        state = _STATE_WORDS[f.state]
        if f.state == "partial":
            state += f" ({_gb(f.have)} on disk)"
        lines.append(f"  {f.path:<{width}}  {_gb(f.size):>9}  {state}")
    verdict = (
        "fits"
        if plan.fits
        else f"does NOT fit: free {_gb(plan.disk_needed - plan.disk_free)} more"
    )
    lines.append(
        f"total {_gb(plan.bytes_total)}: {_gb(plan.bytes_verified)} verified, "
        f"{_gb(plan.bytes_partial)} partial, "
        f"{_gb(plan.bytes_to_download)} to download; {_gb(plan.disk_free)} free ({verdict})"
    )
    return "\n".join(lines)


def pull_command(
    model: ModelArg, dry_run: DryRunOpt = False, revision: RevisionOpt = None,
    connections: ConnectionsOpt = None,
) -> None:
    """Download a model's GGUF files: many connections, resumable, sha256-verified."""
    from ollamads.catalog import resolve
    from ollamads.cli._progress import progress_display
    from ollamads.quant_pull import pull_quant
    from ollamads.units import format_bytes

    entry = resolve(model)
    if dry_run:
        result = pull_quant(entry, dry_run=True, revision=revision)
        data(format_plan(result.plan))
        return
    console = stderr_console()
    with progress_display(console) as progress:
        result = pull_quant(entry, progress=progress, revision=revision, connections=connections)
    console.print(
        f"{entry.spec}: {len(result.paths)} file(s) verified in {result.plan.directory} "
        f"({format_bytes(result.bytes_downloaded)} downloaded)",
        soft_wrap=True,
    )
    # stdout carries only the first file, for scripts:
    #   ollamads merge "$(ollamads pull r1:IQ1_S)" r1.gguf
    data(str(result.paths[0]))


def register(app: typer.Typer) -> None:
    app.command("pull")(pull_command)


__all__ = ["format_plan", "pull_command", "register"]
