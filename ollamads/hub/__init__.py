"""Fetching GGUF files from the Hugging Face Hub: planned, parallel, resumable, verified.

Why not ``snapshot_download``: huggingface_hub 2.x does not resume a download that a killed
process left behind (it restarts from byte 0), it does not check content hashes, and over plain
HTTP it gives one file one connection. For 50-170 GB files all three matter, so the Hub's API
is asked for the listing (sizes, LFS sha256) through huggingface_hub, and the bytes are fetched
here (:mod:`ollamads.hub.transfer`).

The package knows repos, commits and paths, nothing about the catalog:

* ``listing``  the commit and the files with their sizes and sha256;
* ``records``  verification records and the state of each ``.part``;
* ``transfer`` the parallel ranged downloader;
* ``api``      endpoint, credentials and the Hub's refusals as one-line errors.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ollamads.fileio import allocated_bytes
from ollamads.hub.api import hub_endpoint
from ollamads.hub.listing import RemoteFile, paths_info, repo_commit, tree
from ollamads.hub.records import STATE_DIR, is_verified, part_have
from ollamads.hub.transfer import (
    CONNECTIONS_ENV,
    DEFAULT_CONNECTIONS,
    Downloader,
    HashMode,
    connection_count,
)
from ollamads.locking import exclusive
from ollamads.paths import local_path, repo_dir
from ollamads.progress import Progress, ProgressEvent
from ollamads.units import DiskNeed, check_space, disk_free, disk_full_error, is_disk_full

FileState = Literal["verified", "partial", "missing", "mismatch"]


@dataclass(frozen=True)
class PlanFile:
    """One file of a pull: what the Hub lists and what is on disk."""

    remote: RemoteFile
    local: Path
    state: FileState
    #: Bytes on disk that count: the whole file when verified, the ranges done when partial.
    have: int
    #: Disk space the file or its ``.part`` holds already (a part is preallocated).
    allocated: int = 0

    @property
    def path(self) -> str:
        return self.remote.path

    @property
    def size(self) -> int:
        return self.remote.size

    @property
    def sha256(self) -> str | None:
        return self.remote.sha256

    @property
    def digest(self) -> str:
        return self.remote.digest

    @property
    def part(self) -> Path:
        return self.local.with_name(self.local.name + ".part")

    @property
    def to_download(self) -> int:
        return 0 if self.state == "verified" else self.size - self.have

    @property
    def disk_needed(self) -> int:
        return 0 if self.state == "verified" else max(0, self.size - self.allocated)


@dataclass(frozen=True)
class PullPlan:
    #: What is being pulled, for messages (``deepseek-r1:IQ1_S``).
    label: str
    repo: str
    #: The commit every file is fetched at, so a concurrent upload cannot mix versions.
    revision: str
    directory: Path
    files: tuple[PlanFile, ...]
    disk_free: int

    @property
    def bytes_total(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def bytes_verified(self) -> int:
        return sum(f.size for f in self.files if f.state == "verified")

    @property
    def bytes_partial(self) -> int:
        return sum(f.have for f in self.files if f.state == "partial")

    @property
    def bytes_to_download(self) -> int:
        return sum(f.to_download for f in self.files)

    @property
    def disk_needed(self) -> int:
        return sum(f.disk_needed for f in self.files)

    @property
    def fits(self) -> bool:
        return self.disk_free >= self.disk_needed

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(f.local for f in self.files)

    @property
    def complete(self) -> bool:
        return all(f.state == "verified" for f in self.files)

    def disk_need(self) -> DiskNeed:
        return DiskNeed("download", self.directory, self.disk_needed)


@dataclass(frozen=True)
class PullResult:
    plan: PullPlan
    #: Local files in the plan's order (shard 1 first), all verified unless ``dry_run``.
    paths: tuple[Path, ...]
    bytes_downloaded: int
    files_downloaded: tuple[str, ...]
    dry_run: bool = False

    @property
    def digests(self) -> dict[str, str]:
        """``{file name: "sha256:<hex>"}``, what registration takes as known digests."""
        return {f.local.name: f.digest for f in self.plan.files if f.sha256}


def _plan_file(repo: str, remote: RemoteFile) -> PlanFile:
    local = local_path(repo, remote.path)
    part = local.with_name(local.name + ".part")
    state: FileState
    if is_verified(repo, remote, local):
        return PlanFile(remote, local, "verified", remote.size, remote.size)
    have = part_have(repo, remote, part)
    state = "partial" if have else ("mismatch" if local.exists() else "missing")
    allocated = allocated_bytes(part) if have else 0
    return PlanFile(remote, local, state, have, min(allocated, remote.size))


def plan_pull(repo: str, commit: str, remotes: Sequence[RemoteFile], *, label: str) -> PullPlan:
    """Compare the Hub's ``remotes`` at ``commit`` with what is on disk. Writes nothing but
    verification records; hashes files that were put there by hand (a few at a time)."""
    workers = max(1, min(len(remotes), os.cpu_count() or 1, 4))  # more only makes a disk seek
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ollamads-verify") as pool:
        files = tuple(pool.map(lambda r: _plan_file(repo, r), remotes))
    directory = repo_dir(repo)
    return PullPlan(label, repo, commit, directory, files, disk_free(directory))


def pull(
    plan: PullPlan,
    *,
    progress: Progress | None = None,
    connections: int | None = None,
    hash_mode: HashMode = "prefix",
) -> PullResult:
    """Make every file of the plan present and verified, fetching ranges in parallel.

    Re-running after any interruption continues every range where its bytes end."""
    check_space([plan.disk_need()], plan.label,
                "free some space, or set OLLAMADS_HOME to a folder on a larger disk")
    plan.directory.mkdir(parents=True, exist_ok=True)
    with exclusive(plan.directory / STATE_DIR / "lock", f"downloading into {plan.directory}"):
        # Planned before the lock was taken: look again at what another run may have finished.
        files = [f if f.state == "verified" else _plan_file(plan.repo, f.remote) for f in plan.files]
        todo = [f for f in files if f.state != "verified"]
        for f in files:
            if f.state == "verified" and progress:
                progress(ProgressEvent("download", f.path, f.size, f.size, "verified"))
        fetched = 0
        if todo:
            downloader = Downloader(
                plan.repo, plan.revision, [(f.remote, f.local) for f in todo],
                connections=connections, progress=progress, hash_mode=hash_mode,
            )
            try:
                fetched = downloader.run()
            except OSError as exc:  # a state file or record on a disk that just filled up
                if not is_disk_full(exc):
                    raise
                raise disk_full_error(plan.directory, downloader.still_needed(), plan.label) from None
    return PullResult(plan, plan.paths, fetched, tuple(f.path for f in todo))


__all__ = [
    "CONNECTIONS_ENV",
    "DEFAULT_CONNECTIONS",
    "PlanFile",
    "PullPlan",
    "PullResult",
    "RemoteFile",
    "connection_count",
    "hub_endpoint",
    "paths_info",
    "plan_pull",
    "pull",
    "repo_commit",
    "tree",
]
