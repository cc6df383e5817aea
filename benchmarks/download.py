"""Downloading a quant: `ollamads pull` against `hf download`, each connection held to a rate.

The Hub's CDN limits what one connection gets. A local Hub stand-in (tests/support/hubstub.py,
the same one the tests use; real huggingface_hub code talks to it) serves a repo holding one
quant as 6 shards and another as 1 file of the same total size, and paces every connection to
--rate MB/s. In one run, alternating, with the page cache dropped before each:

* ``hf download REPO --include ... --local-dir`` (huggingface_hub's CLI, plain HTTP, Xet off);
* ``ollamads pull`` (the CLI, default number of connections).

Then, for the single file, ``ollamads pull`` at several connection counts (how the default was
chosen), and the two ways of hashing (as the contiguous prefix grows, or one pass at the end).
Run as root (page cache).

    .venv/bin/python benchmarks/download.py [--size-mb 288] [--rate 8] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._measure import drop_caches, run_measured  # noqa: E402
from tests.support.hubstub import HubStub  # noqa: E402

#: Names the catalog knows, so `ollamads pull` resolves them: the 6-shard Terminus Q2_K_XL and
#: the single-file Terminus TQ1_0.
REPO = "unsloth/DeepSeek-V3.1-Terminus-GGUF"
SHARDED = "v3.1-terminus:Q2_K_XL"
SINGLE = "v3.1-terminus:TQ1_0"
SHARD = "UD-Q2_K_XL/DeepSeek-V3.1-Terminus-UD-Q2_K_XL-{:05d}-of-00006.gguf"
SINGLE_PATH = "DeepSeek-V3.1-Terminus-UD-TQ1_0.gguf"


def repo_files(size: int) -> dict[str, bytes]:
    block = os.urandom(size // 6)
    files = {SHARD.format(i): bytes([i]) + block[1:] for i in range(1, 7)}
    files[SINGLE_PATH] = b"".join(files.values())
    return files


PEAK_RSS: dict[str, int] = {}


def timed(argv: list[str], env: dict[str, str], label: str = "") -> float:
    """Wall time of one cold run; with ``label``, that process's own peak RSS is kept too."""
    drop_caches()
    run = run_measured(argv, env)
    if run.returncode:
        raise SystemExit(f"{' '.join(argv[:4])} failed: {run.output[-800:]}")
    if label:
        PEAK_RSS[label] = run.peak_rss
    return run.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=288, help="total size of each quant")
    parser.add_argument("--rate", type=float, default=8.0, help="MB/s per connection")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    parser.add_argument("--sweep", default="4,8,16,32", help="connection counts to compare")
    args = parser.parse_args()
    files = repo_files(args.size_mb * 1_000_000)
    python = sys.executable
    hf = str(Path(python).with_name("hf"))
    with HubStub({REPO: files}) as stub, tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        stub.rate = args.rate * 1_000_000
        work = Path(tmp)
        base = {
            **os.environ, "HF_ENDPOINT": stub.url, "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(work / "hf-home"),
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        }
        results: dict[str, dict[str, float]] = {}
        for label, spec, include in (("6 shards", SHARDED, "UD-Q2_K_XL/*"), ("1 file", SINGLE, SINGLE_PATH)):
            hf_dir, home = work / "hf", work / "home"
            hf_s = timed([hf, "download", REPO, "--include", include, "--local-dir", str(hf_dir)], base)
            ours_s = timed([python, "-m", "ollamads", "pull", spec], {**base, "OLLAMADS_HOME": str(home)},
                           label=label)
            shutil.rmtree(hf_dir)
            shutil.rmtree(home)
            results[label] = {"hf download": hf_s, "ollamads pull": ours_s}
        size_mb = args.size_mb
        print(f"each connection held to {args.rate:g} MB/s; {size_mb} MB per quant; cold page cache")
        for label, row in results.items():
            ratio = row["hf download"] / row["ollamads pull"]
            print(f"  {label:<9} hf download {row['hf download']:6.2f}s ({size_mb / row['hf download']:6.1f} MB/s)"
                  f"   ollamads pull {row['ollamads pull']:6.2f}s ({size_mb / row['ollamads pull']:6.1f} MB/s)"
                  f"   ollamads {ratio:.2f}x faster")
        print("  ollamads pull peak RSS: " + ", ".join(
            f"{label} {rss / 1e6:.0f} MB" for label, rss in PEAK_RSS.items()))

        print("\nollamads pull of the single file by number of connections:")
        for count in (int(c) for c in args.sweep.split(",")):
            home = work / f"home-{count}"
            seconds = timed([python, "-m", "ollamads", "pull", SINGLE, "--connections", str(count)],
                            {**base, "OLLAMADS_HOME": str(home)})
            shutil.rmtree(home)
            print(f"  {count:>3} connections: {seconds:6.2f}s ({size_mb / seconds:6.1f} MB/s)")

        print("\nhashing the single file, 16 connections, no rate limit:")
        stub.rate = None
        for mode in ("prefix", "after"):
            home = work / f"home-{mode}"
            code = (
                "from ollamads.catalog import resolve; from ollamads.hub import pull; "
                "from ollamads.pipeline import plan_quant_pull; "
                f"pull(plan_quant_pull(resolve({SINGLE!r})), hash_mode={mode!r}, connections=16)"
            )
            seconds = timed([python, "-c", code], {**base, "OLLAMADS_HOME": str(home)})
            shutil.rmtree(home)
            print(f"  hash {mode:<6}: {seconds:6.2f}s")


if __name__ == "__main__":
    main()
