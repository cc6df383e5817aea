"""A disk that fills up part-way: during the download, the merge, the blob placement or upload,
and the template rewrite.

Each test makes a filesystem of a few megabytes, lets the run pass the disk preflight, then
eats the free space at a chosen moment (from a progress or report callback, as another program
filling the disk would). Expected every time: one line naming the folder and the bytes still
needed, nothing under a final name that is not complete, and the same command finishing once
the space is freed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ollamads.catalog import resolve
from ollamads.cli._errors import error_line
from ollamads.errors import InsufficientSpaceError
from ollamads.fileio import allocated_bytes
from ollamads.gguf.format import KEY_CHAT_TEMPLATE, read_gguf
from ollamads.gguf.merge import merge, merged_size
from ollamads.gguf.retemplate import apply_fixed_template, fixed_template_for
from ollamads.gguf.shards import open_shard_set
from ollamads.ollama.api import OllamaAPI
from ollamads.ollama.store import Placement
from ollamads.paths import local_path, repo_dir
from ollamads.pipeline import create
from ollamads.quant_pull import pull_quant
from ollamads.progress import ProgressEvent
from ollamads.tiny import write_tiny_shards
from ollamads.units import format_bytes
from tests.support.cli import run_cli
from tests.support.faults import (
    FaultServer,
    SmallDisk,
    bad_blobs,
    manifests,
    ollamads_debris,
    one_line,
    sha256_file,
)
from tests.support.hubstub import HubStub
from tests.support.reference import deepseek_original_v31
from tests.support.synthetic import tiny_repo

pytestmark = pytest.mark.integration
TINY = {"num_predict": 8, "num_ctx": 1024}
SPLIT = "r1:IQ1_S"  # three shards
SINGLE = "v3.1:TQ1_0"
MB = 1 << 20

Hub = Callable[..., HubStub]
Disk = Callable[..., SmallDisk]
Server = Callable[..., FaultServer]


def _repo(hub: Hub, spec: str, tmp_path: Path) -> tuple[HubStub, dict[str, bytes]]:
    entry = resolve(spec)
    files = tiny_repo(entry, tmp_path / "src")
    return hub({entry.repo: files}), files


def _check_one_line(err: InsufficientSpaceError, directory: Path) -> str:
    line = error_line(err)
    assert "\n" not in line and f"{directory}" in line, line
    return line


def _no_finished_downloads(spec: str, files: dict[str, bytes]) -> None:
    repo = resolve(spec).repo
    for path in files:
        assert not local_path(repo, path).exists(), f"{path} looks complete but is not"


def _quiet(stub: HubStub) -> None:
    import time

    deadline = time.monotonic() + 30
    while stub.in_flight:
        assert time.monotonic() < deadline, "the stand-in kept sending"
        time.sleep(0.02)


def _still_needed(spec: str, files: dict[str, bytes]) -> int:
    """What the disk must still take: each file's size less what its .part holds."""
    repo = resolve(spec).repo
    return sum(
        max(0, len(data) - allocated_bytes(local_path(repo, path).with_name(Path(path).name + ".part")))
        for path, data in files.items()
    )


def _all_downloaded(spec: str, files: dict[str, bytes]) -> None:
    repo = resolve(spec).repo
    for path, data in files.items():
        assert local_path(repo, path).read_bytes() == data


# --- the download ---------------------------------------------------------------------------------


