"""Parallel, ranged, resumable downloads from the Hub, each file checked against its sha256.

The Hub's CDN limits what one connection gets, so a pull keeps many connections busy at once:
every file is cut into fixed-size ranges (8-64 MiB, a few per connection), and a pool of
workers takes ranges in file order, across files. Each worker writes its bytes with ``pwrite``
straight into the file's preallocated ``.part`` and then records how far its range got
(:class:`~ollamads.hub.records.PartState`), so a kill at any moment loses nothing: the next run
continues every range from its exact byte.

* Ranges are fetched at one commit, from the URL the Hub redirects to (its CDN); the token is
  sent to the Hub's own host only. A CDN that refuses a cached URL (an expired signature) gets
  a fresh redirect from the Hub.
* Every 206 must carry exactly the ``Content-Range`` asked for, and a 200 (the whole file) to a
  Range request is refused: bytes are only ever written where they belong.
* The sha256 is computed as the contiguous prefix grows (``hash_mode="prefix"``): a hasher
  thread reads back what the workers just wrote, from the page cache, while the download goes
  on. The file is renamed into place only when size and digest match; a mismatch deletes it.
  ``hash_mode="after"`` (one pass at the end) exists for the benchmark that compares the two.
* Each range retries dropped connections, 429 and 5xx answers with the backoff below (or the
  server's ``Retry-After``), starting the count again whenever bytes arrive.
"""

from __future__ import annotations

import functools
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import requests

from ollamads.errors import ChecksumError, HubError, OllamadsError
from ollamads.fileio import Writeback, allocated_bytes, preallocate, pwrite_all
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
from ollamads.hub.records import (
    Hasher,
    PartState,
    digest_of,
    new_hasher,
    remember_verified,
)
from ollamads.progress import Progress, ProgressEvent
from ollamads.units import MIB, disk_full_error, format_bytes, is_disk_full

HashMode = Literal["prefix", "after"]

#: Chosen by measurement (benchmarks/download.py --sweep, README "Download speed"; measured with
#: a stand-in that held each connection to 8 MB/s and had no shared link): doubling from 4 to 8
#: to 16 connections gained 80% and 66%, then 32 and 64 only 25% and 16% more on this 2-core
#: machine; 16 already carries 128 MB/s (a 1 Gbit/s link) at that rate, and kept 95-100% of a
#: shared 100 MB/s link while bytes flowed. Faster links raise it with --connections /
#: OLLAMADS_CONNECTIONS.
DEFAULT_CONNECTIONS = 16
CONNECTIONS_ENV = "OLLAMADS_CONNECTIONS"
MAX_CONNECTIONS = 64
#: Smaller ranges would spend too much of their time waiting for the CDN's first byte.
MIN_CHUNK = 4 * MIB
MAX_CHUNK = 64 * MIB
#: Ranges per connection: enough that the last few ranges of a pull end close together.
CHUNKS_PER_CONNECTION = 4
#: Seconds to wait before each retry of a range that brought no new bytes; a retry that does
#: bring bytes starts the count again (as huggingface_hub does).
RETRY_BACKOFF_S: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 15.0)
REPORT_INTERVAL_S = 0.1
#: Bytes the hasher reads back at a time.
HASH_READ = 8 * MIB
#: Written bytes handed to the kernel's writeback at a time (see :func:`_write_back`).
WRITE_BACK_STEP = 8 * MIB
#: Hashed bytes that may still be on their way to the disk; the hasher waits for older ones,
#: so the fsync before the rename has at most this much left (see :meth:`Downloader._hash_range`).
SETTLE_WINDOW = 64 * MIB


