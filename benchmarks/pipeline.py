"""Split shards -> a registered model, on each Ollama line, with a cold page cache.

For each line (v0.24.0: merged files; v0.32.15: shards rewritten by the server; v0.34.4:
shards kept as layers), rounds in turn of:

* ``cat``: ``cat shards > file`` then sync: the disk's floor for reading the model and writing
  it once;
* the guides' pipeline: ``llama-gguf-split --merge`` + ``ollama create -f Modelfile`` on v0.24;
  ``ollama create`` with one FROM per shard on v0.30+. Every command starts with a cold page
  cache, the guides' second one too: at real sizes (131-481 GB, several times this machine's
  RAM) nothing the merge wrote is still cached when ``ollama create`` reads it;
* ``ollamads register`` with the server's store known (OLLAMA_MODELS exported, as under
  ``ollamads serve``): ``merge-into-store`` on v0.24, ``direct`` on v0.32.15, ``place`` on v0.34.4;
* ``ollamads register`` with the server started elsewhere: its own OLLAMA_MODELS, not exported to
  ollamads, no ``ollamads serve`` record (a systemd unit, another shell): ollamads finds the
  store from the server's process;
* ``ollamads register`` of files it never verified (no Hub sha256: it hashes them);
* on v0.32.15 also the ``/api/create`` fallback (``place``: shards hard-linked into the store,
  rewritten by the server), with ollamads' own writes counted apart from the server's.

The shards are downloaded once, before the rounds, by ``ollamads pull`` from a local Hub
stand-in: they are verified downloads with the Hub's sha256, as ``ollamads create`` has them,
and the guides' pipeline reads the same files.

Reported per run: wall time, bytes written to the block device (/proc/diskstats, after a sync),
peak extra disk (free space sampled every 50 ms), and the ollamads process's peak RSS; then the
ratios the targets are stated in. Needs root (to drop the page cache) and the toolchain
(``scripts/toolchain.sh``). The machine should be otherwise idle: the device counters see
every writer.

    .venv/bin/python benchmarks/pipeline.py [--layers 7] [--shards 4] [--repeats 5] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._measure import DiskMeter, Measured, drop_caches, run_measured, write_big_shards
from ollamads.catalog import resolve
from ollamads.catalog.families import get_family
from ollamads.ollama.modelfile import ModelDefinition
from ollamads.ollama.serve import MODEL_ENVIRONMENT, OllamaServe
from tests.support.hubstub import HubStub
from tests.support.toolchain import toolchain_env

GB = 1e9
#: The catalog entry the shards stand in for (its names and folder, not its size).
SPEC = "v3.1-terminus:Q2_K_XL"
#: Targets (issue 15): bytes written per model byte, and speed against the guides.
MAX_WRITES = {"merge": 1.05, "rewrite": 1.05, "layers": 0.02}
MIN_SPEEDUP = 2.5
LINES = (("OLLAMADS_OLLAMA_OLD", "v0.24: merged files"), ("OLLAMADS_OLLAMA_NEW", "v0.32: shards rewritten"),
         ("OLLAMADS_OLLAMA_NEWEST", "v0.34: shards kept as layers"))


def ollama_cli(server: OllamaServe, *args: str, cwd: Path | None = None) -> None:
    env = {**os.environ, "OLLAMA_HOST": server.bind, "HOME": str(server.models_dir.parent)}
    done = subprocess.run([server.binary, *args], env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"ollama {' '.join(args)} failed: {done.stderr[-500:]}")


def modelfile(server: OllamaServe, files: list[Path]) -> str:
    assert server.info is not None
    definition = ModelDefinition.for_family("guides:bench", get_family("v3.1"), files, server=server.info,
                                            mode="template")
    return definition.modelfile(f"Ollama {server.info.version}")


def run_floor(shards: list[Path], work: Path) -> Measured:
    out = work / "cat.gguf"
    drop_caches()
    with DiskMeter(work) as meter, open(out, "wb") as sink:
        subprocess.run(["cat", *map(str, shards)], stdout=sink, check=True)
        os.fsync(sink.fileno())
    out.unlink()
    assert meter.result
    return meter.result


def run_guides(server: OllamaServe, shards: list[Path], work: Path, gguf_split: str, *,
               warm_between_steps: bool = False) -> Measured:
    assert server.info is not None
    drop_caches()
    with DiskMeter(work) as meter:
        if server.info.accepts_split_gguf:
            files = shards
        else:
            merged = work / "merged.gguf"
            subprocess.run([gguf_split, "--merge", str(shards[0]), str(merged)], check=True,
                           capture_output=True)
            files = [merged]
            # Each of the guides' commands starts cold, as at real sizes: a 131-481 GB merge
            # is no longer in the page cache when `ollama create` reads it (twice: to hash it,
            # then to upload it). This 2.5 GB one would be, and would hide those reads.
            # --warm-between-steps keeps it, for a machine whose RAM holds the whole model.
            if not warm_between_steps:
                drop_caches()
        (files[0].parent / "Modelfile").write_text(modelfile(server, files))
        ollama_cli(server, "create", "guides:bench", "-f", "Modelfile", cwd=files[0].parent)
    ollama_cli(server, "rm", "guides:bench")
    (work / "merged.gguf").unlink(missing_ok=True)
    assert meter.result
    return meter.result


def run_ollamads(server: OllamaServe, shards: list[Path], work: Path, home: Path, *,
                 store_known: bool) -> tuple[Measured, int]:
    """``ollamads register`` as a user runs it, in a shell that exports the server's
    OLLAMA_MODELS (``store_known``) or knows nothing of it."""
    env = {k: v for k, v in os.environ.items() if k not in ("OLLAMA_MODELS", "OLLAMA_HOST")}
    env["OLLAMADS_HOME"] = str(home)
    if store_known:
        env["OLLAMA_MODELS"] = str(server.models_dir)
    else:
        env["HOME"] = str(work / "a-user-who-never-ran-ollama")
    drop_caches()
    with DiskMeter(work) as meter:
        run = run_measured(
            [sys.executable, "-m", "ollamads", "register", "ollamads:bench", *map(str, shards),
             "--host", server.url], env=env,
        )
    if run.returncode:
        raise SystemExit(f"ollamads register failed: {run.output[-500:]}")
    if "uploaded)" in run.output and ", 0 uploaded)" not in run.output:
        raise SystemExit(f"ollamads uploaded, so it did not find the store: {run.output[-500:]}")
    rss = run.peak_rss
    if os.environ.get("BENCH_VERBOSE"):
        print(run.output[-1500:])
    ollama_cli(server, "rm", "ollamads:bench")
    ollama_cli(server, "rm", "ollamads:bench-think")  # V3.1's second name on the same blobs
    for leftover in ("merges", "registered"):  # the next round starts from the downloads alone
        shutil.rmtree(home / leftover, ignore_errors=True)
    assert meter.result
    return meter.result, rss


def run_fallback(server: OllamaServe, shards: list[Path], work: Path, home: Path) -> tuple[Measured, int]:
    """The /api/create fallback: shards hard-linked into the store, the server rewrites."""
    from dataclasses import replace

    from ollamads.registration import plan_registration, register_files

    os.environ["OLLAMA_MODELS"] = str(server.models_dir)
    os.environ["OLLAMADS_HOME"] = str(home)
    assert server.info is not None
    plan = replace(plan_registration(server.info, shards), route="place")
    definition = ModelDefinition.for_family("fallback:bench", get_family("v3.1"), shards, server=server.info)
    drop_caches()
    own_before = _own_write_bytes()
    with DiskMeter(work) as meter:
        register_files(plan, definition)
    own = _own_write_bytes() - own_before
    ollama_cli(server, "rm", "fallback:bench")
    ollama_cli(server, "rm", "fallback:bench-think")
    shutil.rmtree(home, ignore_errors=True)
    assert meter.result
    return meter.result, own


def _own_write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def line_report(name: str, size: int, floor: Measured, rows: list[tuple[str, Measured, list[Measured]]]) -> None:
    print(f"\n{name}: model {size / GB:.2f} GB")
    print(f"  {'pipeline':<36} {'time':>8} {'vs cat':>7} {'written':>9} {'peak disk':>10}  every run")
    for label, m, every in rows:
        print(f"  {label:<36} {m.seconds:7.2f}s {m.seconds / floor.seconds:6.2f}x "
              f"{m.bytes_written / size:8.2f}x {m.peak_extra_disk / size:9.2f}x  "
              + " ".join(f"{run.seconds:.2f}" for run in every))


def _median(runs: list[Measured]) -> Measured:
    """The run of median time (its bytes and peak disk with it)."""
    return sorted(runs, key=lambda m: m.seconds)[len(runs) // 2]


def pull_shards(work: Path, home: Path, n_shards: int, layers: int) -> list[Path]:
    """The shards, downloaded and verified by ``ollamads pull`` from a local Hub stand-in."""
    entry = resolve(SPEC)
    source = write_big_shards(work / "src", n_shards, layers=layers,
                              name=f"{entry.model.file_prefix}-{entry.quant.hub_name}")
    folder = f"{entry.quant.folder}/" if entry.quant.folder else ""
    files = {folder + p.name: p.read_bytes() for p in source}
    shutil.rmtree(work / "src")
    with HubStub({entry.repo: files}) as stub:
        env = {**os.environ, "HF_ENDPOINT": stub.url, "HF_HUB_DISABLE_TELEMETRY": "1",
               "OLLAMADS_HOME": str(home)}
        done = subprocess.run([sys.executable, "-m", "ollamads", "pull", SPEC], env=env,
                              capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"ollamads pull failed: {done.stderr[-500:]}")
    del files
    return [home / "models" / entry.repo / path for path in sorted(stub.repos[entry.repo])]


def unverified_copies(shards: list[Path], work: Path) -> list[Path]:
    """Copies of the shards that no ollamads home has a record of. Copies, not links: placing
    a file lets Ollama set its times, which would make the downloads' records stale."""
    folder = work / "unverified"
    folder.mkdir()
    for shard in shards:
        shutil.copyfile(shard, folder / shard.name)
    return [folder / shard.name for shard in shards]


