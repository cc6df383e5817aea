"""Getting GGUF files into an Ollama server by the cheapest way that server allows.

Every way ends with the same model; they differ in what is written and sent:

=====================  ==========================================================================
route                  what happens
=====================  ==========================================================================
``direct``             (v0.30+, tested versions, local store) the one merged model blob is written
                       straight into the store in the layout the server's own rewrite produces,
                       hashed while written; then the small blobs and the manifest. No upload, no
                       ``/api/create``, no rewrite by the server.
``merge-into-store``   (<= v0.24, split files, local store) the merged GGUF is written once,
                       straight into the store, then ``/api/create`` (which writes nothing big).
``place``              (local store) each file is hard-linked into the store (or reflinked, or
                       copied in the kernel across filesystems), then ``/api/create``.
``upload``             (remote server, or a store this process may not write) each missing blob
                       is streamed to the server, then ``/api/create``; split files for <= v0.24
                       are merged next to the downloads first.
=====================  ==========================================================================

This module calls the GGUF tools and the Ollama client, and owns no I/O details of its own.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from ollamads.errors import PlacementError, ServerError
from ollamads.gguf.merge import merge, merged_size, quantize_copy_supported, write_merged
from ollamads.gguf.shards import ShardSet, open_shard_set
from ollamads.ollama.api import OllamaAPI
from ollamads.ollama.modelfile import ModelDefinition
from ollamads.ollama.register import create_companions, sha256_file
from ollamads.ollama.store import (
    MEDIA_MODEL,
    Layer,
    LocalStore,
    ModelFacts,
    Placement,
    StoreCheck,
    find_store,
    supports_direct,
)
from ollamads.ollama.versions import ServerInfo
from ollamads.paths import ollamads_home, read_record, write_record
from ollamads.progress import Progress, bytes_callback
from ollamads.units import DiskNeed, filesystem_of

Route = Literal["direct", "merge-into-store", "place", "upload"]
Report = Callable[[str], None]
MERGES_DIR = "merges"


@dataclass(frozen=True)
class RegistrationPlan:
    """Which route a registration takes and what it writes where."""

    route: Route
    server: ServerInfo
    store: LocalStore | None
    store_reason: str
    shards: ShardSet
    #: For <= v0.24 with split files and no local store: where the merged file is written.
    merged_path: Path | None
    needs: tuple[DiskNeed, ...] = field(default=())

    def describe(self) -> str:
        where = f" ({self.store_reason})"
        return {
            "direct": "write the model blob and manifest straight into the server's store",
            "merge-into-store": "merge once, straight into the server's store, then /api/create",
            "place": "link the files into the server's store, then /api/create",
            "upload": "upload the files, then /api/create",
        }[self.route] + where


@dataclass(frozen=True)
class RegistrationResult:
    name: str
    route: Route
    placements: Mapping[str, Placement]
    bytes_uploaded: int
    bytes_written: int
    created: bool
    #: Further names on the same blobs (a V3.1 model's thinking name), made after ``name``.
    companions: tuple[str, ...] = ()


def _same_filesystem(a: Path, b: Path) -> bool:
    return filesystem_of(a).device == filesystem_of(b).device


def choose_route(server: ServerInfo, store: LocalStore | None, *, split: bool, copy_ok: bool = True) -> Route:
    if store is not None and server.accepts_split_gguf and supports_direct(server) and copy_ok:
        return "direct"
    if store is not None and split and not server.accepts_split_gguf:
        return "merge-into-store"
    return "place" if store is not None else "upload"


def disk_needs(
    route: Route, server: ServerInfo, store: LocalStore | None, *, size: int, files_dir: Path,
    merged_path: Path | None,
) -> list[DiskNeed]:
    """What the route writes, term by term, beyond the files it starts from."""
    if route == "direct":
        assert store is not None
        return [DiskNeed("model blob (written once)", store.blobs, size)]
    if route == "merge-into-store":
        assert store is not None
        return [DiskNeed("merged model blob (written once)", store.blobs, size)]
    if route == "place":
        assert store is not None
        needs = []
        if not _same_filesystem(files_dir, store.blobs):
            needs.append(DiskNeed("copies of the files (another filesystem)", store.blobs, size))
        if server.accepts_split_gguf:
            # /api/create on v0.30+ rewrites the model with llama-quantize into a temp file,
            # then copies that into a new blob.
            needs.append(DiskNeed("the server's rewrite (llama-quantize COPY)", store.blobs, size))
            needs.append(DiskNeed("the server's blob of that rewrite", store.blobs, size))
        return needs
    if merged_path is not None:
        return [DiskNeed("merged file (then uploaded)", merged_path.parent, size)]
    return []  # uploads go to another machine's disk


def plan_registration(
    server: ServerInfo,
    files: Sequence[Path] | ShardSet,
    *,
    merged_path: Path | None = None,
    store_check: StoreCheck | None = None,
) -> RegistrationPlan:
    """Choose the route for ``files`` (one GGUF, or every shard of a set, or the set already
    opened: a 671B model's headers take a while to read) on ``server``."""
    shards = files if isinstance(files, ShardSet) else open_shard_set(files[0])
    check = store_check or find_store(server)
    split_for_old_line = shards.is_split and not server.accepts_split_gguf
    route = choose_route(server, check.store, split=shards.is_split, copy_ok=quantize_copy_supported(shards))
    if route == "upload" and split_for_old_line:
        merged_path = merged_path or shards.first.with_name(_merged_name(shards))
    else:
        merged_path = None
    needs = disk_needs(route, server, check.store, size=shards.total_bytes,
                       files_dir=shards.first.parent, merged_path=merged_path)
    return RegistrationPlan(route, server, check.store, check.reason, shards, merged_path, tuple(needs))


def _merged_name(shards: ShardSet) -> str:
    from ollamads.gguf.shards import parse_shard_name

    parsed = parse_shard_name(shards.first.name)
    return f"{parsed[0]}.gguf" if parsed else shards.first.name


def _sources_key(shards: ShardSet, style: str, digests: Mapping[str, str]) -> str:
    """Names a merge by its inputs: the same verified shards give the same merged blob."""
    parts = [style]
    for path in shards.paths:
        stat = path.stat()
        parts.append(digests.get(path.name) or f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def _merge_record(key: str) -> Path:
    return ollamads_home() / MERGES_DIR / f"{key}.json"


def model_facts(shards: ShardSet) -> ModelFacts:
    """What Ollama's config says about these files (architecture, parameters, file type)."""
    first = shards.headers[0]
    count = sum(math.prod(t.shape) for h in shards.headers for t in h.tensors)
    file_type = first.value("general.file_type")
    return ModelFacts(
        str(first.value("general.architecture") or "unknown"),
        count,
        file_type if isinstance(file_type, int) else None,
    )


def _write_into_store(
    store: LocalStore,
    shards: ShardSet,
    style: Literal["gguf-split", "quantize-copy"],
    key: str,
    progress: Progress | None,
    report: Report,
) -> tuple[str, int, int]:
    """(digest, size, bytes written): the merged blob, written once unless a record says it is
    already there."""
    record = read_record(_merge_record(key))
    digest, size = record.get("digest"), record.get("size")
    if isinstance(digest, str) and isinstance(size, int) and store.has_blob(digest, size):
        report(f"the merged model blob {digest[:19]}… is already in the store")
        return digest, size, 0
    total = merged_size(shards, style)
    with store.blob_writer(total, "the model blob") as writer:
        hexdigest = write_merged(
            shards, writer.fd, style=style, sha256=True,
            progress=bytes_callback(progress, "write", f"{shards.first.name} -> store"),
        )
        digest = f"sha256:{hexdigest}"
        writer.commit(digest)
    write_record(_merge_record(key), {"digest": digest, "size": total})
    return digest, total, total


def register_files(
    plan: RegistrationPlan,
    definition: ModelDefinition,
    *,
    known_digests: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    report: Report = lambda line: None,
) -> RegistrationResult:
    """Register ``definition`` (whose files are ``plan.shards``' files) by ``plan.route``, then
    its companion names ``from`` it."""
    result = _register_model(plan, definition, known_digests=known_digests, progress=progress,
                             report=report)
    api = OllamaAPI(plan.server.host)
    companions = create_companions(api, definition, lambda s: report(f"ollama: {s}"))
    for name in companions:
        report(f"{name}: the same blobs, thinking by default")
    return replace(result, companions=companions)


def _register_model(
    plan: RegistrationPlan,
    definition: ModelDefinition,
    *,
    known_digests: Mapping[str, str] | None,
    progress: Progress | None,
    report: Report,
) -> RegistrationResult:
    server, shards = plan.server, plan.shards
    check_registrable_files(server, definition, shards)
    api = OllamaAPI(server.host)
    # Hours may have passed since the plan (the downloads): the server may have been replaced.
    api.require_same(server)
    known = dict(known_digests or {})
    placements: dict[str, Placement] = {}
    uploaded = written = 0
    report(f"registering {definition.name}: {plan.describe()}")

    if plan.route == "direct":
        assert plan.store is not None
        digest, size, written = _write_into_store(
            plan.store, shards, "quantize-copy", _sources_key(shards, "quantize-copy", known),
            progress, report,
        )
        placements[shards.first.name] = Placement.WRITTEN if written else Placement.PRESENT
        facts = model_facts(shards)
        api.require_same(server)
        created = plan.store.write_model(
            definition.name,
            Layer(MEDIA_MODEL, digest, size),
            template=definition.template,
            system=definition.system,
            parameters=definition.parameters_json(),
            config=facts.config(renderer=definition.renderer, parser=definition.parser),
        )
        if api.show(definition.name) is None:
            raise PlacementError(
                f"Ollama at {server.host} does not see the model {definition.name} written into "
                f"{plan.store.root}",
                "re-run; ollamads then registers it through /api/create instead",
            )
        if not created:
            report(f"{definition.name} is already registered from these files")
        return RegistrationResult(definition.name, "direct", placements, 0, written, created)

    if plan.route == "merge-into-store":
        assert plan.store is not None
        digest, size, written = _write_into_store(
            plan.store, shards, "gguf-split", _sources_key(shards, "gguf-split", known),
            progress, report,
        )
        name = _merged_name(shards)
        placements[name] = Placement.WRITTEN if written else Placement.PRESENT
        _require_seen(api, digest, name, plan.store)
        definition = definition.with_files([shards.first.with_name(name)])
        digests = {name: digest}
    elif plan.route == "place":
        assert plan.store is not None
        digests = {}
        for path in definition.files:
            digest = known.get(path.name) or sha256_file(path, bytes_callback(progress, "verify", path.name))
            placements[path.name] = plan.store.place(path, digest)
            _require_seen(api, digest, path.name, plan.store)
            digests[path.name] = digest
    else:
        files = list(definition.files)
        if plan.merged_path is not None:
            merged = plan.merged_path
            if not _merged_file_is_current(shards, merged, known):
                merge(shards.first, merged, method="builtin", force=True,
                      progress=bytes_callback(progress, "merge", merged.name))
                _remember_merged_file(shards, merged, known)
            written = merged.stat().st_size
            files = [merged]
            definition = definition.with_files(files)
        digests = {}
        for path in files:
            digest = known.get(path.name) or _merged_digest(path) or sha256_file(
                path, bytes_callback(progress, "verify", path.name))
            digests[path.name] = digest
            sent = api.push_blob(path, digest, bytes_callback(progress, "upload", path.name))
            placements[path.name] = Placement.UPLOAD if sent else Placement.PRESENT
            uploaded += sent

    for file, how in placements.items():
        report(f"{file}: {how.value}")
    request = definition.create_request(digests)
    api.require_same(server)
    created = not _is_registered(api, server, definition.name, request)
    if created:
        api.create(request, on_status=lambda s: report(f"ollama: {s}"))
        write_record(_registration_record(server, definition.name), {"request": request})
    else:
        report(f"{definition.name} is already registered from these files")
    return RegistrationResult(definition.name, plan.route, placements, uploaded, written, created)


def check_registrable_files(server: ServerInfo, definition: ModelDefinition, shards: ShardSet) -> None:
    if definition.family.can_think:
        server.require_think()
    if shards.is_split and len(definition.files) != shards.count:
        raise ServerError(
            f"{shards.first.name} is shard 1 of {shards.count}, but {len(definition.files)} files "
            "were given", "pass every shard of the set",
        )


def _require_seen(api: OllamaAPI, digest: str, name: str, store: LocalStore) -> None:
    if not api.has_blob(digest):
        raise PlacementError(
            f"Ollama at {api.url} does not see {name}, placed in {store.root} as {digest[:19]}…; "
            "nothing was registered",
            "is the server using another OLLAMA_MODELS? re-run; ollamads then uploads instead",
        )


def _merged_record_path(merged: Path) -> Path:
    return merged.with_name(merged.name + ".ollamads.json")


def _merged_file_is_current(shards: ShardSet, merged: Path, known: Mapping[str, str]) -> bool:
    record = read_record(_merged_record_path(merged))
    try:
        size = merged.stat().st_size
    except FileNotFoundError:
        return False
    return record.get("sources") == _sources_key(shards, "gguf-split", known) and record.get("size") == size


def _remember_merged_file(shards: ShardSet, merged: Path, known: Mapping[str, str]) -> None:
    digest = sha256_file(merged)
    write_record(_merged_record_path(merged), {
        "sources": _sources_key(shards, "gguf-split", known), "size": merged.stat().st_size,
        "sha256": digest,
    })


def _merged_digest(path: Path) -> str | None:
    record = read_record(_merged_record_path(path))
    digest = record.get("sha256")
    try:
        fresh = record.get("size") == path.stat().st_size
    except FileNotFoundError:
        return None
    return digest if isinstance(digest, str) and fresh else None


def _registration_record(server: ServerInfo, name: str) -> Path:
    key = hashlib.sha256(f"{server.host}\0{name}".encode()).hexdigest()[:16]
    return ollamads_home() / "registered" / f"{key}.json"


def _is_registered(api: OllamaAPI, server: ServerInfo, name: str, request: Mapping[str, object]) -> bool:
    record = read_record(_registration_record(server, name))
    return record.get("request") == request and api.show(name) is not None


__all__ = [
    "RegistrationPlan",
    "RegistrationResult",
    "Route",
    "choose_route",
    "disk_needs",
    "model_facts",
    "plan_registration",
    "register_files",
]
