"""Which files make a catalog quant on the Hub, and pulling them: ``ollamads pull``.

Apart from ``pipeline`` (which goes on to Ollama) so that a pull loads nothing of Ollama's
side: no Modelfile templates, no server API, no registration.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from ollamads.catalog import CatalogEntry
from ollamads.errors import HubError
from ollamads.hub import PullPlan, PullResult, RemoteFile, paths_info, plan_pull, pull, repo_commit, tree
from ollamads.progress import Progress
from ollamads.shardnames import parse_shard_name

# --- which files make a quant ----------------------------------------------------------------


def quant_files(entry: CatalogEntry, commit: str) -> list[RemoteFile]:
    """The quant's files at ``commit``: the published path first, then a name search."""
    repo, quant = entry.repo, entry.quant
    if quant.is_single_file and quant.path is not None:
        found = paths_info(repo, commit, [quant.path])
    elif quant.folder:
        found = tree(repo, commit, quant.folder)
    else:
        found = []
    chosen = entry.select(r.path for r in found)
    if not chosen:
        # Layout unpublished or changed: look for the quant's file names anywhere.
        found = tree(repo, commit)
        chosen = sorted(r.path for r in found if entry.is_own_file(PurePosixPath(r.path).name))
    if not chosen:
        where = f" (looked in {quant.path})" if quant.path else ""
        raise HubError(
            f"{repo} has no {quant.hub_name} files at revision {commit[:12]}{where}",
            f"that quant may not be published for {entry.model.title}; see the repo's file list",
        )
    by_path = {r.path: r for r in found}
    files = [by_path[p] for p in chosen]
    _check_complete(entry, [f.path for f in files])
    return files


def _check_complete(entry: CatalogEntry, paths: list[str]) -> None:
    """A split set on the Hub must be whole: 1..N of N, once each."""
    parsed = [parse_shard_name(PurePosixPath(p).name) for p in paths]
    if len(paths) == 1 and parsed[0] is None:
        return
    counts = {p[2] for p in parsed if p}
    numbers = sorted(p[1] for p in parsed if p)
    if None in parsed or len(counts) != 1 or numbers != list(range(1, counts.pop() + 1)):
        raise HubError(
            f"{entry.repo} lists an incomplete or mixed shard set for {entry.quant.hub_name}: "
            + ", ".join(PurePosixPath(p).name for p in paths),
            "the upload may be in progress; try again later",
        )


def plan_quant_pull(entry: CatalogEntry, *, revision: str | None = None) -> PullPlan:
    commit = repo_commit(entry.repo, revision)
    return plan_pull(entry.repo, commit, quant_files(entry, commit), label=entry.spec)


def pull_quant(
    entry: CatalogEntry,
    *,
    progress: Progress | None = None,
    connections: int | None = None,
    dry_run: bool = False,
    revision: str | None = None,
) -> PullResult:
    """Make every file of ``entry`` present and verified; with ``dry_run`` only plan."""
    plan = plan_quant_pull(entry, revision=revision)
    if dry_run:
        return PullResult(plan, plan.paths, 0, (), dry_run=True)
    return pull(plan, progress=progress, connections=connections)
