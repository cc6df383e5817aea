"""The Hub's CDN misbehaving after the Hub's redirect, beyond what tests/test_hub.py covers (a
dropped connection, 200 to a Range request, a wrong Content-Range, 429/503 with and without
Retry-After, an expired signed URL, a file changed under its commit, corrupted bodies, kills).

Expected: retries within limits, then one line that names the file and says what to do; the
bytes that arrived are kept for the re-run; and no byte of another upload is ever spliced into a
file that is renamed into place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ollamads.catalog import resolve
from ollamads.cli._errors import error_line
from ollamads.errors import ChecksumError, HubError
from ollamads.hub import ranges, records, transfer
from ollamads.hub.records import PartState
from ollamads.ollama.serve import free_port
from ollamads.paths import local_path
from ollamads.quant_pull import plan_quant_pull, pull_quant
from ollamads.progress import ProgressEvent
from tests.support.hubstub import HubStub
from tests.support.synthetic import tiny_repo

SPEC = "v3.1:TQ1_0"  # one file, one range
RETRIES = 3

Hub = Callable[..., HubStub]


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer, "RETRY_BACKOFF_S", (0.0,) * RETRIES)


@pytest.fixture
def repo(hub: Hub, tmp_path: Path) -> tuple[HubStub, str, bytes]:
    entry = resolve(SPEC)
    ((path, data),) = tiny_repo(entry, tmp_path / "src").items()
    return hub({entry.repo: {path: data}}, redirect=True), path, data


def _local(path: str) -> Path:
    return local_path(resolve(SPEC).repo, path)


def _part(path: str) -> Path:
    local = _local(path)
    return local.with_name(local.name + ".part")


def _kept(path: str) -> int:
    return records.part_have(resolve(SPEC).repo, plan_quant_pull(resolve(SPEC)).files[0].remote, _part(path))


@pytest.mark.parametrize("kind", ["503", "403", "hang-up", "hang-up-after-bytes", "down"])
def test_a_cdn_that_keeps_failing_gives_up_naming_the_file(
    repo: tuple[HubStub, str, bytes], quick_retries: None, kind: str
) -> None:
    stub, path, data = repo
    arrived = 30_000 if kind == "hang-up-after-bytes" else 0
    if kind in ("503", "403"):
        stub.fail_next(int(kind), 100, where="cdn")
    elif kind.startswith("hang-up"):
        if arrived:
            stub.die_after(resolve(SPEC).repo, path, arrived)
        stub.die_after(resolve(SPEC).repo, path, 0, times=100)
    else:
        stub.cdn_origin = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(HubError) as err:
        pull_quant(resolve(SPEC))
    line = error_line(err.value)
    assert "\n" not in line
    reason = {
        "503": f"the Hub's CDN ({stub.cdn_host}) answered 503",
        "403": "the CDN refused a signed URL (403)",
        "hang-up": "the connection broke off",
        "hang-up-after-bytes": "the connection broke off",
        "down": f"could not connect to {stub.cdn_origin.removeprefix('http://') if stub.cdn_origin else ''}",
    }[kind]
    assert line.startswith(f"Error: {path}: {reason}, {RETRIES} retries brought no new bytes ("), line
    assert line.endswith("— check the network and re-run the same command: it resumes from there")
    # Within limits: the first try and RETRIES retries (after the last try that brought bytes).
    # A CDN that answers but fails is asked again through a fresh redirect from the Hub; one
    # that hung up after its headers keeps its URL; one that is down is never reached.
    redirects = [r for r in stub.log if "/resolve/" in r.path and r.method == "GET"]
    cdn = [r for r in stub.log if r.path.startswith("/cdn/") and r.method == "GET"]
    assert len(cdn if kind != "down" else redirects) == RETRIES + 1
    assert len(redirects) == (1 if kind.startswith("hang-up") else RETRIES + 1)
    assert _kept(path) == arrived and not _local(path).exists()

    stub.reset_counters()
    stub.clear_faults()
    result = pull_quant(resolve(SPEC))
    assert _local(path).read_bytes() == data
    assert stub.bytes_served() == result.bytes_downloaded == len(data) - arrived


def test_a_cdn_that_stalls_mid_range_is_left_and_the_range_continued(
    repo: tuple[HubStub, str, bytes], quick_retries: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ranges, "READ_TIMEOUT_S", 0.5)
    stub, path, data = repo
    stub.stall_after(resolve(SPEC).repo, path, 30_000)
    started = time.monotonic()
    pull_quant(resolve(SPEC))
    assert time.monotonic() - started < 10, "a stalled connection held the download"
    assert _local(path).read_bytes() == data
    assert stub.ranges(path)[-2:] == [f"bytes=0-{len(data) - 1}", f"bytes=30000-{len(data) - 1}"]
    assert stub.bytes_served() == len(data)  # nothing sent twice


def test_a_cdns_retry_after_is_honoured_up_to_a_cap(
    repo: tuple[HubStub, str, bytes], quick_retries: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ranges, "MAX_RETRY_AFTER_S", 0.3)
    stub, path, data = repo
    stub.fail_next(429, 1, where="cdn", headers={"Retry-After": "3600"})  # an hour: capped
    stub.fail_next(503, 1, where="cdn", headers={"Retry-After": "0.2"})
    started = time.monotonic()
    pull_quant(resolve(SPEC))
    assert 0.5 <= time.monotonic() - started < 10
    assert [r.status for r in stub.downloads(path) if r.path.startswith("/cdn/")] == [429, 503, 206]
    assert _local(path).read_bytes() == data


def test_a_cdn_that_redirects_forever(repo: tuple[HubStub, str, bytes], quick_retries: None) -> None:
    stub, path, data = repo
    stub.cdn_loop = True
    with pytest.raises(HubError) as err:
        pull_quant(resolve(SPEC))
    assert err.value.message == f"the Hub redirected {path} more than {ranges.MAX_REDIRECTS} times"
    assert err.value.hint == "try again later"
    assert len(stub.log) < 50 and not _local(path).exists()
    stub.clear_faults()
    pull_quant(resolve(SPEC))
    assert _local(path).read_bytes() == data


@pytest.mark.parametrize("cdn_etag", [True, False])
def test_a_file_replaced_during_the_download_is_never_spliced(
    repo: tuple[HubStub, str, bytes], monkeypatch: pytest.MonkeyPatch, cdn_etag: bool
) -> None:
    """A new upload lands under the same commit while ranges are still coming from the CDN.
    With the Hub's etag on the CDN's answers the change is refused at once; without it (as
    from the real CDNs) the whole-file sha256 refuses the file. Either way no file made of two
    uploads is ever renamed into place, and the re-run gets the new upload whole."""
    monkeypatch.setattr(transfer, "MIN_CHUNK", 16 << 10)  # many ranges
    stub, path, data = repo
    stub.cdn_etag = cdn_etag
    stub.rate = 400_000
    new = data[::-1]
    repo_id = resolve(SPEC).repo

    def replace_a_third_in(event: ProgressEvent) -> None:
        if event.phase == "download" and event.done * 3 >= event.total > 0 and stub.repos[repo_id][path] == data:
            stub.replace_in_place(repo_id, path, new)

    with pytest.raises((HubError, ChecksumError)) as err:
        pull_quant(resolve(SPEC), progress=replace_a_third_in, connections=2)
    assert not _local(path).exists()
    if cdn_etag:
        assert err.type is HubError
        assert err.value.message.startswith(f"{path} changed on the Hub since the listing (sha256 ")
        # What the part holds is the old upload's, range by range: nothing of the new one.
        state = PartState(repo_id, plan_remote(path, data))
        assert state.load(_part(path)) and state.have > 0
        raw = _part(path).read_bytes()
        for index, done in enumerate(state.done):
            start, _ = state.layout.bounds(index)  # type: ignore[union-attr]
            assert raw[start : start + done] == data[start : start + done]
    else:
        assert err.type is ChecksumError and not _part(path).exists()

    stub.rate = None
    pull_quant(resolve(SPEC))
    assert _local(path).read_bytes() == new


def plan_remote(path: str, data: bytes) -> object:
    """The listing entry the first run used (the old upload's size and sha256)."""
    import hashlib

    from ollamads.hub.listing import RemoteFile
    from tests.support.hubstub import git_blob_sha1

    return RemoteFile(path, len(data), hashlib.sha256(data).hexdigest(), git_blob_sha1(data))
