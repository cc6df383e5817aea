"""``ollamads create MODEL:QUANT``: Hub -> verified files -> (merge) -> Modelfile -> Ollama.

This module calls the catalog, the Hub, the GGUF tools and the Ollama server, and owns no I/O
details of its own. Idempotent: verified downloads are not fetched again, a finished merge is
recorded next to its output and reused, blobs the server already has are not uploaded, and a
model registered from the same files with the same definition is left as it is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ollamads.catalog import CatalogEntry, load_catalog
from ollamads.errors import HubError
from ollamads.gguf.merge import merge
from ollamads.gguf.shards import parse_shard_name
from ollamads.hub import PullPlan, PullResult, RemoteFile, paths_info, plan_pull, pull, repo_commit, tree
from ollamads.locking import exclusive
from ollamads.ollama.api import OllamaAPI, probe
from ollamads.ollama.modelfile import ModelDefinition, TemplateMode
from ollamads.ollama.register import sha256_file
from ollamads.ollama.serve import default_ollama_models
from ollamads.ollama.versions import ServerInfo
from ollamads.paths import ollamads_home, read_record, write_record
from ollamads.progress import Progress, bytes_callback
from ollamads.units import DiskNeed, check_space, shortfalls

Report = Callable[[str], None]
MERGE_RECORD_SUFFIX = ".ollamads.json"


# --- which files make a quant ----------------------------------------------------------------


def quant_files(entry: CatalogEntry, commit: str) -> list[RemoteFile]:
    """The quant's files at ``commit``: the published path first, then a name search."""
    repo, quant = entry.repo, entry.quant
    if quant.is_single_file:
        found = paths_info(repo, commit, [quant.path])  # type: ignore[list-item]
    elif quant.folder:
        found = tree(repo, commit, quant.folder)
    else:
        found = []
    chosen = entry.select(r.path for r in found)
    if not chosen:
        # Layout unpublished or changed: look for the quant's file names anywhere.
        found = tree(repo, commit)
        pattern = entry.shard_pattern
        chosen = sorted(r.path for r in found if pattern.fullmatch(PurePosixPath(r.path).name))
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


# --- create ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatePlan:
    entry: CatalogEntry
    name: str
    server: ServerInfo
    pull: PullPlan
    merged_path: Path | None  # where the merged file goes when the server needs one file
    merge_done: bool
    needs: tuple[DiskNeed, ...]

    def shortfalls(self) -> list[str]:
        """One line per filesystem that cannot hold what is planned for it."""
        return [s.describe() for s in shortfalls(self.needs)]


@dataclass(frozen=True)
class CreateResult:
    name: str
    server: ServerInfo
    files: tuple[Path, ...]
    modelfile: Path
    bytes_downloaded: int
    bytes_uploaded: int
    merged: bool
    created: bool  # False when the same model was already registered


def _merged_path(plan: PullPlan) -> Path | None:
    first = plan.files[0].local
    parsed = parse_shard_name(first.name)
    if len(plan.files) == 1 or parsed is None:
        return None
    return first.with_name(f"{parsed[0]}.gguf")


def _merge_record(merged: Path) -> Path:
    return merged.with_name(merged.name + MERGE_RECORD_SUFFIX)


def _merge_is_done(plan: PullPlan, merged: Path) -> bool:
    record = read_record(_merge_record(merged))
    sources = {f.local.name: f.digest for f in plan.files}
    return (
        record.get("sources") == sources
        and merged.is_file()
        and merged.stat().st_size == record.get("size")
    )


def server_store() -> Path | None:
    """The server's OLLAMA_MODELS when it is this machine's (as `ollamads serve` sets it)."""
    return default_ollama_models()


def plan_create(spec: str, *, name: str | None = None, host: str | None = None) -> CreatePlan:
    entry = load_catalog().resolve(spec)
    server = probe(host)
    if entry.prompt_family.can_think:
        server.require_think()
    pull_plan = plan_quant_pull(entry)
    merged = None if server.accepts_split_gguf else _merged_path(pull_plan)
    merge_done = merged is not None and _merge_is_done(pull_plan, merged)
    needs = []
    if not merge_done:
        needs.append(pull_plan.disk_need())
    if merged is not None and not merge_done:
        needs.append(DiskNeed("merged file", merged.parent, pull_plan.bytes_total))
    store = server_store()
    if store is not None:
        needs.append(DiskNeed("Ollama blobs", store, pull_plan.bytes_total))
        if server.accepts_split_gguf:
            # v0.30+ rewrites every GGUF layer once with llama-quantize at create time.
            needs.append(DiskNeed("Ollama's rewrite", store, pull_plan.bytes_total))
    return CreatePlan(
        entry=entry,
        name=name or entry.ollama_name,
        server=server,
        pull=pull_plan,
        merged_path=merged,
        merge_done=merge_done,
        needs=tuple(needs),
    )


