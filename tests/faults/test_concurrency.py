"""Two commands on the same files at once: two ``create`` of one model, ``pull`` and ``create`` of
one quant, two ``merge`` of one shard set into one output.

The first runs in a child process and is held at a known point (a download stalled by the Hub
stand-in, a merge paused half-way); the second runs meanwhile. Expected: the second fails at once
with one line naming what the other process is doing (its pid included), and once the first is
done, the second run again ends exactly where running them one after the other ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ollamads.catalog import resolve
from ollamads.cli._errors import error_line
from ollamads.errors import BusyError, OutputExistsError
from ollamads.gguf.merge import merge
from ollamads.ollama.store import ModelName
from ollamads.paths import local_path, repo_dir
from ollamads.pipeline import create, plan_create
from ollamads.tiny import write_tiny_shards
from tests.support.faults import FaultServer, bad_blobs, ollamads_debris
from tests.support.hubstub import HubStub
from tests.support.synthetic import tiny_repo

pytestmark = pytest.mark.integration
SPEC = "r1:IQ1_S"
TINY = {"num_predict": 8, "num_ctx": 1024}

Hub = Callable[..., HubStub]
Server = Callable[..., FaultServer]

CHILD_CREATE = textwrap.dedent(
    """
    import sys
    from ollamads.hub import transfer
    transfer.RETRY_BACKOFF_S = (0.0,)  # the stalled range is retried at once when released
    from ollamads.pipeline import create
    spec, host, name = sys.argv[1:4]
    create(spec, name=name, host=host, parameters={"num_predict": 8, "num_ctx": 1024})
    """
)

CHILD_PULL = textwrap.dedent(
    """
    import sys
    from ollamads.hub import transfer
    transfer.RETRY_BACKOFF_S = (0.0,)
    from ollamads.cli import main
    main(["pull", sys.argv[1]])
    """
)

CHILD_MERGE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from ollamads.gguf.merge import merge
    first, out, paused, go = sys.argv[1:5]

    def progress(done, total):
        if done * 2 >= total and not Path(paused).exists():
            Path(paused).touch()
            while not Path(go).exists():
                time.sleep(0.01)

    merge(first, out, method="builtin", progress=progress)
    """
)


@contextmanager
def child(code: str, *args: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args], env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _finish(process: subprocess.Popen[str]) -> None:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err


def _stalled_repo(hub: Hub, tmp_path: Path, server_url: str | None = None) -> tuple[HubStub, object]:
    """The quant on the Hub, whose second shard's download stalls part-way. With a server, its
    headers are read first (as `create` does to check the tensor types that server reads), so
    the stall is met by the download itself."""
    entry = resolve(SPEC)
    files = tiny_repo(entry, tmp_path / "src")
    stub = hub({entry.repo: files})
    if server_url is not None:
        plan_create(SPEC, host=server_url)
    stall = stub.stall_after(entry.repo, sorted(files)[1], 10_000)
    return stub, stall


def _manifest(server: FaultServer, name: str) -> bytes:
    return ModelName.parse(name).manifest_path(server.models_dir).read_bytes()


@pytest.mark.parametrize("line", ["merged", "split", "layers"])
def test_two_creates_of_one_model(
    hub: Hub, fault_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str
) -> None:
    server = fault_server(line)
    monkeypatch.setenv("OLLAMA_MODELS", str(server.models_dir))
    stub, stall = _stalled_repo(hub, tmp_path, server.url)
    with child(CHILD_CREATE, SPEC, server.url, "twice:x") as first:
        assert stall.reached.wait(60), "the first create never started downloading"  # type: ignore[attr-defined]
        with pytest.raises(BusyError) as err:
            create(SPEC, name="twice:x", host=server.url, parameters=TINY)
        line_text = error_line(err.value)
        assert line_text == (
            f"Error: another ollamads process (pid {first.pid}) is creating twice:x on {server.url} "
            "— wait for it to finish, or stop it first; then re-run"
        )
        stall.release.set()  # type: ignore[attr-defined]
        _finish(first)
    served = stub.bytes_served()
    again = create(SPEC, name="twice:x", host=server.url, parameters=TINY)
    assert not again.created and stub.bytes_served() == served  # nothing fetched or made twice
    # The same model a single create makes.
    create(SPEC, name="once:x", host=server.url, parameters=TINY)
    assert _manifest(server, "twice:x") == _manifest(server, "once:x")
    assert bad_blobs(server.models_dir) == []
    assert ollamads_debris(server.models_dir, Path(os.environ["OLLAMADS_HOME"])) == []


def test_pull_and_create_of_one_quant(
    hub: Hub, fault_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = fault_server("split")
    monkeypatch.setenv("OLLAMA_MODELS", str(server.models_dir))
    stub, stall = _stalled_repo(hub, tmp_path)
    with child(CHILD_PULL, SPEC) as puller:
        assert stall.reached.wait(60), "the pull never started downloading"  # type: ignore[attr-defined]
        with pytest.raises(BusyError) as err:
            create(SPEC, name="pulled:x", host=server.url, parameters=TINY)
        assert error_line(err.value).startswith(
            f"Error: another ollamads process (pid {puller.pid}) is downloading into "
            f"{repo_dir(resolve(SPEC).repo)} — ")
        assert manifests_of(server) == []
        stall.release.set()  # type: ignore[attr-defined]
        _finish(puller)
    served = stub.bytes_served()
    result = create(SPEC, name="pulled:x", host=server.url, parameters=TINY)
    assert result.created and result.bytes_downloaded == 0 and stub.bytes_served() == served
    for path in stub.repos[resolve(SPEC).repo]:
        assert local_path(resolve(SPEC).repo, path).read_bytes() == stub.repos[resolve(SPEC).repo][path]
    assert ollamads_debris(Path(os.environ["OLLAMADS_HOME"])) == []


def manifests_of(server: FaultServer) -> list[Path]:
    root = server.models_dir / "manifests"
    return [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []


def test_two_merges_into_one_output(tmp_path: Path) -> None:
    shards = write_tiny_shards(tmp_path / "in", "v3", n_shards=3)
    out = tmp_path / "out" / "merged.gguf"
    out.parent.mkdir()
    reference = merge(shards[0], tmp_path / "reference.gguf", method="builtin").out.read_bytes()
    paused, go = tmp_path / "paused", tmp_path / "go"
    with child(CHILD_MERGE, str(shards[0]), str(out), str(paused), str(go)) as first:
        deadline = time.monotonic() + 60
        while not paused.exists():
            assert time.monotonic() < deadline and first.poll() is None, "the first merge never started"
            time.sleep(0.01)
        with pytest.raises(BusyError) as err:
            merge(shards[0], out, method="builtin")
        assert error_line(err.value) == (
            f"Error: another ollamads process (pid {first.pid}) is merging into {out} "
            "— wait for it to finish, or stop it first; then re-run"
        )
        assert not out.exists()
        go.touch()
        _finish(first)
    assert out.read_bytes() == reference
    # One after the other, the second merge would have found the output there.
    with pytest.raises(OutputExistsError):
        merge(shards[0], out, method="builtin")
    assert out.read_bytes() == reference
    assert sorted(p.name for p in out.parent.iterdir()) == ["merged.gguf"]