def _write_back(fd: int, offset: int, length: int) -> None:
    """Start writing these bytes to disk now; pages already clean leave the page cache.

    Without it the kernel keeps a download's bytes dirty until its dirty limits are reached
    (gigabytes), and the fsync before the rename then writes them all while nothing else
    happens: 1.3-1.4 s after the last byte of a 500 MB file at 100 MB/s here
    (benchmarks/download.py). Linux's POSIX_FADV_DONTNEED starts writeback of dirty pages
    without waiting for it and drops only clean ones: called as ranges are written it starts
    the writeback (the hasher still reads the pages from the cache), called again once they
    are hashed it drops them, so a 100+ GB download does not evict everything else either."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def connection_count(explicit: int | None = None) -> int:
    """``explicit``, else ``OLLAMADS_CONNECTIONS``, else :data:`DEFAULT_CONNECTIONS`."""
    value = explicit if explicit is not None else os.environ.get(CONNECTIONS_ENV, "")
    if value == "":
        return DEFAULT_CONNECTIONS
    try:
        count = int(value)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_CONNECTIONS:
        raise OllamadsError(
            f"bad number of connections {value!r}",
            f"use a whole number from 1 to {MAX_CONNECTIONS} (--connections or {CONNECTIONS_ENV})",
        )
    return count


def chunk_size_for(size: int, connections: int) -> int:
    """Range size for a pull of ``size`` bytes: the bytes cut evenly into a few ranges per
    connection (so the last ranges end together, not one connection finishing alone), within
    MIN_CHUNK..MAX_CHUNK, a multiple of 64 KiB."""
    unit = 64 << 10
    wanted = -(-size // (connections * CHUNKS_PER_CONNECTION))
    wanted = -(-wanted // unit) * unit
    return min(MAX_CHUNK, max(MIN_CHUNK, wanted))


@dataclass
class _Target:
    """One file being fetched: its ``.part``, its range table, its hash and where to GET it."""

    file: RemoteFile
    local: Path
    state: PartState
    start_url: str
    hasher: Hasher
    fd: int = -1
    #: The URL that last answered 206 (the CDN's, after the Hub's redirect); None: ask the Hub.
    url: str | None = None
    hashed: int = 0
    #: Pushes hashed bytes to the disk (None until the hashing starts).
    settle: Writeback | None = None
    fetched: int = 0
    finished: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def part(self) -> Path:
        return self.local.with_name(self.local.name + ".part")


class Downloader:
    """Fetch ``files`` of ``repo`` at ``commit`` into their local paths; see the module doc."""

    def __init__(
        self,
        repo: str,
        commit: str,
        files: Sequence[tuple[RemoteFile, Path]],
        *,
        connections: int | None = None,
        progress: Progress | None = None,
        hash_mode: HashMode = "prefix",
    ) -> None:
        from huggingface_hub import hf_hub_url

        self.repo, self.commit = repo, commit
        self.connections = connection_count(connections)
        # One range size for the whole pull, so a quant's shards end together too.
        self.chunk = chunk_size_for(sum(file.size for file, _ in files), self.connections)
        self.progress = progress
        self.hash_mode = hash_mode
        endpoint = hub_endpoint()
        self.hub_host = host_of(endpoint)
        self.targets = [
            _Target(file, local, PartState(repo, file),
                    hf_hub_url(repo, file.path, revision=commit, endpoint=endpoint), new_hasher(file))
            for file, local in files
        ]
        self.stop = threading.Event()
        self._error: BaseException | None = None
        self._jobs: list[tuple[_Target, int]] = []
        self._next = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._report_lock = threading.Lock()
        self._last_report: dict[str, float] = {}
        #: Verified files on their way to their final names (None: no more).
        self._verified: queue.Queue[_Target | None] = queue.Queue()

    # --- the whole pull -----------------------------------------------------------------------

    def run(self) -> int:
        """Download everything; returns the bytes fetched. Raises the first failure."""
        try:
            for target in self.targets:
                self._open(target)
            self._jobs = [
                (t, i) for t in self.targets for i in range(t.state.count)
                if t.state.done[i] < self._length(t, i)
            ]
            workers = [
                threading.Thread(target=self._worker, name=f"ollamads-range-{n}", daemon=True)
                for n in range(min(self.connections, len(self._jobs)))
            ]
            hasher = threading.Thread(target=self._hash_all, name="ollamads-hash", daemon=True)
            publisher = threading.Thread(target=self._publish_all, name="ollamads-publish", daemon=True)
            threads = [*workers, hasher, publisher]
            for thread in threads:
                thread.start()
            try:
                for thread in threads:
                    while thread.is_alive():
                        thread.join(0.2)
            except BaseException:
                self.stop.set()  # Ctrl-C: every range keeps what it has for the next run
                with self._wake:
                    self._wake.notify_all()
                for thread in threads:
                    thread.join()
                raise
            if self._error is not None:
                raise self._error
            return sum(t.fetched for t in self.targets)
        finally:
            for target in self.targets:
                target.state.close()
                if target.fd >= 0:
                    os.close(target.fd)
                    target.fd = -1

    def _open(self, target: _Target) -> None:
        """Open the ``.part`` to continue it, or start a fresh, preallocated one."""
        part = target.part
        part.parent.mkdir(parents=True, exist_ok=True)
        if target.state.load(part):
            target.fd = os.open(part, os.O_RDWR | os.O_CLOEXEC)
            self._report(target, "resumed" if target.state.have else "queued", force=True)
        else:
            target.state.discard()
            target.fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                preallocate(target.fd, target.file.size)
            except OSError as exc:
                if is_disk_full(exc):
                    raise disk_full_error(part.parent, self.still_needed(), target.file.path) from None
                raise
            target.state.start(self.chunk)
            self._report(target, "queued", force=True)
        target.state.open()
        target.hasher = new_hasher(target.file)

    @staticmethod
    def _length(target: _Target, index: int) -> int:
        start, end = target.state.bounds(index)
        return end - start

    def still_needed(self) -> int:
        """Disk the unfinished files still need: their sizes less what their parts hold (all of
        a preallocated part, the ranges written of a sparse one)."""
        return sum(
            max(0, t.file.size - allocated_bytes(t.part)) for t in self.targets if not t.finished
        )

    def _fail(self, exc: BaseException) -> None:
        with self._wake:
            if self._error is None:
                self._error = exc
            self.stop.set()
            self._wake.notify_all()

    # --- workers: one connection each ----------------------------------------------------------

    def _worker(self) -> None:
        with requests.Session() as session:
            try:
                while not self.stop.is_set():
                    with self._lock:
                        if self._next >= len(self._jobs):
                            return
                        target, index = self._jobs[self._next]
                        self._next += 1
                    self._fetch_range(session, target, index)
            except BaseException as exc:
                self._fail(exc)

    def _fetch_range(self, session: requests.Session, target: _Target, index: int) -> None:
        start, end = target.state.bounds(index)
        failures = 0
        while not self.stop.is_set():
            before = target.state.done[index]
            if start + before >= end:
                return
            try:
                self._get(session, target, index, start + before, end)
            except RetryLater as exc:
                if target.state.done[index] > before:
                    failures = 0
                if failures >= len(RETRY_BACKOFF_S):
                    raise self._gave_up(target, str(exc)) from None
                wait = exc.wait if exc.wait is not None else RETRY_BACKOFF_S[failures]
                failures += 1
                self.stop.wait(wait)

    def _open_response(
        self, session: requests.Session, target: _Target, pos: int, end: int
    ) -> requests.Response:
        """GET ``bytes=pos-(end-1)`` from the CDN URL that answered last, else from the Hub."""
        check = functools.partial(require_listed_upload, target.file)
        if target.url is not None:
            try:
                response = ranged_get(session, target.url, self.hub_host, pos, end,
                                      what=target.file.path, check=check)
            except RetryLater:
                target.url = None  # the CDN may have failed: ask the Hub next time
                raise
            if response.status_code == 206:
                return response
            # An expired signed URL (403) or a failing CDN node: ask the Hub for a fresh
            # redirect now; only a fresh URL that fails counts against the retries.
            target.url = None
            response.close()
        return ranged_get(session, target.start_url, self.hub_host, pos, end,
                          what=target.file.path, check=check)

    def _get(self, session: requests.Session, target: _Target, index: int, pos: int, end: int) -> None:
        with self._open_response(session, target, pos, end) as response:
            require_range(response, target.file, pos, end, repo=self.repo, hub_host=self.hub_host)
            target.url = response.url
            start = target.state.bounds(index)[0]
            unflushed = pos
            for data in body_chunks(response, end - pos):
                if self.stop.is_set():
                    return
                try:
                    pwrite_all(target.fd, data, pos)
                except OSError as exc:
                    if is_disk_full(exc):
                        raise disk_full_error(
                            target.part.parent, self.still_needed(), target.file.path
                        ) from None
                    raise
                pos += len(data)
                if pos - unflushed >= WRITE_BACK_STEP or pos == end:
                    _write_back(target.fd, unflushed, pos - unflushed)
                    unflushed = pos
                target.state.set_done(index, pos - start)
                with self._lock:
                    target.fetched += len(data)
                self._report(target, "downloading")
                if self.hash_mode == "prefix":
                    with self._wake:
                        self._wake.notify_all()

    def _gave_up(self, target: _Target, reason: str) -> HubError:
        have = target.state.have
        return HubError(
            f"{target.file.path}: {reason}, {len(RETRY_BACKOFF_S)} retries brought no new bytes "
            f"({format_bytes(have)} of {format_bytes(target.file.size)} kept in {target.part.name})",
            "check the network and re-run the same command: it resumes from there",
        )

    # --- hashing and finishing, in file order --------------------------------------------------

    def _hash_all(self) -> None:
        """Hash the files in order; each verified one goes to the publisher, so its fsync does
        not hold up the hashing of the next (measured: 0.4-0.5 s per shard at the end of a
        6-shard pull, benchmarks/download.py)."""
        try:
            for target in self.targets:
                if not self._hash(target):
                    return
                self._verify(target)
                self._verified.put(target)
        except BaseException as exc:
            self._fail(exc)
        finally:
            self._verified.put(None)

    def _publish_all(self) -> None:
        try:
            while (target := self._verified.get()) is not None:
                self._publish(target)
        except BaseException as exc:
            self._fail(exc)

    def _hash(self, target: _Target) -> bool:
        """Hash the part as far as it is contiguous; True once the whole file is hashed."""
        size = target.file.size
        while target.hashed < size:
            if self.stop.is_set():
                return False
            ready = target.state.prefix() if self.hash_mode == "prefix" else (
                size if target.state.have >= size else 0
            )
            if ready > target.hashed:
                if self.hash_mode == "after" and target.hashed == 0:
                    self._report(target, "verifying", force=True)
                target.hashed += self._hash_range(target, target.hashed, ready)
                continue
            with self._wake:
                self._wake.wait(0.2)
        return True

    def _hash_range(self, target: _Target, start: int, end: int) -> int:
        """Hash ``[start, end)`` and see it onto the disk behind the hash.

        Waiting here, in the hasher, for all but the last :data:`SETTLE_WINDOW` hashed bytes to
        reach the disk costs the download nothing, and leaves the final fsync little to do:
        without it, that fsync took 0.8 s after the last byte of a 1,000 MB single file
        (benchmarks/download.py), writing back and converting the preallocated extents of the
        ranges that ended last."""
        if target.settle is None or target.settle.position != start:
            target.settle = Writeback(target.fd, start, step=WRITE_BACK_STEP, window=SETTLE_WINDOW)
        pos = start
        while pos < end:
            data = os.pread(target.fd, min(HASH_READ, end - pos), pos)
            if not data:
                break
            target.hasher.update(data)
            target.settle.advance(len(data))
            _write_back(target.fd, pos, len(data))
            pos += len(data)
        return pos - start

    def _verify(self, target: _Target) -> None:
        got = digest_of(target.file, target.hasher.hexdigest())
        if got != target.file.digest:
            os.close(target.fd)
            target.fd = -1
            target.part.unlink(missing_ok=True)
            target.state.discard()
            raise ChecksumError(
                f"{target.file.path} arrived corrupted (got {got[:19]}…, "
                f"the Hub lists {target.file.digest[:19]}…); deleted it",
                "re-run the same command to download it again",
            )

    def _publish(self, target: _Target) -> None:
        """A verified file under its final name, once its bytes are on disk."""
        os.fsync(target.fd)  # the rename must not publish bytes still only in the page cache
        os.close(target.fd)
        target.fd = -1
        os.replace(target.part, target.local)
        target.finished = True
        target.state.discard()
        remember_verified(self.repo, target.file, target.local)
        self._report(target, "done", force=True)

    # --- progress ------------------------------------------------------------------------------

    def _report(self, target: _Target, state: str, *, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        with self._report_lock:
            last = self._last_report.get(target.file.path, 0.0)
            if not force and now - last < REPORT_INTERVAL_S:
                return
            self._last_report[target.file.path] = now
            done = target.file.size if state == "done" else target.state.have
            self.progress(ProgressEvent("download", target.file.path, done, target.file.size, state))


__all__ = [
    "CONNECTIONS_ENV",
    "DEFAULT_CONNECTIONS",
    "Downloader",
    "HashMode",
    "chunk_size_for",
    "connection_count",
    "ranged_get",
]
