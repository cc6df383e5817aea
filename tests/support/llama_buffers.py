"""What llama.cpp itself allocates for a model: load it in llama-server and read its log.

llama-server prints its buffer sizes (``load_tensors: CPU_Mapped model buffer size = ... MiB``,
``llama_kv_cache: CPU KV buffer size``, ``sched_reserve: CPU compute buffer size``) at log
verbosity 4. The load here is CPU-only, with mmap, no warmup (nothing is computed, so sparse
files work), no repacking (CPU_REPACK would copy weights into anonymous memory) and no
``--fit`` (its dry run is a second load): the sizes are those of the header, nothing else.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ollamads.children import stop_child
from ollamads.ollama.serve import free_port

MIB = 1 << 20
_BUFFER_RE = re.compile(
    r"(load_tensors|llama_kv_cache|sched_reserve):\s+(\S+)\s+(model|KV|compute) buffer size =\s+([\d.]+) MiB"
)
_READY = "listening on"


@dataclass
class Reported:
    """Buffer sizes in bytes (from MiB with two decimals, so +-5 KiB), per kind and buffer."""

    buffers: dict[str, dict[str, float]] = field(default_factory=dict)
    log: str = ""

    def total(self, kind: str) -> float:
        return sum(self.buffers.get(kind, {}).values())

    @property
    def model(self) -> float:
        return self.total("model")

    @property
    def kv(self) -> float:
        return self.total("KV")

    @property
    def compute(self) -> float:
        return self.total("compute")


def parse_buffers(log: str) -> Reported:
    reported = Reported(log=log)
    for match in _BUFFER_RE.finditer(log):
        _, buft, kind, mib = match.groups()
        per_kind = reported.buffers.setdefault(kind, {})
        per_kind[buft] = per_kind.get(buft, 0.0) + float(mib) * MIB
    return reported


def measure(
    binary: Path,
    model: Path,
    *,
    ctx: int,
    cache_type: str = "f16",
    log_path: Path,
    extra: Sequence[str] = (),
    timeout: float = 900,
) -> Reported:
    """Start llama-server on ``model``, wait until it listens, stop it; its buffer sizes."""
    argv = [
        str(binary), "-m", str(model), "-c", str(ctx), "-np", "1", "--no-warmup", "-lv", "4",
        "-fit", "off", "--no-repack", "-ctk", cache_type, "-ctv", cache_type,
        "--host", "127.0.0.1", "--port", str(free_port()), "--no-webui", "-t", "2", *extra,
    ]
    if cache_type not in ("f32", "f16", "bf16"):
        argv += ["-fa", "on"]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = log_path.read_text(errors="replace")
            if _READY in text:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"llama-server exited {proc.returncode}:\n{text[-3000:]}")
            time.sleep(0.1)
        else:
            raise TimeoutError(f"llama-server did not load {model} in {timeout:.0f}s")
    finally:
        stop_child(proc, timeout=30)
    return parse_buffers(log_path.read_text(errors="replace"))


__all__ = ["MIB", "Reported", "measure", "parse_buffers"]
