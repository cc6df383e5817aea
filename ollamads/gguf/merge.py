"""Merge a split GGUF into one file, for Ollama versions that cannot load shards.

:func:`merge_builtin` writes exactly what ``llama-gguf-split --merge`` writes (shard 1's
KVs with ``split.count`` moved to the end as u16 0, all shards' tensor infos with ggml's
n_dims, 32-byte alignment, zero padding after the header and each tensor), but streams
tensor data with ``os.copy_file_range`` so reads and writes overlap inside the kernel. The
one deliberate difference: when shard 1 sets ``general.alignment`` to something other than
32, it is applied (llama-gguf-split copies the key but pads to 32, writing a file that
llama.cpp then rejects: "tensor ... has offset 672, expected 704").

Both mergers validate the whole shard set first, write to ``.<name>.partial-XXXX`` next to
the output and rename it at the end, and delete the partial file on any failure.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ollamads.errors import (
    MergeToolError,
    OllamadsError,
    OutputExistsError,
    ShardSetError,
    ToolNotFoundError,
)
from ollamads.fileio import Copier, TrailingHasher, atomic_output
from ollamads.gguf.format import (
    GGUF_DEFAULT_ALIGNMENT,
    KEY_FILE_TYPE,
    KEY_QUANTIZATION_VERSION,
    KEY_SPLIT_COUNT,
    KEY_SPLIT_NO,
    KEY_SPLIT_TENSORS_COUNT,
    GGUFValueType,
    TensorInfo,
    align_up,
    ggml_n_dims,
    pack_header,
)
from ollamads.gguf.shards import ShardSet, open_shard_set
from ollamads.locking import exclusive
from ollamads.paths import ollamads_home
from ollamads.units import DiskNeed, check_space, disk_free, disk_full_error, is_disk_full

ByteProgress = Callable[[int, int], None]
MergeMethod = Literal["auto", "builtin", "llama-gguf-split"]

GGUF_SPLIT_PROGRAM = "llama-gguf-split"
ENV_GGUF_SPLIT = "OLLAMADS_GGUF_SPLIT"
_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class MergeResult:
    out: Path
    method: Literal["builtin", "llama-gguf-split"]
    nbytes: int


@dataclass(frozen=True)
class MergePlan:
    shards: ShardSet
    out: Path
    nbytes: int  # size of the merged file: the free space the merge needs
    method: Literal["builtin", "llama-gguf-split"]
    binary: str | None
    disk_free: int

    @property
    def enough_space(self) -> bool:
        return self.disk_free >= self.nbytes


@dataclass(frozen=True)
class _Layout:
    header: bytes  # already padded to the alignment
    pieces: tuple[tuple[Path, tuple[tuple[int, int], ...]], ...]  # shard, (offset, nbytes)...
    data_bytes: int
    total_bytes: int
    alignment: int


#: How the one merged file is laid out:
#: ``gguf-split``: what ``llama-gguf-split --merge`` writes (shard order, split.count = 0 kept);
#: ``quantize-copy``: what ``llama-quantize --allow-requantize IN OUT COPY`` writes, which is the
#: model blob Ollama v0.30+ stores for a GGUF (split keys dropped, quantization_version and
#: file_type moved to the end, tensors in llama.cpp's weight order, 32-byte alignment).
MergeLayout = Literal["gguf-split", "quantize-copy"]
GGML_QNT_VERSION = 2


def _blk_order(name: str) -> tuple[int, bytes]:
    """llama.cpp's weight_name_comparer: tensors outside ``blk.N.`` first, then by N, by name."""
    layer = -1
    if name.startswith("blk."):
        digits = ""
        for char in name[4:]:
            if not char.isdigit():
                break
            digits += char
        if digits and name[4 + len(digits) : 5 + len(digits)] == ".":
            layer = int(digits)
    return layer, name.encode("utf-8", "surrogateescape")


