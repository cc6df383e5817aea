"""What this machine can hold: RAM, each GPU's memory, free disk. The one place that asks.

* RAM: physical memory, or the container's cgroup v2 limit when that is lower (as Ollama
  counts it), and what the kernel reports available now.
* NVIDIA GPUs: ``nvidia-smi`` (one line per GPU); AMD: ``rocm-smi --json``; Apple silicon:
  unified memory, of which Metal lets the GPU wire about three quarters (``iogpu.wired_limit_mb``
  when someone raised it).
Every probe reads the environment (PATH) when it runs, so a test can put a fake ``nvidia-smi``
first on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ollamads.units import MIB

PROBE_TIMEOUT_S = 10.0
#: macOS lets Metal wire this share of unified memory by default (recommendedMaxWorkingSetSize
#: is about 2/3 of RAM below 36 GB and 3/4 above); the rest stays with the CPU.
APPLE_GPU_SHARE = 0.75
_CGROUP_MAX = Path("/sys/fs/cgroup/memory.max")


@dataclass(frozen=True)
class GPU:
    name: str
    total: int
    free: int | None = None
    #: "cuda", "rocm", "metal" (unified memory: shares the RAM), or "given" (on the command line)
    kind: str = "cuda"


@dataclass(frozen=True)
class Machine:
    ram: int
    gpus: tuple[GPU, ...] = ()
    disk_free: int = 0
    ram_available: int | None = None
    #: Apple silicon: the GPU's memory is the RAM (not in addition to it).
    unified: bool = False
    #: Where each figure came from: "detected" or "given".
    source: str = "detected"

    @property
    def vram(self) -> int:
        return sum(g.total for g in self.gpus)

    @property
    def memory(self) -> int:
        """RAM and VRAM together, counting unified memory once."""
        return self.ram if self.unified else self.ram + self.vram

    def fits_disk(self, size: int) -> bool:
        return self.disk_free >= size

    def describe(self) -> str:
        from ollamads.units import GIB, format_gib

        text = f"RAM {format_gib(self.ram)}"
        if self.unified:
            return text + f" unified (GPU may use {format_gib(self.vram)} of it)"
        if not self.gpus:
            return text + ", no GPU"
        sizes = " + ".join(f"{g.total / GIB:.1f}" for g in self.gpus)
        return text + f", VRAM {sizes} GiB ({len(self.gpus)} GPU{'s' if len(self.gpus) > 1 else ''})"


# --- RAM -----------------------------------------------------------------------------------


def total_ram() -> int:
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = _cgroup_limit()
    return min(physical, limit) if limit else physical


def _cgroup_limit() -> int | None:
    try:
        text = _CGROUP_MAX.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_ram() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# --- GPUs ----------------------------------------------------------------------------------


def _run(argv: list[str]) -> str | None:
    if not shutil.which(argv[0]):
        return None
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def nvidia_gpus() -> list[GPU]:
    out = _run(["nvidia-smi", "--query-gpu=name,memory.total,memory.free",
                "--format=csv,noheader,nounits"])
    gpus = []
    for line in (out or "").splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) >= 3 and fields[1].isdigit():
            free = int(fields[2]) * MIB if fields[2].isdigit() else None
            gpus.append(GPU(fields[0], int(fields[1]) * MIB, free, "cuda"))
    return gpus


def _byte_count(value: object) -> int | None:
    """rocm-smi's JSON gives byte counts as decimal strings."""
    text = str(value)
    return int(text) if text.isdecimal() else None


def rocm_gpus() -> list[GPU]:
    out = _run(["rocm-smi", "--showmeminfo", "vram", "--json"])
    try:
        cards = json.loads(out) if out else {}
    except ValueError:
        return []
    gpus = []
    names = _rocm_names() if isinstance(cards, dict) and cards else {}
    for card, info in sorted(cards.items()) if isinstance(cards, dict) else []:
        if not isinstance(info, dict):
            continue
        total = _byte_count(info.get("VRAM Total Memory (B)"))
        used = _byte_count(info.get("VRAM Total Used Memory (B)"))
        if total is not None:
            free = None if used is None else total - used
            gpus.append(GPU(names.get(card, f"AMD {card}"), total, free, "rocm"))
    return gpus


def _rocm_names() -> dict[str, str]:
    """Each card's product name (the speed estimate looks its bandwidth up by name)."""
    out = _run(["rocm-smi", "--showproductname", "--json"])
    try:
        cards = json.loads(out) if out else {}
    except ValueError:
        return {}
    names = {}
    for card, info in cards.items() if isinstance(cards, dict) else []:
        if isinstance(info, dict):
            series = info.get("Card Series") or info.get("Card SKU")
            if isinstance(series, str) and series.strip():
                names[card] = series.strip()
    return names


def apple_gpu(ram: int) -> GPU | None:
    if sys.platform != "darwin":
        return None
    wired = _run(["sysctl", "-n", "iogpu.wired_limit_mb"])
    limit = int(wired.strip()) * MIB if wired and wired.strip().isdigit() else 0
    return GPU("Apple GPU (unified memory)", limit or int(ram * APPLE_GPU_SHARE), None, "metal")


def detect_gpus(ram: int) -> tuple[tuple[GPU, ...], bool]:
    """The GPUs and whether their memory is the RAM (Apple)."""
    apple = apple_gpu(ram)
    if apple is not None:
        return (apple,), True
    return tuple(nvidia_gpus() + rocm_gpus()), False


def this_machine(download_dir: Path | None = None) -> Machine:
    from ollamads.units import disk_free

    ram = total_ram()
    gpus, unified = detect_gpus(ram)
    disk = disk_free(download_dir) if download_dir is not None else 0
    return Machine(ram, gpus, disk, available_ram(), unified)


__all__ = [
    "GPU",
    "Machine",
    "available_ram",
    "detect_gpus",
    "given_machine",
    "nvidia_gpus",
    "rocm_gpus",
    "this_machine",
    "total_ram",
]


def given_machine(ram: int | None, vram: list[int] | None, detected: Machine | None = None) -> Machine:
    """The machine as detected, with RAM and/or the GPUs' memory replaced by given figures
    (``vram`` one size per GPU; ``[0]`` means no GPU)."""
    machine = detected or this_machine()
    if ram is None and vram is None:
        return machine
    gpus = machine.gpus
    unified = machine.unified
    if vram is not None:
        gpus = tuple(GPU(f"GPU{i}", size, None, "given") for i, size in enumerate(vram) if size > 0)
        unified = False
    return Machine(
        ram=machine.ram if ram is None else ram,
        gpus=gpus,
        disk_free=machine.disk_free,
        ram_available=None if ram is not None else machine.ram_available,
        unified=unified,
        source="given",
    )
