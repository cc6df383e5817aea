"""What the benchmarks share: a big DeepSeek-shaped model, cold caches, and disk counters.

* :func:`write_big_shards` writes a real ``deepseek2`` GGUF (the tiny model's layout with
  bigger dimensions and small random F16 weights) as split shards, fast
  (``tests/support/synthetic.py``). llama.cpp and both Ollama lines load it.
* :class:`DiskMeter` reads bytes written to the block device that holds a folder
  (``/proc/diskstats``) and samples free space every 50 ms for the peak extra disk.
* :func:`drop_caches` syncs and empties the page cache (root only) for cold runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ollamads.gguf.deepseek2 import DeepSeek2Dims
from ollamads.gguf.format import GGMLQuantizationType
from ollamads.tiny import tokenizer_vocab
from tests.support.synthetic import spec_for, uniform_types, write_synthetic


def big_dims(layers: int = 7) -> DeepSeek2Dims:
    """About 0.4 GB per MoE layer at F16 (64 experts of 1024x1024, three matrices)."""
    _, types = tokenizer_vocab()
    return DeepSeek2Dims(
        n_layer=layers, n_dense_lead=1, n_embd=1024, n_ff=2048, n_head=8, q_lora_rank=256,
        kv_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64, n_expert=64,
        n_expert_shared=1, n_ff_exp=1024, n_vocab=len(types), tied_output=True,
    )


def write_big_shards(directory: Path, n_shards: int = 4, *, layers: int = 7,
                     name: str = "DeepSeek-V3.1-UD-Q2_K_XL") -> list[Path]:
    """A loadable F16 deepseek2 model as ``n_shards`` split files with Unsloth-like names."""
    dims = big_dims(layers)
    spec = spec_for(dims, weight_type=GGMLQuantizationType.F16, n_expert_used=4, n_expert_groups=4,
                    n_expert_groups_used=2)
    return write_synthetic(directory, name, dims, uniform_types(GGMLQuantizationType.F16),
                           spec=spec, shards=n_shards, data="finite")


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        raise SystemExit(f"cold runs need root to drop the page cache ({exc.strerror})") from None


def _device_of(path: Path) -> str:
    """The /proc/diskstats name of the block device holding ``path`` (its whole disk)."""
    dev = os.stat(path).st_dev
    major, minor = os.major(dev), os.minor(dev)
    name = Path(f"/sys/dev/block/{major}:{minor}").resolve().name
    parent = Path(f"/sys/class/block/{name}/..").resolve().name
    return parent if Path(f"/sys/class/block/{parent}/stat").exists() and parent != "block" else name


def _sectors_written(device: str) -> int:
    for line in Path("/proc/diskstats").read_text().splitlines():
        fields = line.split()
        if fields[2] == device:
            return int(fields[9])
    raise SystemExit(f"no {device} in /proc/diskstats")


@dataclass
class Measured:
    seconds: float
    bytes_written: int
    peak_extra_disk: int


class DiskMeter:
    """``with DiskMeter(folder) as m: ...`` then ``m.result``: time, device writes, peak disk."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.device = _device_of(folder)
        self.result: Measured | None = None

    def __enter__(self) -> DiskMeter:
        subprocess.run(["sync"], check=True)
        self._free0 = shutil.disk_usage(self.folder).free
        self._min_free = self._free0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        self._sectors0 = _sectors_written(self.device)
        self._t0 = time.perf_counter()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self._min_free = min(self._min_free, shutil.disk_usage(self.folder).free)

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["sync"], check=True)  # writes still in the page cache count too
        seconds = time.perf_counter() - self._t0
        sectors = _sectors_written(self.device) - self._sectors0
        self._stop.set()
        self._sampler.join()
        self._min_free = min(self._min_free, shutil.disk_usage(self.folder).free)
        self.result = Measured(seconds, sectors * 512, self._free0 - self._min_free)


@dataclass
class Run:
    seconds: float
    returncode: int
    #: The process's own peak resident memory (VmHWM after its exec), in bytes.
    peak_rss: int
    output: str


def run_measured(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> Run:
    """Run ``argv`` to its end; wall time, exit code, peak RSS and its output.

    The peak is the child's own high-water mark, read from /proc while it runs (the last
    reading wins: VmHWM only grows, and starts afresh at exec, so what the parent had before
    the fork is not counted, unlike getrusage's ru_maxrss of a forked child)."""
    import tempfile

    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        peak = 0
        status = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = int(line.split()[1]) * 1024
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        log.seek(0)
        output = log.read().decode(errors="replace")
    return Run(seconds, process.returncode, peak, output)
