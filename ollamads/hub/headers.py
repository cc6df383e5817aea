"""The first bytes of a file on the Hub, by HTTP Range: enough to read a GGUF header.

A 671B quant is 130-480 GB, but its tensor table sits in the first few megabytes of each
shard. :func:`file_prefix` keeps those bytes in ``<repo dir>/.ollamads/<path>.head`` and only
ever asks for what is missing after them, so a second call (or one after an interruption) costs
nothing or continues where the last one stopped. The bytes are fetched at one commit with the
same redirect and token handling as downloads (:func:`~ollamads.hub.transfer.ranged_get`); a
file whose digest on the Hub changed since the cached bytes were fetched starts again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import requests

from ollamads.errors import HubError
from ollamads.hub.api import hub_endpoint, status_error
from ollamads.hub.listing import RemoteFile
from ollamads.hub.records import record_path
from ollamads.hub.transfer import RETRY_BACKOFF_S, ranged_get
from ollamads.locking import exclusive
from ollamads.paths import read_record, write_record

HEAD_SUFFIX = ".head"
READ_SIZE = 1 << 20
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
        hub_host = urlsplit(endpoint).netloc.lower()
        failures = 0
        with requests.Session() as session, open(path, "ab") as out:
            while have < want:
                before = have
                try:
                    have = _append(session, url, hub_host, repo, remote, out, have, want)
                except _Again as exc:
                    have = out.tell()  # what arrived before the failure is kept
                    failures = 0 if have > before else failures + 1
                    if failures > len(_RETRIES):
                        raise HubError(
                            f"{remote.path}: {exc} while reading its header "
                            f"({have} of {want} bytes kept)",
                            "check the network and re-run: it continues from there",
                        ) from None
                    time.sleep(_RETRIES[failures - 1] if failures else 0)
        return path, have


class _Again(Exception):
    pass


def _append(
    session: requests.Session, url: str, hub_host: str, repo: str, remote: RemoteFile,
    out: BinaryIO, have: int, want: int,
) -> int:
    def same_upload(response: requests.Response) -> None:
        served = (response.headers.get("X-Linked-Etag") or "").removeprefix("W/").strip('"')
        if remote.sha256 and len(served) == 64 and served.lower() != remote.sha256:
            response.close()
            raise HubError(
                f"{remote.path} changed on the Hub since it was listed",
                "re-run the same command: it plans again from the current listing",
            )

    try:
        response = ranged_get(session, url, hub_host, have, want, what=remote.path, on_hub=same_upload)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _Again(type(exc).__name__) from None
    with response:
        status = response.status_code
        if status == 206:
            expected = f"bytes {have}-{want - 1}/{remote.size}"
            if response.headers.get("Content-Range", "").strip() != expected:
                raise HubError(
                    f"the Hub sent the wrong byte range of {remote.path} "
                    f"(asked {expected}, got {response.headers.get('Content-Range')!r})",
                    "try again later",
                )
            from urllib3.exceptions import HTTPError as Urllib3Error

            # read1 hands over what has arrived, so a dropped connection keeps its bytes.
            raw = response.raw
            read = raw.read1 if hasattr(raw, "read1") else raw.read
            while have < want:
                try:
                    chunk = read(min(READ_SIZE, want - have))
                except (Urllib3Error, OSError):  # reading only: disk errors come from write
                    raise _Again("the connection broke off") from None
                if not chunk:
                    break
                out.write(chunk)
                out.flush()
                have += len(chunk)
            if have < want:
                raise _Again("the connection broke off")
            return have
        if status == 200:
            raise HubError(
                f"the Hub answered a Range request for {remote.path} with the whole file (200): "
                "its header cannot be read without downloading it",
                "a proxy between here and the Hub may strip Range headers; download the quant "
                "(`ollamads pull`) and plan from the files",
            )
        if status == 416:
            raise HubError(
                f"{remote.path} is shorter on the Hub than its listing says",
                "it is being re-uploaded; re-run later",
            )
        if status == 429 or status >= 500:
            raise _Again(f"the Hub answered {status}")
        raise status_error(status, response.headers.get("X-Error-Code"), repo, remote.path)


__all__ = ["cached_prefix", "file_prefix", "prefix_path"]