def run_unverified(server: OllamaServe, copies: list[Path], work: Path) -> Measured:
    """``ollamads register`` of files it has no record of verifying: it hashes each one."""
    return run_ollamads(server, copies, work, work / "home-unverified", store_known=True)[0]


def measure_line(server: OllamaServe, shards: list[Path], copies: list[Path], work: Path, home: Path,
                 gguf_split: str, repeats: int, warm_between_steps: bool = False,
                 ) -> tuple[dict[str, list[Measured]], int, int]:
    """Every pipeline ``repeats`` times against one server: the runs by pipeline, ollamads'
    peak RSS, and what ollamads itself wrote on the /api/create fallback."""
    assert server.info is not None
    runs: dict[str, list[Measured]] = {}
    peaks = {"rss": 0, "own": 0}

    def ours(key: str, known: bool) -> Measured:
        measured, peak = run_ollamads(server, shards, work, home, store_known=known)
        peaks["rss"] = max(peaks["rss"], peak)
        return measured

    def fallback() -> Measured:
        measured, written = run_fallback(server, shards, work, work / "home2")
        peaks["own"] = max(peaks["own"], written)
        return measured

    steps: list[tuple[str, Callable[[], Measured]]] = [
        ("floor", lambda: run_floor(shards, work)),
        ("guides", lambda: run_guides(server, shards, work, gguf_split,
                                      warm_between_steps=warm_between_steps)),
        ("known", lambda: ours("known", True)),
        ("elsewhere", lambda: ours("elsewhere", False)),
        ("unverified", lambda: run_unverified(server, copies, work)),
    ]
    if server.info.gguf_handling == "rewrite":
        steps.append(("fallback", fallback))
    for round_no in range(repeats):
        # Each round starts one step later, so no pipeline always follows the same one (a run
        # after the guides' two writes of the model meets a disk still busy with them).
        for key, step in steps[round_no:] + steps[:round_no]:
            runs.setdefault(key, []).append(step())
    return runs, peaks["rss"], peaks["own"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=7, help="model layers (7 gives ~2.5 GB)")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="rounds per line; medians are reported")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="a folder on the disk to measure")
    parser.add_argument("--lines", default="OLD,NEW,NEWEST", help="which toolchain lines to run")
    parser.add_argument("--warm-between-steps", action="store_true",
                        help="leave the guides' merged file in the page cache for `ollama create` "
                             "(only possible where RAM holds the whole model)")
    args = parser.parse_args()
    tools = toolchain_env()
    failed = []
    with tempfile.TemporaryDirectory(prefix="ollamads-bench-", dir=args.dir) as tmp:
        work = Path(tmp)
        home = work / "home"  # ollamads' home for the runs: the verified downloads are here
        # The servers record themselves in another home: ollamads' runs see no serve record.
        os.environ["OLLAMADS_HOME"] = str(work / "serve-home")
        shards = pull_shards(work, home, args.shards, args.layers)
        copies = unverified_copies(shards, work)
        size = sum(p.stat().st_size for p in shards)
        print(f"{args.repeats} rounds per line, each pipeline once per round, the order rotated; medians")
        wanted = {f"OLLAMADS_OLLAMA_{name}" for name in args.lines.split(",")}
        for variable, line in (entry for entry in LINES if entry[0] in wanted):
            models = work / f"models-{variable}"
            server = OllamaServe(models, binary=tools[variable], log_path=work / f"{variable}.log",
                                 env={**MODEL_ENVIRONMENT, "HOME": str(work)})
            with server:
                info = server.info
                assert info is not None
                runs, rss, own = measure_line(server, shards, copies, work, home,
                                              tools["OLLAMADS_GGUF_SPLIT"], args.repeats,
                                              args.warm_between_steps)
                med = {k: _median(v) for k, v in runs.items()}
                labels = {"floor": "cat (floor)", "guides": f"guides ({info.version})",
                          "known": "ollamads register, store known",
                          "elsewhere": "ollamads register, server elsewhere",
                          "unverified": "ollamads register, unverified files",
                          "fallback": "ollamads via /api/create (place)"}
                rows = [(label, med[key], runs[key]) for key, label in labels.items() if key in med]
                line_report(f"{line}, server {info.version}", size, med["floor"], rows)
                for key in ("known", "elsewhere"):
                    speedup = med["guides"].seconds / med[key].seconds
                    writes = med[key].bytes_written / size
                    ok = speedup >= MIN_SPEEDUP and writes <= MAX_WRITES[info.gguf_handling]
                    print(f"  {key:<9}: {speedup:.2f}x faster than the guides (target {MIN_SPEEDUP}x), "
                          f"writes {writes:.3f}x (target <= {MAX_WRITES[info.gguf_handling]}x): "
                          + ("met" if ok else "NOT MET"))
                    if not ok:
                        failed.append(f"{info.version} {key}")
                print(f"  ollamads peak RSS {rss / 1e6:.0f} MB")
                if "fallback" in med:
                    print(f"  /api/create fallback: ollamads itself wrote {own} bytes (its records, "
                          f"no model bytes); the server wrote "
                          f"{med['fallback'].bytes_written / size:.2f}x the model")
            shutil.rmtree(models, ignore_errors=True)
    if failed:
        print("targets not met: " + ", ".join(failed))


if __name__ == "__main__":
    main()