def quantize_copy_supported(shards: ShardSet) -> bool:
    """Whether :func:`write_merged` can write the ``quantize-copy`` layout for these files."""
    first = shards.headers[0]
    file_type = first.kv.get(KEY_FILE_TYPE)
    return (
        file_type is not None
        and file_type[0] == GGUFValueType.UINT32
        and first.alignment == GGUF_DEFAULT_ALIGNMENT
    )


@functools.lru_cache(maxsize=4)  # sized, then written: the header of a 671B model is megabytes
def _layout(shards: ShardSet, style: MergeLayout = "gguf-split") -> _Layout:
    first = shards.headers[0]
    kv = dict(first.kv)
    entries = [(h, t) for h in shards.headers for t in h.tensors]
    if style == "gguf-split":
        # llama-gguf-split sets split.count = 0 as u16, and setting a key appends it.
        kv.pop(KEY_SPLIT_COUNT, None)
        kv[KEY_SPLIT_COUNT] = (GGUFValueType.UINT16, 0)
        align = first.alignment
    else:
        if not quantize_copy_supported(shards):
            raise ShardSetError(
                f"{first.path.name} has no uint32 {KEY_FILE_TYPE} or a non-default alignment",
                "register it through the server instead",
            )
        file_type = kv.pop(KEY_FILE_TYPE)
        kv.pop(KEY_QUANTIZATION_VERSION, None)
        kv[KEY_QUANTIZATION_VERSION] = (GGUFValueType.UINT32, GGML_QNT_VERSION)
        kv[KEY_FILE_TYPE] = file_type
        for key in (KEY_SPLIT_NO, KEY_SPLIT_COUNT, KEY_SPLIT_TENSORS_COUNT):
            kv.pop(key, None)
        entries.sort(key=lambda e: _blk_order(e[1].name))
        align = GGUF_DEFAULT_ALIGNMENT
    infos, offset, data_bytes = [], 0, 0
    pieces: list[tuple[Path, list[tuple[int, int]]]] = []
    for h, t in entries:
        n = t.nbytes
        infos.append(TensorInfo(t.name, t.shape[: ggml_n_dims(t.shape)], t.ggml_type, offset))
        if not pieces or pieces[-1][0] != h.path:
            pieces.append((h.path, []))
        pieces[-1][1].append((h.data_offset + t.offset, n))
        offset += align_up(n, align)
        data_bytes += n
    header = pack_header(kv, infos)
    header += bytes(align_up(len(header), align) - len(header))
    return _Layout(
        header, tuple((p, tuple(spans)) for p, spans in pieces), data_bytes, len(header) + offset, align
    )


def _require_split(shards: ShardSet) -> None:
    if not shards.is_split:
        raise ShardSetError(
            f"{shards.first.name} is a single GGUF file: there is nothing to merge",
            "use the file as it is",
        )


def _check_output(shards: ShardSet, out: Path, force: bool) -> None:
    if any(out.resolve() == p.resolve() for p in shards.paths):
        raise OutputExistsError(f"{out} is one of the input shards", "choose another output path")
    if not out.parent.is_dir():
        raise OllamadsError(f"output directory {out.parent} does not exist", "create it first")
    if out.exists() and not force:
        raise OutputExistsError(f"{out} already exists", "pass --force to overwrite it")


