"""``ollamads create MODEL:QUANT``: Hub -> verified files -> (merge) -> Modelfile -> Ollama.

This module calls the catalog, the Hub, the GGUF tools and the Ollama server, and owns no I/O
details of its own. Idempotent: verified downloads are not fetched again, a finished merge is
recorded next to its output and reused, blobs the server already has are not uploaded, and a
model registered from the same files with the same definition is left as it is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ollamads.catalog import CatalogEntry, load_catalog
from ollamads.fileio import write_small_file
from ollamads.gguf.shards import parse_shard_name
from ollamads.hub import PullPlan, pull
from ollamads.locking import exclusive
from ollamads.ollama.api import OllamaAPI, probe
from ollamads.ollama.modelfile import THINKING_TAG_SUFFIX, ModelDefinition, TemplateMode
from ollamads.ollama.store import Placement, StoreCheck, find_store
from ollamads.ollama.versions import ServerInfo
from ollamads.paths import ollamads_home, read_record, write_record
from ollamads.progress import Progress
from ollamads.quant_pull import plan_quant_pull
from ollamads.registration import (
    Route,
    check_tensor_types,
    choose_route,
    describe_route,
    disk_needs,
    merged_name,
    plan_registration,
    register_files,
)
from ollamads.units import DiskNeed, check_space, shortfalls

Report = Callable[[str], None]


# --- create ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatePlan:
    entry: CatalogEntry
    name: str
    server: ServerInfo
    pull: PullPlan
    route: Route
    store: StoreCheck
    #: <= v0.24 with split files and no local store: the merged file is written here, then sent.
    merged_path: Path | None
    needs: tuple[DiskNeed, ...]
    delete_shards: bool = False

    def shortfalls(self) -> list[str]:
        """One line per filesystem that cannot hold what is planned for it."""
        return [s.describe() for s in shortfalls(self.needs)]

    def describe_route(self) -> str:
        return f"{self.route}: {describe_route(self.route, self.server)} ({self.store.reason})"

    def notes(self) -> list[str]:
        """What a user should know before the download starts: an untested server, a store
        that files cannot be placed in (and how to allow it)."""
        said = [note for note in (self.server.untested_note(), self.store.fix) if note]
        return said


@dataclass(frozen=True)
class CreateResult:
    name: str
    server: ServerInfo
    route: Route
    files: tuple[Path, ...]
    modelfile: Path
    bytes_downloaded: int
    bytes_uploaded: int
    bytes_written: int
    placements: Mapping[str, Placement]
    created: bool  # False when the same model was already registered
    deleted_shards: bool = False
    #: Further names on the same blobs (a V3.1 model's thinking name).
    companions: tuple[str, ...] = ()


def _merged_path(plan: PullPlan) -> Path | None:
    first = plan.files[0].local
    if len(plan.files) == 1 or parse_shard_name(first.name) is None:
        return None
    return first.with_name(merged_name(first.name))


def check_readable_quant(entry: CatalogEntry, server: ServerInfo, pull_plan: PullPlan) -> None:
    """Refuse a quant whose tensor types the server cannot read before a byte of it is
    downloaded: its headers come from verified local files, a cache, or Range requests."""
    if not server.unreadable_tensor_types:
        return
    from ollamads.quant_headers import quant_headers

    headers, _ = quant_headers(entry, pull_plan.revision, [f.remote for f in pull_plan.files])
    check_tensor_types(server, headers, pull_plan.files[0].local.name)


def plan_create(
    spec: str, *, name: str | None = None, host: str | None = None, delete_shards: bool = False
) -> CreatePlan:
    entry = load_catalog().resolve(spec)
    server = probe(host)
    if entry.prompt_family.can_think:
        server.require_think()
    pull_plan = plan_quant_pull(entry)
    check_readable_quant(entry, server, pull_plan)
    store = find_store(server)
    split = len(pull_plan.files) > 1
    route = choose_route(server, store.store, split=split)
    merged = _merged_path(pull_plan) if route == "upload" and split and server.gguf_handling == "merge" else None
    needs = [pull_plan.disk_need()]
    needs += disk_needs(route, server, store, size=pull_plan.bytes_total,
                        files_dir=pull_plan.directory, merged_path=merged)
    return CreatePlan(entry, name or entry.ollama_name, server, pull_plan, route, store, merged,
                      tuple(needs), delete_shards)


def create(
    spec: str,
    *,
    name: str | None = None,
    host: str | None = None,
    keep_shards: bool = True,
    template_mode: TemplateMode | None = None,
    parameters: Mapping[str, object] | None = None,
    connections: int | None = None,
    report: Report = lambda line: None,
    progress: Progress | None = None,
) -> CreateResult:
    """Download, verify, and register ``spec`` by the cheapest route the server allows."""
    plan = plan_create(spec, name=name, host=host, delete_shards=not keep_shards)
    server, entry = plan.server, plan.entry
    # Made first: parameters no Modelfile can hold are refused before anything is fetched.
    definition = ModelDefinition.for_family(
        plan.name, entry.prompt_family, list(plan.pull.paths), server=server, mode=template_mode,
        parameters={**entry.parameters, **(parameters or {})},
        title=f"{entry.model.title} {entry.quant.hub_name} ({entry.repo})",
    )
    check_space(plan.needs, plan.entry.spec,
                "free some space or point OLLAMADS_HOME / OLLAMA_MODELS at a bigger disk")
    report(f"Ollama {server.version} at {server.host}: {plan.describe_route()}")
    for note in plan.notes():
        report(note)
    lock = ollamads_home() / "locks" / (hashlib.sha256(f"{server.host}\0{plan.name}".encode()).hexdigest()[:16])
    with exclusive(lock, f"creating {plan.name} on {server.host}"):
        api = OllamaAPI(server.host)
        sources = {f.path: f.digest for f in plan.pull.files}
        record_path = _created_record(server, plan.name)
        done = read_record(record_path)
        names = ModelDefinition.for_family(
            plan.name, entry.prompt_family, [], server=server, mode=template_mode).names
        if done.get("sources") == sources and done.get("parameters") == dict(parameters or {}) \
                and done.get("template_mode") == template_mode \
                and all(api.show(n) is not None for n in names):
            # Made from these very files before (perhaps with --delete-shards): nothing to do.
            report(f"{plan.name} is already registered from these files")
            return CreateResult(
                name=plan.name, server=server, route=plan.route, files=plan.pull.paths,
                modelfile=Path(str(done.get("modelfile", ""))), bytes_downloaded=0,
                bytes_uploaded=0, bytes_written=0, placements={}, created=False,
                companions=names[1:],
            )
        result = pull(plan.pull, progress=progress, connections=connections)
        report(f"{len(result.paths)} file(s) present and verified "
               f"({result.bytes_downloaded:,} bytes downloaded)")
        files = result.paths
        registration = plan_registration(server, files, merged_path=plan.merged_path, store_check=plan.store)
        outcome = register_files(registration, definition, known_digests=result.digests,
                                 progress=progress, report=report)
        modelfile = files[0].parent / f"Modelfile.{server.line}"
        write_small_file(modelfile, definition.modelfile(f"Ollama {server.version}").encode("utf-8"))
        for companion in definition.companions:  # V3.1's thinking name: Modelfile.<line>-think
            write_small_file(modelfile.with_name(f"{modelfile.name}{THINKING_TAG_SUFFIX}"),
                             companion.modelfile(f"Ollama {server.version}").encode("utf-8"))
        write_record(record_path, {
            "sources": sources, "parameters": dict(parameters or {}),
            "template_mode": template_mode, "modelfile": str(modelfile),
        })
        deleted = False
        if not keep_shards:
            deleted = _delete_downloads(api, plan, files, report)
    return CreateResult(
        name=plan.name, server=server, route=outcome.route, files=files, modelfile=modelfile,
        bytes_downloaded=result.bytes_downloaded, bytes_uploaded=outcome.bytes_uploaded,
        bytes_written=outcome.bytes_written, placements=outcome.placements,
        created=outcome.created, deleted_shards=deleted, companions=outcome.companions,
    )


def _created_record(server: ServerInfo, name: str) -> Path:
    key = hashlib.sha256(f"{server.host}\0{name}".encode()).hexdigest()[:16]
    return ollamads_home() / "created" / f"{key}.json"


def _delete_downloads(api: OllamaAPI, plan: CreatePlan, files: Sequence[Path], report: Report) -> bool:
    """``--delete-shards``: only once the server confirms the model, so a failure keeps them."""
    if api.show(plan.name) is None:
        report(f"kept the downloads: the server does not list {plan.name}")
        return False
    for path in files:
        path.unlink(missing_ok=True)
    if plan.merged_path is not None:
        plan.merged_path.unlink(missing_ok=True)
    report(f"deleted the downloaded files ({len(files)}) now that the server has {plan.name}")
    return True
