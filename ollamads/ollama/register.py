"""Registering GGUF files with a running Ollama: blobs first, then the model.

``ollama create`` (the CLI) hashes and uploads every file in full each time. For 100+ GB files
the server is asked first (``HEAD /api/blobs/sha256:<hex>``) and only what it lacks is sent; a
digest that is already known (verified against the Hub) is never recomputed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ollamads.errors import ServerError
from ollamads.ollama.api import OllamaAPI
from ollamads.ollama.modelfile import ModelDefinition
from ollamads.ollama.versions import ServerInfo
from ollamads.progress import Progress, bytes_callback

HASH_CHUNK = 8 << 20


def sha256_file(path: Path, progress: Callable[[int, int], None] | None = None) -> str:
    """``sha256:<hex>`` of a file, read in large chunks."""
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return "sha256:" + digest.hexdigest()


@dataclass(frozen=True)
class RegisterResult:
    name: str
    digests: Mapping[str, str]
    bytes_uploaded: int
    statuses: tuple[str, ...]
    #: Further names made on the same blobs (a V3.1 model's thinking name).
    companions: tuple[str, ...] = ()


def check_registrable(server: ServerInfo, definition: ModelDefinition) -> None:
    if definition.family.can_think:
        server.require_think()
    if len(definition.files) > 1 and not server.accepts_split_gguf:
        raise ServerError(
            f"Ollama {server.version} cannot load a split GGUF ({len(definition.files)} shards)",
            "merge the shards first (ollamads merge), or upgrade Ollama to v0.30 or newer",
        )


def register(
    server: ServerInfo,
    definition: ModelDefinition,
    *,
    known_digests: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    on_status: Callable[[str], None] | None = None,
) -> RegisterResult:
    """Upload what the server lacks, then create the model from the definition's files."""
    check_registrable(server, definition)
    api = OllamaAPI(server.host)
    known = dict(known_digests or {})
    digests: dict[str, str] = {}
    uploaded = 0
    for path in definition.files:
        digest = known.get(path.name) or sha256_file(path, bytes_callback(progress, "verify", path.name))
        digests[path.name] = digest
        uploaded += api.push_blob(path, digest, bytes_callback(progress, "upload", path.name))
    statuses = api.create(definition.create_request(digests), on_status)
    companions = create_companions(api, definition, on_status)
    return RegisterResult(definition.name, digests, uploaded, statuses, companions)


def create_companions(
    api: OllamaAPI, definition: ModelDefinition, on_status: Callable[[str], None] | None = None
) -> tuple[str, ...]:
    """Create ``definition``'s companion names ``from`` it, once it is registered. Each is a
    manifest and small blobs (no upload, no rewrite), so it is simply made again every time:
    it then always follows the model it is made from."""
    for companion in definition.companions:
        try:
            api.create(companion.create_request(), on_status)
        except ServerError as exc:
            raise ServerError(
                f"{definition.name} is registered, but {companion.name} could not be made from it "
                f"({exc.message})",
                "re-run the same command: it makes only what is missing",
            ) from exc
    return tuple(c.name for c in definition.companions)


__all__ = ["RegisterResult", "check_registrable", "create_companions", "register", "sha256_file"]
