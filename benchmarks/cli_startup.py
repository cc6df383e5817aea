"""`ollamads --help` against a bare `python -c "import typer"`, measured in one run.

Runs each command --runs times, alternating, and prints the medians and their ratio (the target
is at most 1.5x). Both start a fresh interpreter, so the ratio is what a user feels. As for an
installed package, the sources are compiled once first (a warm-up run, with bytecode writing on
even where PYTHONDONTWRITEBYTECODE is set): the runs then measure imports, not the compiler.

    .venv/bin/python benchmarks/cli_startup.py [--runs 21]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "import typer": [sys.executable, "-c", "import typer"],
    "ollamads --help": [sys.executable, "-m", "ollamads", "--help"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for argv in COMMANDS.values():
        subprocess.run(argv, cwd=root, check=True, stdout=subprocess.DEVNULL, env=env)
    for _ in range(args.runs):
        for name, argv in COMMANDS.items():
            started = time.perf_counter()
            subprocess.run(argv, cwd=root, check=True, stdout=subprocess.DEVNULL, env=env)
            times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(f"{name:<16} median {value * 1000:6.1f} ms over {args.runs} runs")
    print(f"ratio: {medians['ollamads --help'] / medians['import typer']:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
