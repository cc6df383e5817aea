"""Where a model's tensor table comes from: local GGUF files, or the Hub's headers by Range.

* A path: the file (or the first shard of a split set, every shard checked) is read from disk.
* A catalog ``MODEL:QUANT``: the Hub lists the quant's files at one commit; for each file a
  local copy that ollamads verified is read, else its first bytes are fetched with Range
  requests (4 MiB, doubled until the header fits) and cached, so a second plan reads nothing.
  The listing is remembered, so ``list`` and a plan without network reuse the cached headers.
* Without any of that, :mod:`ollamads.plan.reference` estimates from the published size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ollamads.catalog import CatalogEntry
from ollamads.errors import HubError, OllamadsError
from ollamads.gguf.format import read_gguf
from ollamads.hub.listing import RemoteFile
from ollamads.hub.records import STATE_DIR
from ollamads.paths import local_path, read_record, repo_dir, write_record
from ollamads.plan.memory import ModelMemory, model_memory
from ollamads.plan.reference import published_size_memory
from ollamads.quant_headers import header_offline, quant_headers
from ollamads.units import GIB


@dataclass(frozen=True)
class ModelSource:
    """A model's memory and where its bytes live (what llama-server would be pointed at)."""

    label: str
    memory: ModelMemory
    #: The first (or only) GGUF file, local or where ``ollamads pull`` puts it.
    model_path: Path
    entry: CatalogEntry | None = None
    #: Header bytes read from the Hub by this call (0: local files or cached headers).
    fetched: int = 0


# --- local files ---------------------------------------------------------------------------


def local_source(path: Path) -> ModelSource:
    """A GGUF file or the first shard of a split set on disk."""
    from ollamads.gguf.shards import open_shard_set

    if not path.is_file():
        raise OllamadsError(f"{path} does not exist", "pass a .gguf file or MODEL:QUANT from `ollamads list`")
    shard_set = open_shard_set(path)
    headers = shard_set.headers or tuple(read_gguf(p) for p in shard_set.paths)
    memory = model_memory(headers, name=path.name, source="local files")
    return ModelSource(path.name, memory, path)


# --- the Hub -------------------------------------------------------------------------------


def _listing_record(entry: CatalogEntry) -> Path:
    return repo_dir(entry.repo) / STATE_DIR / f"plan-{entry.quant.hub_name}.json"


def _remember_listing(entry: CatalogEntry, commit: str, remotes: list[RemoteFile]) -> None:
    write_record(_listing_record(entry), {
        "commit": commit,
        "files": [[r.path, r.size, r.sha256, r.git_oid] for r in remotes],
    })


def _remembered_listing(entry: CatalogEntry) -> tuple[str, list[RemoteFile]] | None:
    record = read_record(_listing_record(entry))
    try:
        files = [RemoteFile(str(p), int(s), h, str(g)) for p, s, h, g in record["files"]]
        return str(record["commit"]), files
    except (KeyError, TypeError, ValueError):
        return None


def hub_source(entry: CatalogEntry, *, revision: str | None = None) -> ModelSource:
    """The quant's tensor table: verified local files, cached headers, else Range requests."""
    from ollamads.hub.listing import repo_commit
    from ollamads.quant_pull import quant_files

    try:
        commit = repo_commit(entry.repo, revision)
        remotes = quant_files(entry, commit)
    except HubError as exc:
        offline = cached_source(entry) if revision is None else None
        if offline is None:
            raise HubError(
                f"{exc.message}; no cached header of {entry.spec} to plan from", exc.hint
            ) from exc
        return offline
    headers, fetched = quant_headers(entry, commit, remotes)
    _remember_listing(entry, commit, remotes)
    memory = model_memory(headers, name=entry.spec, source="Hub headers")
    return ModelSource(entry.spec, memory, local_path(entry.repo, remotes[0].path), entry, fetched)


def cached_source(entry: CatalogEntry) -> ModelSource | None:
    """From what an earlier plan or pull left on disk, without asking the Hub; None if not all
    of it is there."""
    listing = _remembered_listing(entry)
    if listing is None:
        return None
    _, remotes = listing
    headers = []
    for remote in remotes:
        header = header_offline(entry.repo, remote)
        if header is None:
            return None
        headers.append(header)
    memory = model_memory(headers, name=entry.spec, source="Hub headers")
    return ModelSource(entry.spec, memory, local_path(entry.repo, remotes[0].path), entry)


def estimated_source(entry: CatalogEntry) -> ModelSource | None:
    """The published-size estimate (None when no size was published)."""
    if not entry.quant.size_gib:
        return None
    memory = published_size_memory(entry.spec, int(entry.quant.size_gib * GIB))
    first = entry.quant.path or f"{entry.model.file_prefix}-{entry.quant.hub_name}.gguf"
    return ModelSource(entry.spec, memory, local_path(entry.repo, first.rstrip("/")), entry)


def offline_source(entry: CatalogEntry) -> ModelSource | None:
    """Exact when cached, else estimated; never the network (what ``list`` uses)."""
    return cached_source(entry) or estimated_source(entry)


def resolve_source(model: str, *, revision: str | None = None) -> ModelSource:
    """``MODEL:QUANT`` from the catalog, or a path to a GGUF file."""
    from ollamads.catalog import resolve

    candidate = Path(model).expanduser()
    if model.endswith(".gguf") or candidate.is_file():
        return local_source(candidate)
    return hub_source(resolve(model), revision=revision)


__all__ = [
    "ModelSource",
    "cached_source",
    "estimated_source",
    "hub_source",
    "local_source",
    "offline_source",
    "resolve_source",
]