def _registration_record(server: ServerInfo, name: str) -> Path:
    key = hashlib.sha256(f"{server.host}\0{name}".encode()).hexdigest()[:16]
    return ollamads_home() / "registered" / f"{key}.json"


def _is_registered(api: OllamaAPI, server: ServerInfo, name: str, request: Mapping[str, object]) -> bool:
    record = read_record(_registration_record(server, name))
    return record.get("request") == request and api.show(name) is not None


def create(
    spec: str,
    *,
    name: str | None = None,
    host: str | None = None,
    keep_shards: bool = True,
    template_mode: TemplateMode | None = None,
    parameters: Mapping[str, object] | None = None,
    merge_method: str = "auto",
    connections: int | None = None,
    report: Report = lambda line: None,
    progress: Progress | None = None,
) -> CreateResult:
    plan = plan_create(spec, name=name, host=host)
    check_space(plan.needs, plan.entry.spec,
                "free some space or point OLLAMADS_HOME / OLLAMA_MODELS at a bigger disk")
    server, entry = plan.server, plan.entry
    api = OllamaAPI(server.host)
    lock = ollamads_home() / "locks" / (hashlib.sha256(f"{server.host}\0{plan.name}".encode()).hexdigest()[:16])
    with exclusive(lock, f"creating {plan.name} on {server.host}"):
        downloaded = 0
        merged = plan.merged_path
        if plan.merge_done:
            assert merged is not None
            report(f"{merged.name} is already merged from verified shards")
            files: tuple[Path, ...] = (merged,)
            digests = {merged.name: str(read_record(_merge_record(merged))["sha256"])}
        else:
            result = pull(plan.pull, progress=progress, connections=connections)
            downloaded = result.bytes_downloaded
            report(f"{len(result.paths)} file(s) present and verified ({downloaded:,} bytes downloaded)")
            files, digests = result.paths, result.digests
            if merged is not None:
                report(f"Ollama {server.version} cannot load split GGUFs: merging {len(files)} shards")
                outcome = merge(files[0], merged, method=merge_method, force=True,  # type: ignore[arg-type]
                                progress=bytes_callback(progress, "merge", merged.name))
                digest = sha256_file(merged, bytes_callback(progress, "verify", merged.name))
                write_record(
                    _merge_record(merged),
                    {"sources": {f.local.name: f.digest for f in plan.pull.files},
                     "size": merged.stat().st_size, "sha256": digest},
                )
                report(f"merged with {outcome.method}: {merged}")
                if not keep_shards:
                    for shard in files:
                        shard.unlink(missing_ok=True)
                    report("deleted the shards (--delete-shards)")
                files, digests = (merged,), {merged.name: digest}

        definition = ModelDefinition.for_family(
            plan.name, entry.prompt_family, list(files), server=server, mode=template_mode,
            parameters={**entry.parameters, **(parameters or {})},
            title=f"{entry.model.title} {entry.quant.hub_name} ({entry.repo})",
        )
        modelfile = files[0].parent / f"Modelfile.{server.line}"
        modelfile.write_text(definition.modelfile(f"Ollama {server.version}"), encoding="utf-8")

        uploaded = 0
        for path in files:
            uploaded += api.push_blob(path, digests[path.name], bytes_callback(progress, "upload", path.name))
        request = definition.create_request(digests)
        created = not _is_registered(api, server, plan.name, request)
        if created:
            api.create(request, on_status=lambda s: report(f"ollama: {s}"))
            write_record(_registration_record(server, plan.name), {"request": request})
        else:
            report(f"{plan.name} is already registered from these files")
    return CreateResult(
        name=plan.name, server=server, files=files, modelfile=modelfile,
        bytes_downloaded=downloaded, bytes_uploaded=uploaded, merged=merged is not None, created=created,
    )
