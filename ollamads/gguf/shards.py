"""Split GGUF shard sets: naming, and checking a whole set before anything is written.

Unsloth publishes DeepSeek 671B as ``<Name>-UD-<QUANT>-00001-of-0000N.gguf``, llama.cpp's
split naming. A merge that starts on an incomplete or mixed set wastes an hour and hundreds
of gigabytes, so :func:`open_shard_set` reads every shard's header first and checks more
than llama-gguf-split does (it only checks the first shard's name).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ollamads.errors import ShardSetError
from ollamads.gguf.format import (
    KEY_SPLIT_COUNT,
    KEY_SPLIT_NO,
    KEY_SPLIT_TENSORS_COUNT,
    GGUFFile,
    read_gguf,
)
from ollamads.shardnames import SHARD_NAME_FORMAT, SHARD_NAME_RE, parse_shard_name, shard_name

_REDOWNLOAD = "the shards do not belong together; download the whole set again"
_MAX_LISTED = 5


@dataclass(frozen=True)
class ShardSet:
    first: Path
    paths: tuple[Path, ...]
    count: int
    tensor_count: int
    total_bytes: int
    is_split: bool = True  # False: one ordinary GGUF file, nothing to merge
    headers: tuple[GGUFFile, ...] = field(default=(), repr=False, compare=False)

    def describe(self) -> str:
        """One line for plans and logs."""
        from ollamads.units import format_bytes

        size = format_bytes(self.total_bytes)
        if not self.is_split:
            return f"{self.first.name}: single GGUF file, {self.tensor_count} tensors, {size}"
        return f"{self.first.name}: {self.count} shards, {self.tensor_count} tensors, {size}"


def open_shard_set(first_shard: str | Path) -> ShardSet:
    """Validate the whole shard set that ``first_shard`` starts and describe it.

    A file whose name is not a shard name and that carries no ``split.count`` > 1 is a
    single-file model: a ShardSet with ``count == 1`` and ``is_split == False``.
    """
    first = Path(first_shard)
    if not first.is_file():
        raise ShardSetError(f"{first} does not exist", "check the path to the first shard")
    parsed = parse_shard_name(first.name)
    if parsed is None:
        return _single_file(first)
    prefix, no, count = parsed
    if no != 1:
        raise ShardSetError(
            f"{first.name} is shard {no} of {count}, not the first",
            f"pass the first shard, {shard_name(prefix, 1, count)}",
        )
    paths = tuple(first.parent / shard_name(prefix, i, count) for i in range(1, count + 1))
    _check_files_present(first.parent, prefix, count, paths)
    headers = tuple(read_gguf(p) for p in paths)
    if count == 1 and KEY_SPLIT_COUNT not in headers[0].kv:
        return _single_file(first, headers[0])
    tensor_count = _check_split_keys(headers, count)
    return ShardSet(
        first=first,
        paths=paths,
        count=count,
        tensor_count=tensor_count,
        total_bytes=sum(h.file_size for h in headers),
        headers=headers,
    )


def _single_file(path: Path, header: GGUFFile | None = None) -> ShardSet:
    header = header or read_gguf(path)
    split_count = header.value(KEY_SPLIT_COUNT)
    # A file merged by llama-gguf-split still says split.count = 0; that one is whole.
    if isinstance(split_count, int) and split_count > 1:
        raise ShardSetError(
            f"{path.name} is shard {_int(header.value(KEY_SPLIT_NO), 0) + 1} of a "
            f"{split_count}-shard set, but its name does not end in -00001-of-"
            f"{split_count:05d}.gguf",
            "restore the original shard file names",
        )
    return ShardSet(
        first=path,
        paths=(path,),
        count=1,
        tensor_count=len(header.tensors),
        total_bytes=header.file_size,
        is_split=isinstance(split_count, int) and split_count == 1,
        headers=(header,),
    )


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def _check_files_present(directory: Path, prefix: str, count: int, paths: tuple[Path, ...]) -> None:
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise ShardSetError(
            f"shard set {prefix} is incomplete: {len(missing)} of {count} missing "
            f"({_listed(missing)})",
            f"download the missing shards into {directory}",
        )
    # Leftovers of another split of the same model (other count, or numbers beyond N) would
    # make it unclear which set the user means.
    extra = []
    for entry in directory.iterdir():
        other = parse_shard_name(entry.name)
        if other and other[0] == prefix and (other[2] != count or not 1 <= other[1] <= count):
            extra.append(entry.name)
    if extra:
        raise ShardSetError(
            f"{directory} has shards of {prefix} that are not part of the {count}-shard set: "
            f"{_listed(sorted(extra))}",
            "remove or move the files that do not belong to the set",
        )


def _int(value: object, default: int = -1) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _check_split_keys(headers: tuple[GGUFFile, ...], count: int) -> int:
    """Check every shard's split.* keys and tensor names; returns the total tensor count."""
    expected_total = _int(headers[0].value(KEY_SPLIT_TENSORS_COUNT))
    seen: dict[str, str] = {}
    for i, h in enumerate(headers):
        name = h.path.name
        if KEY_SPLIT_COUNT not in h.kv:
            raise ShardSetError(
                f"{name} has no {KEY_SPLIT_COUNT} key: it is not a shard of a split GGUF",
                _REDOWNLOAD,
            )
        for key, want, why in (
            (KEY_SPLIT_COUNT, count, f"but the set has {count} shards"),
            (KEY_SPLIT_NO, i, f"expected {i} for shard {i + 1}"),
            (KEY_SPLIT_TENSORS_COUNT, expected_total, f"but {headers[0].path.name} says {expected_total}"),
        ):
            got = _int(h.value(key))
            if got != want:
                raise ShardSetError(f"{name} says {key}={got}, {why}", _REDOWNLOAD)
        for t in h.tensors:
            if t.name in seen:
                raise ShardSetError(
                    f"tensor {t.name!r} is in both {seen[t.name]} and {name}", _REDOWNLOAD
                )
            seen[t.name] = name
    if len(seen) != expected_total:
        raise ShardSetError(
            f"the {count} shards hold {len(seen)} tensors, but {KEY_SPLIT_TENSORS_COUNT} "
            f"says {expected_total}",
            _REDOWNLOAD,
        )
    return len(seen)


#: The split naming lives in ollamads.shardnames (below the catalog too); it is part of what a
#: shard set is, so it is importable from here as well.
__all__ = ["SHARD_NAME_FORMAT", "SHARD_NAME_RE", "ShardSet", "open_shard_set", "parse_shard_name", "shard_name"]
