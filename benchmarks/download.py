"""Downloading a quant through a link of known speed: `ollamads pull` against `hf download`.

A local Hub stand-in (tests/support/hubstub.py, the one the tests use; real huggingface_hub
code talks to it) serves a repo holding one quant as 6 shards and another as 1 file of the same
total size, and behaves like a network path: one link shared by every connection (--link MB/s),
a round trip (--rtt ms) per request and two more per new connection (TCP and TLS handshakes),
and the Hub's redirect of every LFS file to a CDN host (a second listener under another host
name). Two shapes:

* ``per-connection cap``: each connection also held to --per-connection MB/s, as the Hub's CDN
  holds one connection, so that filling the link takes several connections;
* ``one connection fills the link``: no cap per connection.

For each shape and quant, in 3 rounds (--rounds) taking the two sides in turn, after one
untimed dry run of each command (so both start with Python and their libraries in the page
cache, as on any run but the first after a boot):

* ``hf download REPO --include ... --local-dir`` (huggingface_hub's CLI over plain HTTP:
  HF_HUB_DISABLE_XET=1, since the stand-in cannot speak Xet);
* ``ollamads pull`` (the CLI, default number of connections).

It prints the median of each side: wall time of the whole command, MB/s, that as a share of
the link, and the share of the link while bytes flowed (first body byte to last, as the
stand-in saw them: the rest is start-up, listing and the final hash and fsync).

    .venv/bin/python benchmarks/download.py [--size-mb 1000] [--link 100] [--per-connection 8]
        [--rtt 20] [--rounds 3] [--dir /var/tmp] [--sweep 4,8,16,32] [--hash-modes]

Run it on an otherwise idle machine: the stand-in shares the CPUs with the client it serves.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._measure import run_measured
from tests.support.hubstub import HubStub, sha256_hex

#: Names the catalog knows, so `ollamads pull` resolves them: the 6-shard Terminus Q2_K_XL and
#: the single-file Terminus TQ1_0.
REPO = "unsloth/DeepSeek-V3.1-Terminus-GGUF"
SHARDED = "v3.1-terminus:Q2_K_XL"
SINGLE = "v3.1-terminus:TQ1_0"
SHARD = "UD-Q2_K_XL/DeepSeek-V3.1-Terminus-UD-Q2_K_XL-{:05d}-of-00006.gguf"
SINGLE_PATH = "DeepSeek-V3.1-Terminus-UD-TQ1_0.gguf"
QUANTS = (("6 shards", SHARDED, "UD-Q2_K_XL/*"), ("1 file", SINGLE, SINGLE_PATH))
MB = 1_000_000


def repo_files(size: int) -> dict[str, bytes]:
    block = os.urandom(size // 6)
    files = {SHARD.format(i): bytes([i]) + block[1:] for i in range(1, 7)}
    files[SINGLE_PATH] = b"".join(files.values())
    return files


@dataclass
class Run:
    seconds: float
    #: First body byte to last, as the stand-in sent them.
    flowing: float
    peak_rss: int


def timed(stub: HubStub, argv: list[str], env: dict[str, str]) -> Run:
    """One run of ``argv`` to its end."""
    stub.reset_counters()
    run = run_measured(argv, env)
    if run.returncode:
        raise SystemExit(f"{' '.join(argv[:4])} failed: {run.output[-800:]}")
    return Run(run.seconds, stub.body_seconds(), run.peak_rss)


@dataclass
class Side:
    runs: list[Run]

    @property
    def seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def flowing(self) -> float:
        return statistics.median(r.flowing for r in self.runs)


def compare(stub: HubStub, work: Path, base: dict[str, str], rounds: int, only: str | None,
            with_hf: bool = True) -> dict[str, dict[str, Side]]:
    python = sys.executable
    hf = str(Path(python).with_name("hf"))
    results: dict[str, dict[str, Side]] = {}
    for label, spec, include in QUANTS:
        if only and label != only:
            continue
        sides = {"hf download": Side([]), "ollamads pull": Side([])} if with_hf else {"ollamads pull": Side([])}
        for _ in range(rounds):
            hf_dir, home = work / "hf", work / "home"
            if with_hf:
                sides["hf download"].runs.append(timed(
                    stub, [hf, "download", REPO, "--include", include, "--local-dir", str(hf_dir)], base))
                shutil.rmtree(hf_dir)
            sides["ollamads pull"].runs.append(timed(
                stub, [python, "-m", "ollamads", "pull", spec], {**base, "OLLAMADS_HOME": str(home)}))
            shutil.rmtree(home)
        results[label] = sides
    return results


def warm_up(stub: HubStub, work: Path, base: dict[str, str]) -> None:
    """A dry run of each command: Python, the libraries and the listing path, untimed."""
    timed(stub, [str(Path(sys.executable).with_name("hf")), "download", REPO, "--include", SINGLE_PATH,
                 "--dry-run", "--local-dir", str(work / "hf")], base)
    timed(stub, [sys.executable, "-m", "ollamads", "pull", SINGLE, "--dry-run"],
          {**base, "OLLAMADS_HOME": str(work / "home")})
    shutil.rmtree(work / "home", ignore_errors=True)
    shutil.rmtree(work / "hf", ignore_errors=True)


def report(title: str, results: dict[str, dict[str, Side]], size: int, link: float) -> None:
    print(title)
    for label, sides in results.items():
        for name, side in sides.items():
            speed = size / side.seconds
            each = " ".join(f"{r.seconds:.2f}" for r in side.runs)
            print(f"  {label:<9} {name:<14} {side.seconds:6.2f} s ({each})  {speed / MB:6.1f} MB/s"
                  f" = {speed / link:5.1%} of the link; while bytes flowed {size / side.flowing / link:5.1%}")
        if "hf download" in sides:
            ratio = sides["hf download"].seconds / sides["ollamads pull"].seconds
            print(f"  {label:<9} ollamads pull takes {1 / ratio:.2f}x the time of hf download")
    rss = [r.peak_rss for sides in results.values() for r in sides["ollamads pull"].runs]
    print(f"  ollamads pull peak RSS {min(rss) / MB:.0f}-{max(rss) / MB:.0f} MB\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1000, help="total size of each quant (MB)")
    parser.add_argument("--link", type=float, default=100.0, help="the link, MB/s, shared by every connection")
    parser.add_argument("--per-connection", type=float, default=8.0, help="MB/s per connection in the first shape")
    parser.add_argument("--rtt", type=float, default=20.0, help="round-trip time, ms")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shape", choices=("capped", "uncapped", "both", "none"), default="both",
                        help="none: only --sweep and --hash-modes")
    parser.add_argument("--quant", choices=[q[0] for q in QUANTS], default=None, help="only this quant")
    parser.add_argument("--no-hf", action="store_true", help="time ollamads pull alone")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    parser.add_argument("--sweep", default="", help="also: the single file at these connection counts")
    parser.add_argument("--hash-modes", action="store_true",
                        help="also: hashing as the prefix grows against one pass at the end")
    args = parser.parse_args()
    size = args.size_mb * MB
    link = args.link * MB
    files = repo_files(size)
    for data in files.values():
        sha256_hex(data)  # the stand-in's listing hashes each file once: not during a run
    with HubStub({REPO: files}, redirect=True) as stub, tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        base = {
            **os.environ, "HF_ENDPOINT": stub.url, "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(work / "hf-home"),
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        }
        warm_up(stub, work, base)
        setting = f"{args.size_mb} MB per quant, link {args.link:g} MB/s, RTT {args.rtt:g} ms, medians of {args.rounds}"
        if args.shape in ("capped", "both"):
            stub.shape(link_rate=link, rate=args.per_connection * MB, rtt=args.rtt / 1000)
            report(f"each connection held to {args.per_connection:g} MB/s; {setting}",
                   compare(stub, work, base, args.rounds, args.quant, not args.no_hf), size, link)
        if args.shape in ("uncapped", "both"):
            stub.shape(link_rate=link, rate=None, rtt=args.rtt / 1000)
            report(f"one connection can fill the link; {setting}",
                   compare(stub, work, base, args.rounds, args.quant, not args.no_hf), size, link)

        if args.sweep:
            stub.shape(link_rate=link, rate=args.per_connection * MB, rtt=args.rtt / 1000)
            print(f"ollamads pull of the single file by number of connections ({args.per_connection:g} MB/s each):")
            for count in (int(c) for c in args.sweep.split(",")):
                home = work / f"home-{count}"
                run = timed(stub, [sys.executable, "-m", "ollamads", "pull", SINGLE, "--connections", str(count)],
                            {**base, "OLLAMADS_HOME": str(home)})
                shutil.rmtree(home)
                print(f"  {count:>3} connections: {run.seconds:6.2f} s ({size / run.seconds / MB:6.1f} MB/s)")

        if args.hash_modes:
            print("\nhashing the single file, 16 connections, no link limit:")
            stub.shape()
            for mode in ("prefix", "after"):
                home = work / f"home-{mode}"
                code = (
                    "from ollamads.catalog import resolve; from ollamads.hub import pull; "
                    "from ollamads.quant_pull import plan_quant_pull; "
                    f"pull(plan_quant_pull(resolve({SINGLE!r})), hash_mode={mode!r}, connections=16)"
                )
                run = timed(stub, [sys.executable, "-c", code], {**base, "OLLAMADS_HOME": str(home)})
                shutil.rmtree(home)
                print(f"  hash {mode:<6}: {run.seconds:6.2f} s")


if __name__ == "__main__":
    main()
