"""What this machine can hold: RAM, GPU memory, free disk.

Unsloth's rule of thumb for these MoE models: for usable speed (5+ tokens/s) RAM + VRAM should be
at least the quant's size; below that llama.cpp pages weights from disk, which works but is slow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Machine:
    ram: int
    vram: int
    disk_free: int

    def fits_memory(self, size: int) -> bool:
        return self.ram + self.vram >= size

    def fits_disk(self, size: int) -> bool:
        return self.disk_free >= size


def total_ram() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def total_vram() -> int:
    """Sum of NVIDIA GPU memory via nvidia-smi; 0 where there is none."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(int(line.strip()) for line in out.splitlines() if line.strip().isdigit()) << 20


def this_machine(download_dir: Path) -> Machine:
    from ollamads.units import disk_free

    return Machine(total_ram(), total_vram(), disk_free(download_dir))
