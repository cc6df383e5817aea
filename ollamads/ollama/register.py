"""The pieces of a registration that only talk to Ollama: a file's blob digest, and the further
names (a V3.1 model's thinking name) made ``from`` a registered model.

The registration itself, which also needs the GGUF tools, is :mod:`ollamads.registration`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from ollamads.errors import ServerError
from ollamads.ollama.api import OllamaAPI
from ollamads.ollama.modelfile import ModelDefinition

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


__all__ = ["create_companions", "sha256_file"]
