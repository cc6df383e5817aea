"""The first bytes of a file on the Hub, by HTTP Range: enough to read a GGUF header.

A 671B quant is 130-480 GB, but its tensor table sits in the first few megabytes of each
shard. :func:`file_prefix` keeps those bytes in ``<repo dir>/.ollamads/<path>.head`` and only
ever asks for what is missing after them, so a second call (or one after an interruption) costs
nothing or continues where the last one stopped. The bytes are fetched at one commit with the
same redirect, token and answer checks as downloads (:mod:`ollamads.hub.ranges`); a
file whose digest on the Hub changed since the cached bytes were fetched starts again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import BinaryIO

import requests

from ollamads.errors import HubError
from ollamads.hub.api import hub_endpoint
from ollamads.hub.listing import RemoteFile
from ollamads.hub.ranges import (
    RetryLater,
    body_chunks,
    host_of,
    ranged_get,
    require_listed_upload,
    require_range,
)
from ollamads.hub.records import record_path
from ollamads.hub.transfer import RETRY_BACKOFF_S
from ollamads.locking import exclusive
from ollamads.paths import read_record, write_record

HEAD_SUFFIX = ".head"
#: A retry that gets no bytes waits this long; three of them and the fetch gives up.
_RETRIES = RETRY_BACKOFF_S[:3]


def prefix_path(repo: str, remote: RemoteFile) -> Path:
    return record_path(repo, remote.path, HEAD_SUFFIX)


def cached_prefix(repo: str, remote: RemoteFile) -> tuple[Path, int] | None:
    """The cached first bytes of ``remote`` and how many there are, if they are its current ones."""
    path = prefix_path(repo, remote)
    meta = read_record(path.with_name(path.name + ".json"))
    if meta.get("digest") != remote.digest or meta.get("size") != remote.size:
        return None
    try:
        return path, min(path.stat().st_size, remote.size)
    except OSError:
        return None


def file_prefix(repo: str, commit: str, remote: RemoteFile, length: int) -> tuple[Path, int]:
    """A local file holding the first ``min(length, size)`` bytes of ``remote`` (or more, if
    cached), and how many it holds. Network failures and refusals raise :class:`HubError`."""
    from huggingface_hub import hf_hub_url

    want = min(length, remote.size)
    path = prefix_path(repo, remote)
    meta_path = path.with_name(path.name + ".json")
    with exclusive(path.with_name(path.name + ".lock"), f"reading the header of {remote.path}"):
        cached = cached_prefix(repo, remote)
        if cached is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
            write_record(meta_path, {"digest": remote.digest, "size": remote.size})
            have = 0
        else:
            have = cached[1]
        if have >= want:
            return path, have
        endpoint = hub_endpoint()
        url = hf_hub_url(repo, remote.path, revision=commit, endpoint=endpoint)
        hub_host = host_of(endpoint)
        failures = 0
        with requests.Session() as session, open(path, "ab") as out:
            while have < want:
                before = have
                try:
                    have = _append(session, url, hub_host, repo, remote, out, have, want)
                except RetryLater as exc:
                    have = out.tell()  # what arrived before the failure is kept
                    failures = 0 if have > before else failures + 1
                    if failures > len(_RETRIES):
                        raise HubError(
                            f"{remote.path}: {exc} while reading its header "
                            f"({have} of {want} bytes kept)",
                            "check the network and re-run: it continues from there",
                        ) from None
                    time.sleep(exc.wait if exc.wait is not None else _RETRIES[failures - 1] if failures else 0)
        return path, have


def _append(
    session: requests.Session, url: str, hub_host: str, repo: str, remote: RemoteFile,
    out: BinaryIO, have: int, want: int,
) -> int:
    response = ranged_get(session, url, hub_host, have, want, what=remote.path,
                          check=lambda r: require_listed_upload(remote, r))
    with response:
        require_range(
            response, remote, have, want, repo=repo, hub_host=hub_host,
            whole_file_hint="a proxy between here and the Hub may strip Range headers; download "
                            "the quant (`ollamads pull`) and plan from the files",
        )
        for chunk in body_chunks(response, want - have):
            out.write(chunk)
            out.flush()
            have += len(chunk)
        return have


__all__ = ["cached_prefix", "file_prefix", "prefix_path"]
