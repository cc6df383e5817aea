"""Getting GGUF files into an Ollama server by the cheapest way that server allows.

Every way ends with the same model; they differ in what is written and sent:

=====================  ==========================================================================
route                  what happens
=====================  ==========================================================================
``direct``             (a release that rewrites GGUFs and where this was proven, local store) the
                       one merged model blob is written straight into the store in the layout the
                       server's own rewrite produces, hashed while written; then the small blobs
                       and the manifest. No upload, no ``/api/create``, no rewrite by the server.
``merge-into-store``   (<= v0.24, split files, local store) the merged GGUF is written once,
                       straight into the store, then ``/api/create`` (which writes nothing big).
``place``              (local store) each file is hard-linked into the store (or reflinked, or
                       copied in the kernel across filesystems), then ``/api/create``: on a server
                       that keeps GGUFs as they are (v0.34.1+) that is the whole cost.
``upload``             (remote server, or a store this process may not write) each missing blob
                       is streamed to the server, then ``/api/create``; split files for <= v0.24
                       are merged next to the downloads first, and that file is deleted once the
                       server has it.
=====================  ==========================================================================

Before anything is written, a file whose tensor types the server cannot read is refused. After
``/api/create`` the result is checked against what the server's line makes (its manifest's
model layers, ``/api/show``), and a model that does not pass is removed again.

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
from ollamads.gguf.format import GGMLQuantizationType, GGUFFile
from ollamads.gguf.merge import merge_builtin_hashed, merged_size, quantize_copy_supported, write_merged
from ollamads.gguf.shards import ShardSet, open_shard_set, parse_shard_name
from ollamads.hub.records import keep_verified_after_touch, recorded_sha256
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
    store_check: StoreCheck
    shards: ShardSet
    #: For <= v0.24 with split files and no local store: where the merged file is written
    #: (and deleted once the server has it).
    merged_path: Path | None
    needs: tuple[DiskNeed, ...] = field(default=())

    @property
    def store(self) -> LocalStore | None:
        return self.store_check.store

    @property
    def store_reason(self) -> str:
        return self.store_check.reason

    def describe(self) -> str:
        return describe_route(self.route, self.server) + f" ({self.store_reason})"


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
    #: The blob digest of each file given to ``/api/create``, by file name.
    digests: Mapping[str, str] = field(default_factory=dict)


def describe_route(route: Route, server: ServerInfo) -> str:
    kept = server.gguf_handling == "layers"
    return {
        "direct": "write the model blob and manifest straight into the server's store",
        "merge-into-store": "merge once, straight into the server's store, then /api/create",
        "place": "link the files into the server's store, then /api/create"
                 + (" (the server keeps them as they are)" if kept else ""),
        "upload": "upload the files, then /api/create",
    }[route]


def _same_filesystem(a: Path, b: Path) -> bool:
    return filesystem_of(a).device == filesystem_of(b).device


def choose_route(server: ServerInfo, store: LocalStore | None, *, split: bool, copy_ok: bool = True) -> Route:
    if store is None:
        return "upload"
    if server.gguf_handling == "rewrite" and supports_direct(server) and copy_ok:
        return "direct"
    if server.gguf_handling == "merge" and split:
        return "merge-into-store"
    return "place"


def disk_needs(
    route: Route, server: ServerInfo, check: StoreCheck, *, size: int, files_dir: Path,
    merged_path: Path | None,
) -> list[DiskNeed]:
    """What the route writes on this machine, term by term, beyond the files it starts from:
    ollamads' own writes, and the server's where its store is on this machine."""
    store = check.store
    if route == "direct":
        assert store is not None
        return [DiskNeed("model blob (written once)", store.blobs, size)]
    if route == "merge-into-store":
        assert store is not None
        return [DiskNeed("merged model blob (written once)", store.blobs, size)]
    needs = []
    if route == "place":
        assert store is not None
        target = store.blobs
        if not _same_filesystem(files_dir, target):
            needs.append(DiskNeed("copies of the files (another filesystem)", target, size))
    else:
        if merged_path is not None:
            needs.append(DiskNeed("merged file (deleted once uploaded)", merged_path.parent, size))
        if check.server_store is None:
            return needs  # another machine's disk, or a store that could not be found
        target = check.server_store / "blobs"
        needs.append(DiskNeed("the server's copy of the upload", target, size))
    if server.gguf_handling == "rewrite":
        # /api/create on v0.30-v0.34.0 rewrites the model with llama-quantize into a temp file,
        # then copies that into a new blob.
        needs.append(DiskNeed("the server's rewrite (llama-quantize COPY)", target, size))
        needs.append(DiskNeed("the server's blob of that rewrite", target, size))
    return needs


def check_tensor_types(server: ServerInfo, headers: Sequence[GGUFFile], name: str) -> None:
    """Refuse files whose tensor types the server's GGUF reader cannot size, before anything
    is written: that server would refuse the model at create, or at every show and load."""
    unreadable = server.unreadable_tensor_types
    found = sorted({t.ggml_type for h in headers for t in h.tensors if t.ggml_type in unreadable})
    if found:
        names = ", ".join(_type_name(t) for t in found)
        raise ServerError(
            f"Ollama {server.version} cannot read {name}: its GGUF reader has no size for "
            f"{names} tensors, so that server would refuse the model; nothing was written",
            "choose another quant, or run the file with llama.cpp's llama-server",
        )


def _type_name(value: int) -> str:
    try:
        return GGMLQuantizationType(value).name
    except ValueError:
        return f"type {value}"


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
    check_tensor_types(server, shards.headers, shards.first.name)
    check = store_check or find_store(server)
    route = choose_route(server, check.store, split=shards.is_split, copy_ok=quantize_copy_supported(shards))
    if route == "upload" and shards.is_split and server.gguf_handling == "merge":
        merged_path = merged_path or shards.first.with_name(merged_name(shards.first.name))
    else:
        merged_path = None
    needs = disk_needs(route, server, check, size=shards.total_bytes,
                       files_dir=shards.first.parent, merged_path=merged_path)
    return RegistrationPlan(route, server, check, shards, merged_path, tuple(needs))


def merged_name(first_shard: str) -> str:
    """``X-00001-of-00003.gguf`` -> ``X.gguf``: the name of a merge of that set."""
    parsed = parse_shard_name(first_shard)
    return f"{parsed[0]}.gguf" if parsed else first_shard


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


def _merge_for_upload(
    api: OllamaAPI, shards: ShardSet, merged: Path, key: str, progress: Progress | None, report: Report,
) -> tuple[str, int, int]:
    """(digest, bytes sent, bytes written): the merge of ``shards`` uploaded to the server, which
    has no store this process may write. The merged file is hashed while it is written, and
    deleted once the server has the blob: it was made only to be sent."""
    record = read_record(_merge_record(key))
    digest = record.get("digest")
    if isinstance(digest, str) and api.has_blob(digest):
        report(f"the server already has the merged model blob {digest[:19]}…")
        merged.unlink(missing_ok=True)
        return digest, 0, 0
    hexdigest = merge_builtin_hashed(shards, merged, force=True,
                                     progress=bytes_callback(progress, "merge", merged.name))
    digest = f"sha256:{hexdigest}"
    written = merged.stat().st_size
    write_record(_merge_record(key), {"digest": digest, "size": written})
    sent = api.push_blob(merged, digest, bytes_callback(progress, "upload", merged.name))
    if not api.has_blob(digest):
        raise PlacementError(
            f"Ollama at {api.url} does not list the merged blob it was sent ({merged.name})",
            "check the server log, then re-run",
        )
    merged.unlink()
    report(f"deleted {merged.name}: the server has its blob")
    return digest, sent, written


def _digest(path: Path, known: Mapping[str, str], progress: Progress | None) -> str:
    """The blob digest of ``path``: known from the Hub's sha256 (a verified download) when it
    is, so a 100+ GB file is not read again; hashed otherwise."""
    return known.get(path.name) or recorded_sha256(path) or sha256_file(
        path, bytes_callback(progress, "verify", path.name))


def register(
    server: ServerInfo,
    definition: ModelDefinition,
    *,
    known_digests: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    report: Report = lambda line: None,
) -> RegistrationResult:
    """Register ``definition``'s files with ``server`` by the cheapest route, after checking the
    disk for everything it writes: the one call for code that has a definition and its files."""
    from ollamads.units import check_space

    plan = plan_registration(server, definition.files)
    check_space(plan.needs, definition.name)
    return register_files(plan, definition, known_digests=known_digests, progress=progress,
                          report=report)


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
    if plan.route == "place":
        # Each /api/create above set the times of the blobs, which the downloads share.
        for path in definition.files:
            if path.name in result.digests:
                keep_verified_after_touch(path, result.digests[path.name])
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
        name = merged_name(shards.first.name)
        placements[name] = Placement.WRITTEN if written else Placement.PRESENT
        _require_seen(api, digest, name, plan.store)
        definition = definition.with_files([shards.first.with_name(name)])
        digests = {name: digest}
    elif plan.route == "place":
        assert plan.store is not None
        digests = {}
        for path in definition.files:
            digest = _digest(path, known, progress)
            placements[path.name] = plan.store.place(path, digest)
            _require_seen(api, digest, path.name, plan.store)
            digests[path.name] = digest
    elif plan.merged_path is not None:
        merged = plan.merged_path
        digest, uploaded, written = _merge_for_upload(
            api, shards, merged, _sources_key(shards, "gguf-split", known), progress, report)
        placements[merged.name] = Placement.UPLOAD if uploaded else Placement.PRESENT
        definition = definition.with_files([merged])
        digests = {merged.name: digest}
    else:
        digests = {}
        for path in definition.files:
            digest = _digest(path, known, progress)
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
        check_registered(api, plan, definition.name, [digests[p.name] for p in definition.files])
        write_record(_registration_record(server, definition.name), {"request": request})
    else:
        report(f"{definition.name} is already registered from these files")
    return RegistrationResult(definition.name, plan.route, placements, uploaded, written, created,
                              digests=digests)


def expected_model_layers(server: ServerInfo, sources: Sequence[str]) -> list[str] | int:
    """What the manifest's model layers must be after ``/api/create`` from blobs ``sources``:
    the same digests in order where the server keeps GGUFs as they are, else how many (one,
    the server's rewrite, whose digest it chooses)."""
    if server.gguf_handling == "rewrite":
        return 1
    return list(sources)


def check_registered(api: OllamaAPI, plan: RegistrationPlan, name: str, sources: Sequence[str]) -> None:
    """The model as the server's line makes it, or it is removed again and the run fails: a
    release that does something else with GGUFs (an untested one) never leaves a model that
    does not work."""
    problem = None
    try:
        if api.show(name) is None:
            problem = "the server does not list it"
    except ServerError as exc:
        problem = f"/api/show fails: {exc.message}"
    manifest = plan.store.manifest(name) if plan.store is not None and problem is None else None
    if manifest is not None:
        layers = [layer.get("digest") for layer in manifest.get("layers", [])
                  if layer.get("mediaType") == MEDIA_MODEL]
        expected = expected_model_layers(plan.server, sources)
        if plan.server.gguf_handling == "merge" and not isinstance(expected, int):
            # v0.24 takes create's files from a JSON object, in Go's random map order.
            layers, expected = sorted(layers), sorted(expected)
        if (len(layers) != expected) if isinstance(expected, int) else (layers != expected):
            want = expected if isinstance(expected, int) else len(expected)
            problem = (f"its manifest's model layers are not what releases of its line make "
                       f"({len(layers)} layer(s), expected "
                       + (f"{want}" if isinstance(expected, int) else f"the {want} file(s) given, in order")
                       + ")")
    if problem is None:
        return
    api.delete(name)
    raise ServerError(
        f"Ollama {plan.server.version} registered {name} but {problem}; it was removed again",
        "use a release ollamads was tested with (`ollamads doctor` names them), or report this",
    )


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
    "check_registered",
    "check_tensor_types",
    "choose_route",
    "describe_route",
    "disk_needs",
    "merged_name",
    "model_facts",
    "plan_registration",
    "register",
    "register_files",
]
