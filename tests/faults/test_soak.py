"""Soak: 50 consecutive create / rm cycles of the tiny model on each line, then a last create,
in this process, against the Hub stand-in and a real server.

Nothing may grow that should not: ollamads' records and locks (the same files after the first
cycle), temporary files (none), blobs in the store (after ``rm`` none at all: ollamads leaves no
blob the server does not reference), open file descriptors and resident memory (flat after a few
warm-up cycles).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ollamads.catalog import resolve
from ollamads.ollama.api import OllamaAPI
from ollamads.paths import ollamads_home, repo_dir
from ollamads.pipeline import create
from tests.support.faults import FaultServer, bad_blobs, ollamads_debris
from tests.support.hubstub import HubStub
from tests.support.synthetic import tiny_repo

pytestmark = pytest.mark.integration
SPEC = "r1:IQ1_S"
CYCLES = 50
WARM_UP = 5
TINY = {"num_predict": 8, "num_ctx": 1024}
#: Per line; the cycles take about 20-40 s here.
TIME_LIMIT_S = 240
#: Growth allowed from the end of the warm-up to the end: allocator noise, not a leak (a leak of
#: one model blob or response body per cycle would be well over this).
RSS_SLACK = 8 << 20

Hub = Callable[..., HubStub]
Server = Callable[..., FaultServer]


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _unreferenced(models: Path) -> list[str]:
    used: set[str] = set()
    for path in (models / "manifests").rglob("*"):
        if path.is_file():
            manifest = json.loads(path.read_bytes())
            used |= {manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])}
    blobs = models / "blobs"
    return sorted(p.name for p in blobs.iterdir() if p.name.replace("-", ":", 1) not in used)


@pytest.mark.parametrize("line", ["merged", "split", "layers"])
def test_create_rm_cycles_leave_nothing_behind(
    hub: Hub, fault_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str
) -> None:
    entry = resolve(SPEC)
    stub = hub({entry.repo: tiny_repo(entry, tmp_path / "src")})
    server = fault_server(line)
    monkeypatch.setenv("OLLAMA_MODELS", str(server.models_dir))
    api = OllamaAPI(server.url)
    home = ollamads_home()
    route = {"split": "direct", "merged": "merge-into-store", "layers": "place"}[line]
    started = time.monotonic()
    records: set[str] | None = None
    fds = rss = 0
    for cycle in range(CYCLES):
        result = create(SPEC, name="soak:x", host=server.url, parameters=TINY)
        assert result.created and result.route == route, cycle
        assert _unreferenced(server.models_dir) == [], cycle
        assert api.delete("soak:x"), cycle
        assert list((server.models_dir / "blobs").iterdir()) == [], f"cycle {cycle}: rm left blobs"
        assert ollamads_debris(home, server.models_dir) == [], cycle
        if cycle == 0:
            records = _files(home)
            served = stub.bytes_served()
        assert _files(home) == records, f"cycle {cycle}: ollamads' files changed"
        if cycle == WARM_UP:
            fds, rss = _fds(), _rss()
        assert time.monotonic() - started < TIME_LIMIT_S, f"{cycle} cycles took too long"
    print(f"soak {line}: fds {fds} -> {_fds()}, rss {rss >> 20} -> {_rss() >> 20} MiB, {time.monotonic() - started:.1f}s")
    assert _fds() <= fds, f"open file descriptors grew from {fds} to {_fds()}"
    assert _rss() - rss <= RSS_SLACK, f"resident memory grew by {(_rss() - rss) >> 20} MiB"
    # Fetched once: the files, and in the first cycle the headers, read by Range requests to
    # check the tensor types on the lines that cannot read them all.
    size = sum(len(b) for b in stub.repos[entry.repo].values())
    assert stub.bytes_served() == served and size <= served <= 2 * size

    last = create(SPEC, name="soak:x", host=server.url, parameters=TINY)
    assert last.created and api.show("soak:x") is not None
    assert _unreferenced(server.models_dir) == [] and bad_blobs(server.models_dir) == []
    assert sorted(p.name for p in repo_dir(entry.repo).rglob("*.gguf")) == sorted(
        Path(p).name for p in stub.repos[entry.repo])
