"""Byte counts for people, and the one disk-space check.

One unit convention everywhere ollamads prints a size: binary units, written with their "i"
(``KiB``, ``MiB``, ``GiB``, ``TiB``: powers of 1024). Memory is binary (RAM, VRAM, llama.cpp's
buffers in MiB), Unsloth's published "GB" are GiB (the catalog's ``size_gib``), and ``df -h``
counts the same way; only the Hub's web pages show decimal GB (a 182.5 GB file there is
170.0 GiB here). Sizes a user types (``--ram 128G``) are read the same way.

Every place that is about to write asks :func:`check_space` with a list of :class:`DiskNeed`
terms; the terms are grouped by filesystem, so two writes to one disk add up, and the error
names each term, its directory and the filesystem it lands on.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ollamads.errors import InsufficientSpaceError, OllamadsError

KB, MB, GB = 1_000, 1_000_000, 1_000_000_000
MIB, GIB = 1 << 20, 1 << 30


_BINARY_UNITS = (("TiB", 1 << 40), ("GiB", GIB), ("MiB", MIB), ("KiB", 1 << 10))


def format_bytes(n: int | float) -> str:
    """A size in the unit that fits it: ``0 B``, ``512 B``, ``12.3 KiB``, ``4.5 MiB``, ``170.0 GiB``."""
    for unit, size in _BINARY_UNITS:
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def format_gib(n: int | float) -> str:
    """A size in GiB whatever it is (one column of a table, memory budgets): ``170.0 GiB``."""
    return f"{n / GIB:.1f} GiB"


_SIZE_UNITS = {"": 1 << 30, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str, *, what: str = "size") -> int:
    """``"24"``, ``"24G"``, ``"24GB"``, ``"24GiB"`` -> 24 GiB; ``"512M"`` -> 512 MiB.

    Memory sizes are binary whatever the suffix says, as GPU makers and ``free -g`` mean them
    (a "24 GB" GPU has 24 GiB); a bare number is GiB."""
    raw = text.strip().lower().replace(" ", "")
    number = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    suffix = raw[len(number):]
    unit = "b" if suffix == "b" else suffix.removesuffix("ib").removesuffix("b")
    try:
        value = float(number)
    except ValueError:
        value = float("nan")
    if unit not in _SIZE_UNITS or value != value:
        raise OllamadsError(
            f"cannot read the {what} {text!r}", "write it like 24G, 24GB, 24GiB, 512M or 128"
        )
    if value < 0:
        raise OllamadsError(f"the {what} cannot be negative ({text})", "pass a size like 24G")
    return int(value * _SIZE_UNITS[unit])


def format_mib(n: int) -> str:
    """MiB, as llama.cpp prints device memory (``24152 MiB``), with a decimal when not whole."""
    mib = n / (1 << 20)
    return f"{mib:.0f} MiB" if mib == int(mib) else f"{mib:.1f} MiB"


def existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (where a new folder would be made)."""
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def disk_free(path: Path) -> int:
    """Free bytes on the filesystem that ``path`` is (or will be, once created) on."""
    return shutil.disk_usage(existing_ancestor(path)).free


@dataclass(frozen=True)
class Filesystem:
    device: int
    mount_point: Path
    source: str  # what /proc/mounts calls it (``/dev/vda``, ``tmpfs``), or "" elsewhere

    def describe(self) -> str:
        return f"{self.source} at {self.mount_point}" if self.source else str(self.mount_point)


def filesystem_of(path: Path) -> Filesystem:
    """The filesystem ``path`` (or its nearest existing ancestor) lives on."""
    probe = existing_ancestor(path).resolve()
    device = probe.stat().st_dev
    mount = probe
    while mount != mount.parent and mount.parent.stat().st_dev == device:
        mount = mount.parent
    return Filesystem(device, mount, _mount_source(mount))


def _mount_source(mount_point: Path) -> str:
    try:
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            lines = mounts.read().splitlines()
    except OSError:
        return ""
    source = ""
    for line in lines:  # the last matching line wins: later mounts hide earlier ones
        fields = line.split()
        if len(fields) >= 2 and fields[1].replace("\\040", " ") == str(mount_point):
            source = fields[0]
    return source


@dataclass(frozen=True)
class DiskNeed:
    """One term of a plan's disk use: ``what`` needs ``bytes`` in ``directory``."""

    what: str
    directory: Path
    bytes: int


@dataclass(frozen=True)
class DiskShortfall:
    filesystem: Filesystem
    needs: tuple[DiskNeed, ...]
    free: int

    @property
    def needed(self) -> int:
        return sum(n.bytes for n in self.needs)

    def describe(self) -> str:
        terms = " + ".join(
            f"{n.what} {format_bytes(n.bytes)} in {n.directory}" for n in self.needs if n.bytes
        )
        return (
            f"{terms} = {format_bytes(self.needed)} needed on {self.filesystem.describe()}, "
            f"{format_bytes(self.free)} free"
        )


def group_by_filesystem(needs: Iterable[DiskNeed]) -> list[tuple[Filesystem, list[DiskNeed]]]:
    groups: dict[int, tuple[Filesystem, list[DiskNeed]]] = {}
    for need in needs:
        fs = filesystem_of(need.directory)
        groups.setdefault(fs.device, (fs, []))[1].append(need)
    return list(groups.values())


def shortfalls(needs: Sequence[DiskNeed]) -> list[DiskShortfall]:
    """The filesystems that cannot hold what is planned for them."""
    short = []
    for fs, group in group_by_filesystem(n for n in needs if n.bytes > 0):
        free = disk_free(group[0].directory)
        if sum(n.bytes for n in group) > free:
            short.append(DiskShortfall(fs, tuple(group), free))
    return short


def check_space(needs: Sequence[DiskNeed], what: str, hint: str | None = None) -> None:
    """Raise :class:`InsufficientSpaceError` naming every term that does not fit."""
    short = shortfalls(needs)
    if short:
        raise InsufficientSpaceError(
            f"not enough disk for {what}: " + "; ".join(s.describe() for s in short),
            hint or "free some space, or point the folders named here at a larger disk",
        )


def is_disk_full(exc: BaseException) -> bool:
    import errno

    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(directory: Path, still_needed: int, what: str) -> InsufficientSpaceError:
    """The one-line error for a write that hit a full disk part-way."""
    return InsufficientSpaceError(
        f"the disk filled up while writing {what} in {directory}: "
        f"{format_bytes(still_needed)} more needed, {format_bytes(disk_free(directory))} free",
        "free some space and re-run the same command: it continues from what is kept",
    )


__all__ = [
    "GB",
    "GIB",
    "KB",
    "MB",
    "DiskNeed",
    "DiskShortfall",
    "Filesystem",
    "check_space",
    "disk_free",
    "disk_full_error",
    "existing_ancestor",
    "filesystem_of",
    "format_bytes",
    "format_gib",
    "format_mib",
    "group_by_filesystem",
    "is_disk_full",
    "parse_size",
    "shortfalls",
]
