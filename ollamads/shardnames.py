"""llama.cpp's split file names (``<prefix>-00001-of-00003.gguf``), the one home of the format.

Below both the catalog (which names on the Hub are a quant's files) and ``gguf`` (shard sets,
merging), so that neither has to import the other; ``ollamads.gguf.shards`` re-exports it.
"""

from __future__ import annotations

import re

# llama.cpp's LLAMA split path format ("%s-%05d-of-%05d.gguf"); %05d widens past 99999.
SHARD_NAME_FORMAT = "{prefix}-{no:05d}-of-{count:05d}.gguf"
SHARD_NAME_RE = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5,})-of-(?P<count>\d{5,})\.gguf$")


def shard_name(prefix: str, no: int, count: int) -> str:
    """File name of shard ``no`` (1-based) of ``count``."""
    return SHARD_NAME_FORMAT.format(prefix=prefix, no=no, count=count)


def parse_shard_name(name: str) -> tuple[str, int, int] | None:
    """``(prefix, no, count)`` for a shard file name, None for any other name."""
    m = SHARD_NAME_RE.match(name)
    if not m:
        return None
    prefix, no, count = m["prefix"], int(m["no"]), int(m["count"])
    # Only the canonical spelling counts: "-1-of-3" or "-000001-of-00003" is not a shard name.
    if shard_name(prefix, no, count) != name:
        return None
    return prefix, no, count


__all__ = ["SHARD_NAME_FORMAT", "SHARD_NAME_RE", "parse_shard_name", "shard_name"]
