"""Split shards -> a registered model, on each Ollama line, with a cold page cache.

For each line (v0.24: merged files; v0.30+: shards), one run each, in turn, of:

* ``cat``: ``cat shards > file`` then sync: the disk's floor for reading the model and writing
  it once;
* the guides' pipeline: ``llama-gguf-split --merge`` + ``ollama create -f Modelfile`` on v0.24;
  ``ollama create`` with one FROM per shard on v0.30+;
* ``ollamads register`` (the CLI, with the server's store found through OLLAMA_MODELS): the
  ``merge-into-store`` route on v0.24, ``direct`` on v0.30+;
* on v0.30+ also the ``/api/create`` fallback (``place``: shards hard-linked into the store),
  with ollamads' own writes counted apart from the server's.

Reported per run: wall time, bytes written to the block device (/proc/diskstats, after a sync),
peak extra disk (free space sampled every 50 ms), and the ollamads process's peak RSS; then the
ratios the targets are stated in. Needs root (to drop the page cache) and the toolchain
(``scripts/toolchain.sh``). The machine should be otherwise idle: the device counters see
every writer.

    .venv/bin/python benchmarks/pipeline.py [--layers 7] [--shards 4] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._measure import DiskMeter, Measured, drop_caches, run_measured, write_big_shards  # noqa: E402
from ollamads.catalog.families import get_family  # noqa: E402
from ollamads.ollama.modelfile import ModelDefinition  # noqa: E402
from ollamads.ollama.serve import MODEL_ENVIRONMENT, OllamaServe  # noqa: E402
from tests.support.toolchain import toolchain_env  # noqa: E402

GB = 1e9


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
    with DiskMeter(work) as meter:
        with open(out, "wb") as sink:
            subprocess.run(["cat", *map(str, shards)], stdout=sink, check=True)
            os.fsync(sink.fileno())
    out.unlink()
    assert meter.result
    return meter.result


def run_guides(server: OllamaServe, shards: list[Path], work: Path, gguf_split: str) -> Measured:
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
        (files[0].parent / "Modelfile").write_text(modelfile(server, files))
        ollama_cli(server, "create", "guides:bench", "-f", "Modelfile", cwd=files[0].parent)
    ollama_cli(server, "rm", "guides:bench")
    (work / "merged.gguf").unlink(missing_ok=True)
    assert meter.result
    return meter.result


def run_ollamads(server: OllamaServe, shards: list[Path], work: Path, home: Path) -> tuple[Measured, int]:
    env = {**os.environ, "OLLAMA_MODELS": str(server.models_dir), "OLLAMADS_HOME": str(home)}
    drop_caches()
    with DiskMeter(work) as meter:
        run = run_measured(
            [sys.executable, "-m", "ollamads", "register", "ollamads:bench", *map(str, shards),
             "--host", server.url], env=env,
        )
    if run.returncode:
        raise SystemExit(f"ollamads register failed: {run.output[-500:]}")
    rss = run.peak_rss
    ollama_cli(server, "rm", "ollamads:bench")
    ollama_cli(server, "rm", "ollamads:bench-think")  # V3.1's second name on the same blobs
    shutil.rmtree(home, ignore_errors=True)
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


def line_report(name: str, size: int, floor: Measured, rows: list[tuple[str, Measured]]) -> None:
    print(f"\n{name}: model {size / GB:.2f} GB")
    print(f"  {'pipeline':<34} {'time':>8} {'vs cat':>7} {'written':>9} {'peak disk':>10}")
    for label, m in [("cat (floor)", floor), *rows]:
        print(f"  {label:<34} {m.seconds:7.2f}s {m.seconds / floor.seconds:6.2f}x "
              f"{m.bytes_written / size:8.2f}x {m.peak_extra_disk / size:9.2f}x")


def _median(runs: list[Measured]) -> Measured:
    """The run of median time (its bytes and peak disk with it)."""
    return sorted(runs, key=lambda m: m.seconds)[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=7, help="model layers (7 gives ~2.5 GB)")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="rounds per line; medians are reported")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="a folder on the disk to measure")
    args = parser.parse_args()
    tools = toolchain_env()
    with tempfile.TemporaryDirectory(prefix="ollamads-bench-", dir=args.dir) as tmp:
        work = Path(tmp)
        shards = write_big_shards(work / "dl", args.shards, layers=args.layers)
        size = sum(p.stat().st_size for p in shards)
        print(f"{args.repeats} rounds per line, each pipeline once per round in turn; medians")
        for line, variable in (("Ollama v0.24 (merged files)", "OLLAMADS_OLLAMA_OLD"),
                               ("Ollama v0.30+ (shards)", "OLLAMADS_OLLAMA_NEW")):
            models = work / f"models-{variable}"
            server = OllamaServe(models, binary=tools[variable], log_path=work / f"{variable}.log",
                                 env={**MODEL_ENVIRONMENT, "HOME": str(work)})
            with server:
                assert server.info is not None
                runs: dict[str, list[Measured]] = {}
                rss, own = 0, 0
                for _ in range(args.repeats):
                    runs.setdefault("floor", []).append(run_floor(shards, work))
                    runs.setdefault("guides", []).append(
                        run_guides(server, shards, work, tools["OLLAMADS_GGUF_SPLIT"]))
                    ours, peak = run_ollamads(server, shards, work, work / "home")
                    runs.setdefault("ollamads", []).append(ours)
                    rss = max(rss, peak)
                    if server.info.accepts_split_gguf:
                        fallback, written = run_fallback(server, shards, work, work / "home2")
                        runs.setdefault("fallback", []).append(fallback)
                        own = max(own, written)
                floor, guides, ours = (_median(runs[k]) for k in ("floor", "guides", "ollamads"))
                rows = [(f"guides ({server.info.version})", guides), ("ollamads register", ours)]
                if "fallback" in runs:
                    rows.append(("ollamads via /api/create (place)", _median(runs["fallback"])))
                line_report(f"{line}, server {server.info.version}", size, floor, rows)
                print(f"  ollamads vs guides: {guides.seconds / ours.seconds:.2f}x faster; "
                      f"ollamads peak RSS {rss / 1e6:.0f} MB")
                if "fallback" in runs:
                    print(f"  /api/create fallback: ollamads itself wrote {own} bytes (its records, "
                          f"no model bytes); the server wrote "
                          f"{_median(runs['fallback']).bytes_written / size:.2f}x the model")
            shutil.rmtree(models, ignore_errors=True)


if __name__ == "__main__":
    main()