def test_download_meets_a_full_disk_part_way(
    hub: Hub, small_disk: Disk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ext2 has no fallocate: the .part files are sparse and a range hits the full disk."""
    disk = small_disk(4 * MB, "ext2")
    monkeypatch.setenv("OLLAMADS_HOME", str(disk.path / "home"))
    stub, files = _repo(hub, SPLIT, tmp_path)
    stub.rate = 200_000
    total = sum(len(b) for b in files.values())

    def fill_once_bytes_arrive(event: ProgressEvent) -> None:
        if event.phase == "download" and 0 < event.done < event.total and not disk.filler.exists():
            disk.fill()

    with pytest.raises(InsufficientSpaceError) as err:
        pull_quant(resolve(SPLIT), progress=fill_once_bytes_arrive, connections=3)
    folder = local_path(resolve(SPLIT).repo, next(iter(files))).parent
    _check_one_line(err.value, folder)
    assert err.value.message.startswith("the disk filled up while writing ")
    needed = _still_needed(SPLIT, files)
    assert 0 < needed < total  # what is still missing, not the whole set again
    assert f": {format_bytes(needed)} more needed, " in err.value.message
    _no_finished_downloads(SPLIT, files)

    _quiet(stub)  # the first run's connections are all closed before counting again
    served = stub.bytes_served()
    disk.release()
    stub.reset_counters()
    stub.rate = None
    result = pull_quant(resolve(SPLIT))
    _all_downloaded(SPLIT, files)
    # The re-run continued every range from what was kept on disk.
    assert stub.bytes_served() == result.bytes_downloaded < total <= served + result.bytes_downloaded
    assert ollamads_debris(disk.path) == []


def test_the_disk_fills_between_the_preflight_and_the_preallocation(
    hub: Hub, small_disk: Disk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = small_disk(4 * MB)
    monkeypatch.setenv("OLLAMADS_HOME", str(disk.path / "home"))
    stub, files = _repo(hub, SPLIT, tmp_path)

    def fill_after_the_first_part(event: ProgressEvent) -> None:
        if event.phase == "download" and event.state == "queued" and not disk.filler.exists():
            disk.fill()

    with pytest.raises(InsufficientSpaceError) as err:
        pull_quant(resolve(SPLIT), progress=fill_after_the_first_part, connections=1)
    folder = local_path(resolve(SPLIT).repo, next(iter(files))).parent
    _check_one_line(err.value, folder)
    # The first part holds its whole size already; the other two still need theirs.
    sizes = [len(files[p]) for p in sorted(files)]
    assert _still_needed(SPLIT, files) == sum(sizes[1:])
    assert f": {format_bytes(sum(sizes[1:]))} more needed, " in err.value.message
    assert stub.bytes_served() == 0
    _no_finished_downloads(SPLIT, files)

    disk.release()
    pull_quant(resolve(SPLIT))
    _all_downloaded(SPLIT, files)
    assert ollamads_debris(disk.path) == []


# --- the model blob written into the store (direct, merge-into-store) -------------------------------


@pytest.mark.parametrize(("line", "route"), [("split", "direct"), ("merged", "merge-into-store")])
def test_the_store_fills_while_the_model_blob_is_written(
    hub: Hub, small_disk: Disk, fault_server: Server, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, line: str, route: str,
) -> None:
    disk = small_disk(8 * MB)
    server = fault_server(line, models=disk.path / "models")
    monkeypatch.setenv("OLLAMA_MODELS", str(server.models_dir))
    _repo(hub, SPLIT, tmp_path)

    def fill_half_way(event: ProgressEvent) -> None:
        if event.phase == "write" and event.done * 2 >= event.total > 0 and not disk.filler.exists():
            disk.fill()

    with pytest.raises(InsufficientSpaceError) as err:
        create(SPLIT, name="full:blob", host=server.url, parameters=TINY, progress=fill_half_way)
    blobs = server.models_dir / "blobs"
    _check_one_line(err.value, blobs)
    shards = open_shard_set(local_path(resolve(SPLIT).repo, sorted(tiny_repo_paths(SPLIT))[0]))
    style = "quantize-copy" if line == "split" else "gguf-split"
    assert f"{format_bytes(merged_size(shards, style))} more needed" in err.value.message
    assert manifests(server.models_dir) == [] and bad_blobs(server.models_dir) == []
    assert ollamads_debris(server.models_dir, disk.path) == []
    assert OllamaAPI(server.url).show("full:blob") is None

    disk.release()
    result = create(SPLIT, name="full:blob", host=server.url, parameters=TINY)
    assert result.created and result.route == route and result.bytes_downloaded == 0
    assert OllamaAPI(server.url).show("full:blob") is not None
    assert bad_blobs(server.models_dir) == [] and ollamads_debris(server.models_dir) == []


def tiny_repo_paths(spec: str) -> list[str]:
    entry = resolve(spec)
    folder = repo_dir(entry.repo)
    return [str(p.relative_to(folder)) for p in folder.rglob("*.gguf")]


# --- the merge next to the downloads (upload route, <= v0.24) ---------------------------------------


def test_the_downloads_disk_fills_during_the_merge_before_an_upload(
    hub: Hub, small_disk: Disk, fault_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ollamads.ollama.store as store

    disk = small_disk(4 * MB)
    monkeypatch.setenv("OLLAMADS_HOME", str(disk.path / "home"))
    monkeypatch.setattr(store, "_is_loopback", lambda url: False)  # a server on another machine
    server = fault_server("merged")
    _repo(hub, SPLIT, tmp_path)

    def fill_half_way(event: ProgressEvent) -> None:
        if event.phase == "merge" and event.done * 2 >= event.total > 0 and not disk.filler.exists():
            disk.fill()

    with pytest.raises(InsufficientSpaceError) as err:
        create(SPLIT, name="full:merge", host=server.url, parameters=TINY, progress=fill_half_way)
    first = local_path(resolve(SPLIT).repo, sorted(tiny_repo_paths(SPLIT))[0])
    _check_one_line(err.value, first.parent)
    assert f"{format_bytes(merged_size(open_shard_set(first)))} more needed" in err.value.message
    assert sorted(p.name for p in first.parent.glob("*.gguf")) == sorted(
        p.name for p in open_shard_set(first).paths)  # the shards, and no merged file
    assert ollamads_debris(disk.path) == [] and manifests(server.models_dir) == []

    disk.release()
    result = create(SPLIT, name="full:merge", host=server.url, parameters=TINY)
    assert result.created and result.route == "upload" and result.bytes_downloaded == 0
    assert OllamaAPI(server.url).show("full:merge") is not None


# --- placement by copy into a store on another filesystem ---------------------------------------------


def test_the_store_fills_while_a_file_is_copied_into_it(
    hub: Hub, small_disk: Disk, fault_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = small_disk(8 * MB)
    server = fault_server("merged", models=disk.path / "models")
    monkeypatch.setenv("OLLAMA_MODELS", str(server.models_dir))
    _, files = _repo(hub, SINGLE, tmp_path)

    def fill_after_the_download(line: str) -> None:
        if "present and verified" in line:
            disk.fill()

    with pytest.raises(InsufficientSpaceError) as err:
        create(SINGLE, name="full:copy", host=server.url, parameters=TINY, report=fill_after_the_download)
    _check_one_line(err.value, server.models_dir / "blobs")
    (data,) = files.values()
    assert f"{format_bytes(len(data))} more needed" in err.value.message
    assert manifests(server.models_dir) == [] and bad_blobs(server.models_dir) == []
    assert ollamads_debris(server.models_dir) == []

    disk.release()
    result = create(SINGLE, name="full:copy", host=server.url, parameters=TINY)
    assert result.created and result.placements == {Path(next(iter(files))).name: Placement.COPY}
    assert OllamaAPI(server.url).show("full:copy") is not None


# --- the server's disk during an upload ------------------------------------------------------------


@pytest.mark.parametrize("line", ["merged", "split", "layers"])
def test_the_servers_disk_fills_during_an_upload(
    hub: Hub, small_disk: Disk, fault_server: Server, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, line: str,
) -> None:
    import ollamads.ollama.store as store

    disk = small_disk(8 * MB)
    server = fault_server(line, models=disk.path / "models")
    monkeypatch.setattr(store, "_is_loopback", lambda url: False)  # uploads, as to another machine
    _, files = _repo(hub, SPLIT, tmp_path)
    sizes = [len(files[p]) for p in sorted(files)]
    # Room for the first shard only (the <= v0.24 line gets one merged file: no room at all).
    room = sizes[0] + 16 * 1024

    def fill_after_the_download(text: str) -> None:
        if "present and verified" in text:
            disk.fill(leave=room)

    with pytest.raises(InsufficientSpaceError) as err:
        create(SPLIT, name="full:upload", host=server.url, parameters=TINY, report=fill_after_the_download)
    line_text = _check_one_line(err.value, server.models_dir / "blobs")
    assert server.url in line_text and "no space left on device" in line_text
    assert manifests(server.models_dir) == [] and bad_blobs(server.models_dir) == []

    disk.release()
    result = create(SPLIT, name="full:upload", host=server.url, parameters=TINY)
    assert result.created and result.route == "upload"
    if line != "merged":
        # The first shard reached the server before its disk filled: it is not sent again.
        assert result.bytes_uploaded == sum(sizes[1:])
    assert OllamaAPI(server.url).show("full:upload") is not None
    assert bad_blobs(server.models_dir) == []


# --- the template rewrite (ollamads merge --fix-template) ---------------------------------------------


def _unfixed_v31_shards(folder: Path) -> list[Path]:
    """The tiny V3.1 split, carrying DeepSeek's own template (the one --fix-template replaces)."""
    from ollamads.gguf.retemplate import rewrite_chat_template

    shards = write_tiny_shards(folder, "v3.1", n_shards=3)
    rewrite_chat_template(shards[0], shards[0], deepseek_original_v31(), force=True)
    return shards


def test_merge_fix_template_on_a_disk_with_room_for_one_copy(
    small_disk: Disk, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = small_disk(4 * MB)
    shards = _unfixed_v31_shards(tmp_path / "in")
    out = disk.path / "merged.gguf"
    size = merged_size(open_shard_set(shards[0]))
    disk.fill(leave=size + 64 * 1024)
    argv = ["merge", str(shards[0]), str(out), "--method", "builtin", "--fix-template"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 1
    line = one_line(err)
    assert line.startswith("Error: not enough disk for the template rewrite: ") and str(disk.path) in line
    assert not out.exists(), "a merged file without the fixed template was left under the output name"
    assert ollamads_debris(disk.path) == []

    disk.release()
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert read_gguf(out).value(KEY_CHAT_TEMPLATE) == fixed_template_for("v3.1")


def test_the_disk_fills_during_the_template_rewrite(small_disk: Disk, tmp_path: Path) -> None:
    disk = small_disk(4 * MB)
    shards = _unfixed_v31_shards(tmp_path / "in")
    merged = merge(shards[0], disk.path / "merged.gguf", method="builtin").out
    before = sha256_file(merged)

    def fill(done: int, total: int) -> None:
        if not disk.filler.exists():  # before the copy: room for the new header, not the data
            disk.fill(leave=64 * 1024)

    with pytest.raises(InsufficientSpaceError) as err:
        apply_fixed_template(merged, "v3.1", progress=fill)
    _check_one_line(err.value, disk.path)
    assert " more needed" in err.value.message
    assert sha256_file(merged) == before, "the original was touched"
    assert ollamads_debris(disk.path) == []

    disk.release()
    assert apply_fixed_template(merged, "v3.1") is True
    assert read_gguf(merged).value(KEY_CHAT_TEMPLATE) == fixed_template_for("v3.1")


# --- nothing to write ---------------------------------------------------------------------------------


def test_a_rerun_on_a_full_disk_writes_nothing_and_finishes(
    hub: Hub, small_disk: Disk, fault_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The downloads took the last byte of the disk: asking again must still work."""
    disk = small_disk(4 * MB)
    monkeypatch.setenv("OLLAMADS_HOME", str(disk.path / "home"))
    server = fault_server("split")
    monkeypatch.setenv("OLLAMA_MODELS", str(server.models_dir))
    _repo(hub, SPLIT, tmp_path)
    assert create(SPLIT, name="full:again", host=server.url, parameters=TINY).created
    disk.fill()
    lines: list[str] = []
    again = create(SPLIT, name="full:again", host=server.url, parameters=TINY, report=lines.append)
    assert not again.created and "full:again is already registered from these files" in lines
    assert disk.free() < 4096 and ollamads_debris(disk.path) == []
