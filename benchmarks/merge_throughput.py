"""Merge throughput: llama-gguf-split --merge vs the built-in merger vs `cat`, in one run.

Makes a split model of about --size-mb MB in a temp dir (random F16 tensors, split by the
real llama-gguf-split), then times each method --repeats times in turn, including an fsync
of the output (the built-in merger fsyncs before its rename; the others do not). Shared
machines are noisy: read the ratios against `cat` (the disk's floor), not absolute times.

    .venv/bin/python benchmarks/merge_throughput.py [--size-mb 200] [--dir /big/disk]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ollamads.gguf.format import GGMLQuantizationType, GGUFWriter
from ollamads.gguf.merge import find_llama_gguf_split, merge_builtin
from ollamads.gguf.shards import open_shard_set
from tests.support.toolchain import toolchain_env

TENSOR_ROWS, TENSOR_COLS = 2560, 2048  # one F16 tensor = 10 MiB


def make_split_model(directory: Path, size_mb: int, shards: int, binary: str) -> Path:
    w = GGUFWriter()
    w.add("general.architecture", "deepseek2")
    w.add("general.name", "merge benchmark")
    w.add("tokenizer.ggml.tokens", [f"tok{i}" for i in range(50_000)])
    nbytes = TENSOR_ROWS * TENSOR_COLS * 2
    for i in range(max(1, size_mb * 2**20 // nbytes)):
        w.add_tensor(
            f"blk.{i}.ffn.weight",
            (TENSOR_COLS, TENSOR_ROWS),
            GGMLQuantizationType.F16,
            os.urandom(nbytes),
        )
    whole = directory / "model.gguf"
    w.write(whole)
    per_shard = str(-(-len(w.tensor_infos()) // shards))
    subprocess.run(
        [binary, "--split", "--split-max-tensors", per_shard, whole, directory / "m"],
        check=True,
        capture_output=True,
    )
    whole.unlink()
    return next(directory.glob("m-00001-of-*.gguf"))


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the temp files")
    args = parser.parse_args()
    binary = find_llama_gguf_split() or toolchain_env().get("OLLAMADS_GGUF_SPLIT")
    if not binary or not Path(binary).is_file():
        sys.exit("llama-gguf-split not found: run scripts/toolchain.sh and set OLLAMADS_GGUF_SPLIT")

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="merge-bench-") as tmp:
        d = Path(tmp)
        first = make_split_model(d, args.size_mb, args.shards, binary)
        shards = open_shard_set(first)
        out = d / "out.gguf"

        def run_cat() -> None:
            with open(out, "wb") as f:
                subprocess.run(["cat", *map(str, shards.paths)], stdout=f, check=True)

        def run_tool() -> None:
            subprocess.run([binary, "--merge", first, out], check=True, capture_output=True)

        def run_builtin() -> None:
            merge_builtin(shards, out)

        methods: dict[str, Callable[[], None]] = {
            "cat": run_cat,
            "llama-gguf-split --merge": run_tool,
            "merge_builtin": run_builtin,
        }
        times: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(args.repeats):
            for name, fn in methods.items():
                out.unlink(missing_ok=True)
                os.sync()
                start = time.perf_counter()
                fn()
                fsync_file(out)
                times[name].append(time.perf_counter() - start)
        out.unlink(missing_ok=True)

    size = shards.total_bytes
    print(
        f"{size / 1e6:.0f} MB in {shards.count} shards, {shards.tensor_count} tensors, "
        f"{args.repeats} runs each (median, warm page cache, fsync included), dir {tmp}"
    )
    cat = statistics.median(times["cat"])
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"  {name:26s} {t:7.3f} s  {size / t / 1e9:6.2f} GB/s  {t / cat:5.2f}x cat")


if __name__ == "__main__":
    main()