@contextlib.contextmanager
def _only_merge_into(out: Path) -> Iterator[None]:
    """Two merges into one output would each write it whole and race to rename it: a second
    one is refused while the first runs (and then finds the output, as it would afterwards)."""
    key = hashlib.sha256(str(out.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    with exclusive(ollamads_home() / "locks" / f"merge-{key}", f"merging into {out}"):
        yield


def _check_space(directory: Path, needed: int) -> None:
    check_space([DiskNeed("merged file", directory, needed)], "the merge",
                "free up space or write the merged file to another disk")


def merged_size(shards: ShardSet, style: MergeLayout = "gguf-split") -> int:
    """Bytes of the merged file (header, padding and every tensor)."""
    return _layout(shards, style).total_bytes


def write_merged(
    shards: ShardSet,
    fd: int,
    *,
    style: MergeLayout = "gguf-split",
    progress: ByteProgress | None = None,
    sha256: bool = False,
) -> str | None:
    """Write the merged GGUF to ``fd`` (at its current position, which must be 0 when hashing);
    with ``sha256`` return its hex digest, computed while it is written. ``fd`` is fsynced.

    The ``quantize-copy`` layout also takes a single file (it reorders, as llama-quantize does).
    """
    if style == "gguf-split":
        _require_split(shards)
    layout = _layout(shards, style)
    hasher = TrailingHasher(fd) if sha256 else None
    written = 0

    def report(n: int) -> None:
        nonlocal written
        written += n
        if hasher:
            hasher.wrote(written)
        if progress:
            progress(written, layout.total_bytes)

    try:
        if progress:
            progress(0, layout.total_bytes)
        copier = Copier(fd, report)
        copier.write(layout.header)
        for path, spans in layout.pieces:
            src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                for offset, nbytes in spans:
                    copier.copy(src, offset, nbytes, functools.partial(
                        ShardSetError, f"{path.name} ended early while merging", "download it again"))
                    copier.write(bytes(align_up(nbytes, layout.alignment) - nbytes))
            finally:
                os.close(src)
        os.fsync(fd)  # a rename after this must not publish a file whose data is still cached
    except BaseException:
        if hasher:
            hasher.abandon()
        raise
    return hasher.hexdigest() if hasher else None


def merge_builtin(
    shards: ShardSet, out: Path, *, force: bool = False, progress: ByteProgress | None = None
) -> Path:
    """Merge with the built-in streaming merger; byte-identical to llama-gguf-split."""
    merge_builtin_hashed(shards, out, force=force, progress=progress, sha256=False)
    return Path(out)


def merge_builtin_hashed(
    shards: ShardSet, out: Path, *, force: bool = False, progress: ByteProgress | None = None,
    sha256: bool = True,
) -> str | None:
    """:func:`merge_builtin` that also returns the merged file's sha256 (hex), computed while
    it is written: no second read of a file that is about to be uploaded."""
    out = Path(out)
    _require_split(shards)
    with _only_merge_into(out):
        return _merge_builtin_locked(shards, out, force, progress, sha256)


def _merge_builtin_locked(
    shards: ShardSet, out: Path, force: bool, progress: ByteProgress | None, sha256: bool,
) -> str | None:
    _check_output(shards, out, force)
    size = merged_size(shards)
    _check_space(out.parent, size)
    try:
        with atomic_output(out) as tmp:
            # Read and write: the hash is taken by reading back what was written.
            mode = os.O_RDWR if sha256 else os.O_WRONLY
            fd = os.open(tmp, mode | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                return write_merged(shards, fd, progress=progress, sha256=sha256)
            finally:
                os.close(fd)
    except OSError as exc:
        if is_disk_full(exc):  # another writer took the space the check saw; nothing is kept
            raise disk_full_error(out.parent, size, out.name) from None
        raise


def _last_line(text: str) -> str:
    lines = [ln.replace("\033[3D", "").strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    return lines[-1] if lines else "no error output"


def merge_with_llama_gguf_split(
    shards: ShardSet,
    out: Path,
    *,
    binary: str,
    force: bool = False,
    progress: ByteProgress | None = None,
) -> Path:
    """Merge by running ``llama-gguf-split --merge``; progress from the growing output size."""
    out = Path(out)
    _require_split(shards)
    with _only_merge_into(out):
        return _merge_with_tool_locked(shards, out, binary, force, progress)


def _merge_with_tool_locked(
    shards: ShardSet, out: Path, binary: str, force: bool, progress: ByteProgress | None
) -> Path:
    _check_output(shards, out, force)
    layout = _layout(shards)
    _check_space(out.parent, layout.total_bytes)
    with atomic_output(out) as tmp, tempfile.TemporaryFile() as stderr:
        cmd = [binary, "--merge", str(shards.first), str(tmp)]
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr)
        except OSError as e:
            raise ToolNotFoundError(f"cannot run {binary}: {e.strerror}", _TOOL_HINT) from None
        try:
            while proc.poll() is None:
                if progress:
                    progress(_written_data(tmp, layout), layout.data_bytes)
                time.sleep(_POLL_SECONDS)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0:
            stderr.seek(0)
            message = _last_line(stderr.read().decode("utf-8", "replace"))
            raise MergeToolError(
                f"{GGUF_SPLIT_PROGRAM} --merge failed (exit {proc.returncode}): {message}",
                "try the built-in merger (--method builtin)",
            )
        if progress:
            progress(layout.data_bytes, layout.data_bytes)
    return out


def _written_data(tmp: Path, layout: _Layout) -> int:
    # The tool writes a zero placeholder of the header's size first, then tensor data.
    try:
        size = tmp.stat().st_size
    except FileNotFoundError:
        return 0
    return max(0, min(size - len(layout.header), layout.data_bytes))


_TOOL_HINT = (
    f"install llama.cpp's {GGUF_SPLIT_PROGRAM}, put it on PATH or set {ENV_GGUF_SPLIT}"
    " (or use --method builtin)"
)


def find_llama_gguf_split(explicit: str | None = None) -> str | None:
    """Explicit path > $OLLAMADS_GGUF_SPLIT > llama-gguf-split on PATH; None if none.

    An explicit path or environment value that is not an executable raises
    :class:`ToolNotFoundError` instead of silently falling back.
    """
    for value, source in (
        (explicit, "the given path"),
        (os.environ.get(ENV_GGUF_SPLIT), ENV_GGUF_SPLIT),
    ):
        if value:
            found = shutil.which(value)
            if not found:
                raise ToolNotFoundError(f"{value} ({source}) is not an executable file", _TOOL_HINT)
            return found
    return shutil.which(GGUF_SPLIT_PROGRAM)


def _resolve_method(
    method: MergeMethod, binary: str | None
) -> tuple[Literal["builtin", "llama-gguf-split"], str | None]:
    # "auto" prefers the reference tool when the user has it (PATH, OLLAMADS_GGUF_SPLIT or an
    # explicit path) and falls back to the built-in merger, which writes the same bytes.
    if method == "builtin":
        return "builtin", None
    if method == "auto":
        found = find_llama_gguf_split(binary)
        return ("llama-gguf-split", found) if found else ("builtin", None)
    if method != "llama-gguf-split":
        raise ValueError(f"unknown merge method {method!r}")
    found = find_llama_gguf_split(binary)
    if not found:
        raise ToolNotFoundError(f"{GGUF_SPLIT_PROGRAM} was not found", _TOOL_HINT)
    return "llama-gguf-split", found


def merge_plan(
    first_shard: str | Path,
    out: str | Path,
    *,
    method: MergeMethod = "auto",
    binary: str | None = None,
    force: bool = False,
) -> MergePlan:
    """What :func:`merge` would do, after the same checks, without writing anything."""
    shards = open_shard_set(first_shard)
    _require_split(shards)
    out = Path(out)
    _check_output(shards, out, force)
    used, found = _resolve_method(method, binary)
    return MergePlan(
        shards=shards,
        out=out,
        nbytes=_layout(shards).total_bytes,
        method=used,
        binary=found,
        disk_free=disk_free(out.parent),
    )


def merge(
    first_shard: str | Path,
    out: str | Path,
    *,
    method: MergeMethod = "auto",
    binary: str | None = None,
    force: bool = False,
    progress: ByteProgress | None = None,
) -> MergeResult:
    """Validate the shard set starting at ``first_shard`` and merge it into ``out``.

    A single unsplit GGUF raises :class:`ShardSetError` (nothing to merge): callers that
    accept both should check ``open_shard_set(path).is_split`` first.
    """
    shards = open_shard_set(first_shard)
    used, found = _resolve_method(method, binary)
    if used == "builtin":
        path = merge_builtin(shards, Path(out), force=force, progress=progress)
    else:
        assert found is not None
        path = merge_with_llama_gguf_split(
            shards, Path(out), binary=found, force=force, progress=progress
        )
    return MergeResult(out=path, method=used, nbytes=path.stat().st_size)
