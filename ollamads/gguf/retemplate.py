"""Put Unsloth's fixed chat template into a GGUF: a copy with one key/value replaced.

DeepSeek V3.1's own template keys thinking on ``thinking`` only and uses a two-argument
``split`` that older llama.cpp Jinja engines reject. Ollama v0.30+ and llama-server send
``enable_thinking``, so GGUFs converted from DeepSeek's files ignore the thinking switch there.
Unsloth's fixed template (``templates/chat/deepseek-v3.1.jinja``, see SOURCES.md) handles both.

The template lives in the header, whose size decides where the tensor data starts, so the file
is rewritten: a new header (same key order, same tensor infos and offsets, padded to the same
alignment), then the tensor data copied byte for byte with ``os.copy_file_range``. The copy is
written beside the output and renamed over it at the end, so a reader never sees half a file;
a rewrite in place leaves any hard link to the old file (an Ollama blob) untouched.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ollamads._resources import templates_dir
from ollamads.catalog.families import PromptFamily, get_family
from ollamads.errors import OllamadsError, OutputExistsError
from ollamads.fileio import Copier, atomic_output, write_all
from ollamads.gguf.format import (
    KEY_CHAT_TEMPLATE,
    KEY_SPLIT_COUNT,
    KEY_SPLIT_NO,
    GGUFFile,
    GGUFValueType,
    align_up,
    pack_header,
    read_gguf,
)
from ollamads.units import DiskNeed, check_space, disk_full_error, is_disk_full

Progress = Callable[[int, int], None]

#: Families whose published template needs Unsloth's fix, and the fixed template's file.
FIXED_TEMPLATES = {"v3.1": "deepseek-v3.1.jinja"}


def fixed_template_for(family: str | PromptFamily) -> str | None:
    """Unsloth's fixed chat template for ``family``, or None where DeepSeek's needs no fix."""
    name = family.name if isinstance(family, PromptFamily) else get_family(family).name
    filename = FIXED_TEMPLATES.get(name)
    if filename is None:
        return None
    return (templates_dir() / "chat" / filename).read_text(encoding="utf-8")


def _check_source(gf: GGUFFile) -> None:
    count, no = gf.value(KEY_SPLIT_COUNT, 0), gf.value(KEY_SPLIT_NO, 0)
    if isinstance(count, int) and isinstance(no, int) and count > 1 and no:
        raise OllamadsError(
            f"{gf.path.name} is shard {no + 1} of {count}: "
            "only the first shard carries the chat template",
            "pass the -00001-of- shard, or merge the shards first (ollamads merge)",
        )


def _header(gf: GGUFFile, template: str) -> bytes:
    kv = dict(gf.kv)
    # Replacing a key keeps its place; a file without a template gets it at the end.
    kv[KEY_CHAT_TEMPLATE] = (GGUFValueType.STRING, template)
    header = pack_header(kv, gf.tensors, version=gf.version)
    # Without tensors, data_offset is the header's end (read_gguf does the same).
    size = align_up(len(header), gf.alignment) if gf.tensors else len(header)
    return header + bytes(size - len(header))


def rewrite_chat_template(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    template: str,
    *,
    force: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Write ``out``: ``src`` with ``tokenizer.chat_template`` set to ``template``, all else equal.

    ``out`` may be ``src`` itself with ``force`` (a rewrite in place, through a temp file).
    ``progress(done, total)`` reports tensor-data bytes copied.
    """
    src, out = Path(src), Path(out)
    if not src.is_file():
        raise OllamadsError(f"{src} does not exist", "pass a .gguf model file")
    gf = read_gguf(src)
    _check_source(gf)
    if not out.parent.is_dir():
        raise OllamadsError(f"output directory {out.parent} does not exist", "create it first")
    if out.exists() and not force:
        raise OutputExistsError(f"{out} already exists", "pass --force to overwrite it")
    header = _header(gf, template)
    data_bytes = gf.file_size - gf.data_offset
    check_space([DiskNeed("rewritten GGUF", out.parent, len(header) + data_bytes)],
                "the template rewrite", "free up space or write the copy to another disk")
    done = 0

    def report(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, data_bytes)

    if progress:
        progress(0, data_bytes)
    try:
        with atomic_output(out) as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                write_all(fd, header)
                source = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    # Everything after the old header as it is: tensors, their padding, any tail.
                    Copier(fd, report).copy(source, gf.data_offset, data_bytes, lambda: OllamadsError(
                        "the source GGUF shrank while it was being copied", "run it again"))
                finally:
                    os.close(source)
                os.fsync(fd)  # the rename must not publish a file whose data is still cached
            finally:
                os.close(fd)
    except OSError as exc:
        if is_disk_full(exc):  # the copy is gone; ``src`` is as it was
            raise disk_full_error(out.parent, len(header) + data_bytes, out.name) from None
        raise
    return out


def apply_fixed_template(
    path: str | os.PathLike[str],
    family: str | PromptFamily,
    *,
    progress: Progress | None = None,
) -> bool:
    """Give the GGUF at ``path`` its family's fixed template, in place.

    Returns False, writing nothing, when the family needs no fix or the file already has it.
    """
    template = fixed_template_for(family)
    if template is None:
        return False
    path = Path(path)
    if read_gguf(path).value(KEY_CHAT_TEMPLATE) == template:
        return False
    rewrite_chat_template(path, path, template, force=True, progress=progress)
    return True


__all__ = ["FIXED_TEMPLATES", "apply_fixed_template", "fixed_template_for", "rewrite_chat_template"]
