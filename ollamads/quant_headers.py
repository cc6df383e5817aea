"""The GGUF headers of a quant's files on the Hub, without downloading the files.

For each file: a local copy that ollamads verified is read; else its first bytes are fetched
with Range requests (4 MiB, doubled until the header fits) and cached beside the downloads, so
the next reader (``plan``, ``create``'s tensor-type check) reads nothing from the Hub.
"""

from __future__ import annotations

from ollamads.catalog import CatalogEntry
from ollamads.errors import HubError, IncompleteHeaderError
from ollamads.gguf.format import GGUFFile, read_gguf, read_gguf_prefix
from ollamads.hub.headers import cached_prefix, file_prefix
from ollamads.hub.listing import RemoteFile
from ollamads.hub.records import recorded_verified
from ollamads.paths import local_path
from ollamads.units import MIB

#: The first Range request per file; a DeepSeek shard 1 header (tokenizer included) is ~3.5 MB.
FIRST_READ = 4 * MIB
#: A header larger than this is not a header: refuse rather than download the model.
MAX_HEADER = 256 * MIB


def header_from_hub(repo: str, commit: str, remote: RemoteFile) -> tuple[GGUFFile, int]:
    """The header of ``remote`` and the bytes fetched for it now."""
    before = cached_prefix(repo, remote)
    length = max(FIRST_READ, before[1] if before else 0)
    while True:
        prefix, have = file_prefix(repo, commit, remote, length)
        try:
            header = read_gguf_prefix(prefix, file_size=remote.size, name=remote.path)
            return header, have - (before[1] if before else 0)
        except IncompleteHeaderError:
            if have >= MAX_HEADER:
                raise HubError(
                    f"{remote.path}: no GGUF header ends in its first {have} bytes",
                    "the file is not a usable GGUF; download it and run `ollamads plan` on it",
                ) from None
            length = min(2 * have, MAX_HEADER)


def header_offline(repo: str, remote: RemoteFile) -> GGUFFile | None:
    local = local_path(repo, remote.path)
    if local.is_file() and recorded_verified(repo, remote, local):
        return read_gguf(local)
    cached = cached_prefix(repo, remote)
    if cached is None:
        return None
    try:
        return read_gguf_prefix(cached[0], file_size=remote.size, name=remote.path)
    except IncompleteHeaderError:
        return None


def quant_headers(entry: CatalogEntry, commit: str, remotes: list[RemoteFile]) -> tuple[list[GGUFFile], int]:
    """The GGUF header of each file of a quant, and the bytes fetched for them now: verified
    local files and cached headers first, else Range requests for the first megabytes."""
    headers, fetched = [], 0
    for remote in remotes:
        header = header_offline(entry.repo, remote)
        if header is None:
            header, got = header_from_hub(entry.repo, commit, remote)
            fetched += got
        headers.append(header)
    return headers, fetched


__all__ = ["FIRST_READ", "MAX_HEADER", "header_from_hub", "header_offline", "quant_headers"]
