"""What ollamads remembers about files on disk, so 100+ GB is never hashed twice.

* ``<repo dir>/.ollamads/<path>.json``: a verified file's size, mtime_ns and digest. A file whose
  size or mtime changed since is hashed again.
* ``<repo dir>/.ollamads/<path>.part.json``: which upload a ``.part`` belongs to (digest, size)
  and how it is cut into chunks. A part is only resumed when the Hub still lists the same
  digest and size, so bytes of two uploads are never spliced together.
* ``<repo dir>/.ollamads/<path>.part.ranges``: one little-endian u64 per chunk, the bytes of
  that chunk already in the ``.part``. Each is written right after its data, with ``pwrite``,
  so a killed process leaves a table that never claims more than the part holds: a re-run
  continues every range from its exact byte.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ollamads.hub.listing import RemoteFile
from ollamads.paths import models_dir, read_record, repo_dir, write_record

STATE_DIR = ".ollamads"
PART_SUFFIX = ".part"
HASH_CHUNK = 8 << 20
_U64 = struct.Struct("<Q")


def record_path(repo: str, path: str, suffix: str = ".json") -> Path:
    return repo_dir(repo) / STATE_DIR / (path + suffix)


class Hasher(Protocol):
    """What the download needs of a hashlib object."""

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


def new_hasher(file: RemoteFile) -> Hasher:
    if file.sha256:
        return hashlib.sha256()
    hasher = hashlib.sha1()
    hasher.update(b"blob %d\0" % file.size)  # git's blob header: the Hub's oid is a git sha1
    return hasher


def digest_of(file: RemoteFile, hexdigest: str) -> str:
    return ("sha256:" if file.sha256 else "git-sha1:") + hexdigest


def hash_into(hasher: Any, path: Path, start: int = 0, end: int | None = None) -> int:
    """Feed bytes ``[start, end)`` of ``path`` to ``hasher``; returns how many were read."""
    done = 0
    with open(path, "rb", buffering=0) as handle:
        handle.seek(start)
        while end is None or start + done < end:
            want = HASH_CHUNK if end is None else min(HASH_CHUNK, end - start - done)
            chunk = handle.read(want)
            if not chunk:
                break
            hasher.update(chunk)
            done += len(chunk)
    return done


def _stat_record(local: Path, file: RemoteFile) -> dict[str, Any]:
    stat = local.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "digest": file.digest}


def remember_verified(repo: str, file: RemoteFile, local: Path) -> None:
    write_record(record_path(repo, file.path), _stat_record(local, file))


def recorded_verified(repo: str, file: RemoteFile, local: Path) -> bool:
    """True if a record says ``local`` was verified as ``file`` and it has not changed since;
    never hashes (False when there is no such record)."""
    try:
        return read_record(record_path(repo, file.path)) == _stat_record(local, file)
    except OSError:
        return False


def _record_of_download(local: Path) -> Path | None:
    """Where the verification record of ``local`` is, if it is a download of ollamads."""
    try:
        relative = local.resolve().relative_to(models_dir().resolve())
    except (ValueError, OSError):
        return None
    if len(relative.parts) < 3:
        return None
    return record_path("/".join(relative.parts[:2]), "/".join(relative.parts[2:]))


def recorded_sha256(local: Path) -> str | None:
    """The Hub's sha256 that ``local``, a download of ollamads, was verified against, if it has
    not changed since (its record's size and mtime): a blob digest without reading the file."""
    where = _record_of_download(local)
    if where is None:
        return None
    record = read_record(where)
    try:
        stat = local.stat()
    except OSError:
        return None
    digest = record.get("digest")
    if record.get("size") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns \
            and isinstance(digest, str) and digest.startswith("sha256:"):
        return digest
    return None


def keep_verified_after_touch(local: Path, digest: str) -> None:
    """Ollama sets the times of each blob ``/api/create`` uses (os.Chtimes), and a hard-linked
    download shares them: its record follows the new mtime, as the bytes are the ones verified
    (ollamads never writes into a verified file). Without this, the next run would read the whole
    file again to verify it."""
    where = _record_of_download(local)
    if where is None:
        return
    record = read_record(where)
    try:
        stat = local.stat()
    except OSError:
        return
    if record.get("digest") == digest and record.get("size") == stat.st_size:
        write_record(where, {**record, "mtime_ns": stat.st_mtime_ns})


def is_verified(repo: str, file: RemoteFile, local: Path) -> bool:
    """True if ``local`` is the file the Hub lists: trusted from its record, else hashed."""
    try:
        if local.stat().st_size != file.size:
            return False
    except FileNotFoundError:
        return False
    if read_record(record_path(repo, file.path)) == _stat_record(local, file):
        return True
    hasher = new_hasher(file)
    hash_into(hasher, local)
    if digest_of(file, hasher.hexdigest()) != file.digest:
        return False
    remember_verified(repo, file, local)
    return True


@dataclass(frozen=True)
class PartLayout:
    """How a ``.part`` is cut into ranges: fixed ``chunk`` bytes, the last one shorter."""

    size: int
    chunk: int

    @property
    def count(self) -> int:
        return max(1, -(-self.size // self.chunk))

    def bounds(self, index: int) -> tuple[int, int]:
        start = index * self.chunk
        return start, min(self.size, start + self.chunk)


class PartState:
    """The ``.part.json`` and ``.part.ranges`` of one file being downloaded."""

    def __init__(self, repo: str, file: RemoteFile) -> None:
        self.file = file
        self.meta_path = record_path(repo, file.path, PART_SUFFIX + ".json")
        self.ranges_path = record_path(repo, file.path, PART_SUFFIX + ".ranges")
        self._fd: int | None = None
        self.layout: PartLayout | None = None
        self.done: list[int] = []

    def load(self, part: Path) -> bool:
        """Read a previous run's state; False when there is none this run can build on."""
        meta = read_record(self.meta_path)
        if meta.get("digest") != self.file.digest or meta.get("size") != self.file.size:
            return False
        chunk = meta.get("chunk")
        try:
            if not isinstance(chunk, int) or chunk <= 0 or part.stat().st_size != self.file.size:
                return False
            raw = self.ranges_path.read_bytes()
        except OSError:
            return False
        layout = PartLayout(self.file.size, chunk)
        if len(raw) != layout.count * _U64.size:
            return False
        done = [n for (n,) in _U64.iter_unpack(raw)]
        if any(n > layout.bounds(i)[1] - layout.bounds(i)[0] for i, n in enumerate(done)):
            return False
        self.layout, self.done = layout, done
        return True

    def start(self, chunk: int) -> None:
        """A fresh state: every range at 0."""
        self.layout = PartLayout(self.file.size, chunk)
        self.done = [0] * self.layout.count
        self.ranges_path.parent.mkdir(parents=True, exist_ok=True)
        self.ranges_path.write_bytes(bytes(_U64.size * self.layout.count))
        write_record(self.meta_path, {"digest": self.file.digest, "size": self.file.size, "chunk": chunk})

    def open(self) -> None:
        self._fd = os.open(self.ranges_path, os.O_RDWR | os.O_CLOEXEC)

    def set_done(self, index: int, done: int) -> None:
        """Called after the data is written: the table never runs ahead of the part."""
        self.done[index] = done
        assert self._fd is not None
        os.pwrite(self._fd, _U64.pack(done), index * _U64.size)

    @property
    def have(self) -> int:
        return sum(self.done)

    @property
    def count(self) -> int:
        """How many ranges the file is cut into (after :meth:`load` or :meth:`start`)."""
        assert self.layout is not None
        return self.layout.count

    def bounds(self, index: int) -> tuple[int, int]:
        """Where range ``index`` starts and ends (after :meth:`load` or :meth:`start`)."""
        assert self.layout is not None
        return self.layout.bounds(index)

    def prefix(self) -> int:
        """Bytes from the start of the file that are all present."""
        total = 0
        for index, done in enumerate(self.done):
            start, end = self.bounds(index)
            total += done
            if done < end - start:
                break
        return total

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        self.close()
        self.meta_path.unlink(missing_ok=True)
        self.ranges_path.unlink(missing_ok=True)


def part_have(repo: str, file: RemoteFile, part: Path) -> int:
    """Bytes of a ``.part`` that a resume can build on (0 if it belongs to another upload)."""
    state = PartState(repo, file)
    return state.have if state.load(part) else 0


__all__ = [
    "PART_SUFFIX",
    "STATE_DIR",
    "PartLayout",
    "PartState",
    "digest_of",
    "hash_into",
    "is_verified",
    "new_hasher",
    "part_have",
    "record_path",
    "recorded_verified",
    "remember_verified",
]
