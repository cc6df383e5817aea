"""Pulling from the Hub: real huggingface_hub and ollamads.hub against the local HubStub."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ollamads.catalog import resolve
from ollamads.cli.hub_commands import register
from ollamads.errors import BusyError, ChecksumError, HubError, InsufficientSpaceError, OllamadsError
from ollamads.hub import records, transfer
from ollamads.hub.records import part_have
from ollamads.paths import local_path, models_dir, ollamads_home, repo_dir
from ollamads.quant_pull import plan_quant_pull as plan_pull
from ollamads.quant_pull import pull_quant as pull
from ollamads.progress import ProgressEvent
from ollamads.tiny import write_tiny_shards
from tests.support.hubstub import (
    HubStub,
    git_blob_sha1,
    repo_from_dir,
    sha256_hex,
)

TERMINUS = "unsloth/DeepSeek-V3.1-Terminus-GGUF"
TQ1 = "DeepSeek-V3.1-Terminus-UD-TQ1_0.gguf"
Q2 = [f"UD-Q2_K_XL/DeepSeek-V3.1-Terminus-UD-Q2_K_XL-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
R1_0528 = "unsloth/DeepSeek-R1-0528-GGUF"

Hub = Callable[..., HubStub]


@pytest.fixture(scope="module")
def terminus_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The Terminus repo in miniature: a 3-shard Q2_K_XL folder, a single-file TQ1_0, a README."""
    root = tmp_path_factory.mktemp("terminus")
    write_tiny_shards(root / "q2", n_shards=3, quant="Q2_K_XL", name="DeepSeek-V3.1-Terminus")
    (single,) = write_tiny_shards(
        root / "tq1", n_shards=1, quant="TQ1_0", name="DeepSeek-V3.1-Terminus", seed=1
    )
    files = repo_from_dir(root / "q2", "UD-Q2_K_XL/")
    files[TQ1] = single.read_bytes()
    files["README.md"] = b"# DeepSeek V3.1 Terminus GGUF\n"
    assert sorted(files) == sorted([*Q2, TQ1, "README.md"])
    return files


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer, "RETRY_BACKOFF_S", (0.0,))


@pytest.fixture
def small_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranges of 16 KiB, so the tiny files are cut into many."""
    monkeypatch.setattr(transfer, "MIN_CHUNK", 16 << 10)


def whole(path: str, files: dict[str, bytes]) -> str:
    return f"bytes=0-{len(files[path]) - 1}"


def rest(path: str, files: dict[str, bytes], start: int) -> str:
    return f"bytes={start}-{len(files[path]) - 1}"


def local(path: str, repo: str = TERMINUS) -> Path:
    return local_path(repo, path)


def part_of(path: str, repo: str = TERMINUS) -> Path:
    target = local(path, repo)
    return target.with_name(target.name + ".part")


# --- the stub itself speaks the Hub's protocol ------------------------------------------------


def test_stub_satisfies_huggingface_hub(
    hub: Hub, terminus_files: dict[str, bytes], tmp_path: Path
) -> None:
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    stub = hub({TERMINUS: terminus_files}, tree_page_size=2, redirect=True)
    api = HfApi()
    assert api.model_info(TERMINUS).sha == stub.commits[TERMINUS]
    listed = {f.path: f for f in api.list_repo_tree(TERMINUS, recursive=True) if hasattr(f, "size")}
    assert sorted(listed) == sorted(terminus_files)  # across pages of 2
    assert listed[TQ1].lfs.sha256 == sha256_hex(terminus_files[TQ1])
    assert listed["README.md"].blob_id == git_blob_sha1(terminus_files["README.md"])
    snapshot = Path(snapshot_download(TERMINUS, local_dir=tmp_path / "snap"))
    assert (snapshot / Q2[1]).read_bytes() == terminus_files[Q2[1]]
    check = api.verify_repo_checksums(TERMINUS, local_dir=snapshot)
    assert check.checked_count == len(terminus_files) and not check.mismatches
    assert (
        Path(hf_hub_download(TERMINUS, "README.md", cache_dir=tmp_path / "cache")).read_bytes()
        == terminus_files["README.md"]
    )


# --- planning ---------------------------------------------------------------------------------


def test_dry_run_lists_files_bytes_and_disk_and_writes_nothing(
    hub: Hub, terminus_files: dict[str, bytes]
) -> None:
    stub = hub({TERMINUS: terminus_files})
    result = pull(resolve("v3.1-terminus:q2_k_xl"), dry_run=True)
    plan = result.plan
    assert result.dry_run and result.bytes_downloaded == 0
    assert plan.repo == TERMINUS and plan.revision == stub.commits[TERMINUS]
    assert [f.path for f in plan.files] == Q2
    assert [(f.size, f.sha256) for f in plan.files] == [
        (len(terminus_files[p]), sha256_hex(terminus_files[p])) for p in Q2
    ]
    total = sum(len(terminus_files[p]) for p in Q2)
    assert plan.bytes_total == plan.bytes_to_download == total and plan.bytes_verified == 0
    assert {f.state for f in plan.files} == {"missing"}
    assert plan.disk_free > 0 and plan.fits
    assert plan.paths == tuple(local(p) for p in Q2)
    assert not models_dir().exists()
    assert stub.bytes_served() == 0 and stub.downloads() == []


def test_too_little_disk_is_refused_before_writing(
    hub: Hub, terminus_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    import ollamads.hub
    import ollamads.units

    stub = hub({TERMINUS: terminus_files})
    monkeypatch.setattr(ollamads.hub, "disk_free", lambda directory: 100_000)
    monkeypatch.setattr(ollamads.units, "disk_free", lambda directory: 100_000)
    entry = resolve("v3.1-terminus:Q2_K_XL")
    assert not pull(entry, dry_run=True).plan.fits
    with pytest.raises(InsufficientSpaceError) as err:
        pull(entry)
    need = sum(len(terminus_files[p]) for p in Q2) / 1024
    assert err.value.message.startswith(
        "not enough disk for deepseek-v3.1-terminus:Q2_K_XL: "
        f"download {need:.1f} KiB in {repo_dir(TERMINUS)} = {need:.1f} KiB needed on "
    )
    assert err.value.message.endswith(", 97.7 KiB free")
    assert "OLLAMADS_HOME" in err.value.hint
    assert not models_dir().exists() and stub.bytes_served() == 0


# --- downloading ------------------------------------------------------------------------------


@pytest.mark.parametrize("redirect", [False, True], ids=["direct", "cdn-redirect"])
def test_pull_downloads_and_verifies(
    hub: Hub, terminus_files: dict[str, bytes], redirect: bool
) -> None:
    stub = hub({TERMINUS: terminus_files}, redirect=redirect)
    seen: dict[str, tuple[int, int]] = {}
    states: dict[str, list[str]] = {}

    def progress(event: ProgressEvent) -> None:
        assert event.phase == "download"
        seen[event.item] = (event.done, event.total)
        states.setdefault(event.item, []).append(event.state)

    result = pull(resolve("v3.1-terminus:Q2_K_XL"), progress=progress)
    assert result.paths == tuple(local(p) for p in Q2)
    for path in Q2:
        assert local(path).read_bytes() == terminus_files[path]
        assert not part_of(path).exists()
        assert seen[path] == (len(terminus_files[path]), len(terminus_files[path]))
        assert states[path][0] == "queued" and states[path][-1] == "done"
    total = sum(len(terminus_files[p]) for p in Q2)
    assert result.bytes_downloaded == stub.bytes_served() == total
    assert result.files_downloaded == tuple(Q2)
    assert result.digests == {local(p).name: "sha256:" + sha256_hex(terminus_files[p]) for p in Q2}
    if redirect:
        assert all(r.path.startswith("/cdn/") for r in stub.downloads() if r.status in (200, 206))


def test_single_file_quant(hub: Hub, terminus_files: dict[str, bytes]) -> None:
    hub({TERMINUS: terminus_files})
    result = pull(resolve("deepseek-v3.1-terminus:UD-TQ1_0"))
    assert result.paths == (local(TQ1),)
    assert local(TQ1).read_bytes() == terminus_files[TQ1]


def test_second_pull_transfers_nothing(hub: Hub, terminus_files: dict[str, bytes]) -> None:
    stub = hub({TERMINUS: terminus_files})
    entry = resolve("v3.1-terminus:Q2_K_XL")
    pull(entry)
    assert stub.bytes_served() > 0
    stub.reset_counters()
    again = pull(entry)
    assert again.bytes_downloaded == 0 and again.files_downloaded == ()
    assert stub.bytes_served() == 0 and stub.downloads() == []
    assert {f.state for f in again.plan.files} == {"verified"}


def test_verified_files_are_not_rehashed_until_they_change(
    hub: Hub, terminus_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub({TERMINUS: terminus_files})
    entry = resolve("v3.1-terminus:Q2_K_XL")
    pull(entry)
    hashed: list[tuple[str, str]] = []
    real = records.hash_into

    def counting(hasher: object, path: Path, start: int = 0, end: int | None = None) -> int:
        hashed.append((path.name, threading.current_thread().name))
        return real(hasher, path, start, end)

    monkeypatch.setattr(records, "hash_into", counting)
    assert {f.state for f in plan_pull(entry).files} == {"verified"}
    assert hashed == []
    stat = local(Q2[1]).stat()
    os.utime(local(Q2[1]), ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert {f.state for f in plan_pull(entry).files} == {"verified"}
    assert [name for name, _ in hashed] == [local(Q2[1]).name]
    # Without records every file is hashed, on the verification thread pool.
    hashed.clear()
    shutil.rmtree(repo_dir(TERMINUS) / ".ollamads")
    assert {f.state for f in plan_pull(entry).files} == {"verified"}
    assert sorted(name for name, _ in hashed) == sorted(local(p).name for p in Q2)
    assert all(thread.startswith("ollamads-verify") for _, thread in hashed)


def test_connection_dropped_mid_file_resumes_in_the_same_run(
    hub: Hub, terminus_files: dict[str, bytes], fast_retries: None
) -> None:
    stub = hub({TERMINUS: terminus_files})
    stub.die_after(TERMINUS, TQ1, 30_000)
    pull(resolve("v3.1-terminus:TQ1_0"))
    assert stub.ranges(TQ1) == [whole(TQ1, terminus_files), rest(TQ1, terminus_files, 30_000)]
    assert stub.bytes_served(TERMINUS, TQ1) == len(terminus_files[TQ1])  # no byte sent twice
    assert local(TQ1).read_bytes() == terminus_files[TQ1]


def test_interrupted_pull_resumes_in_the_next_run(
    hub: Hub, terminus_files: dict[str, bytes], fast_retries: None
) -> None:
    stub = hub({TERMINUS: terminus_files})
    stub.die_after(TERMINUS, TQ1, 30_000)
    stub.die_after(TERMINUS, TQ1, 0)
    entry = resolve("v3.1-terminus:TQ1_0")
    with pytest.raises(HubError) as err:
        pull(entry)
    assert err.value.message == (
        f"{TQ1}: the connection broke off, 1 retries brought no new bytes "
        f"(29.3 KiB of {len(terminus_files[TQ1]) / 1024:.1f} KiB kept in {TQ1}.part)"  # 30,000 bytes
    )
    assert "re-run the same command: it resumes" in err.value.hint
    assert part_have(TERMINUS, plan_pull(entry).files[0].remote, part_of(TQ1)) == 30_000
    assert not local(TQ1).exists()
    plan = plan_pull(entry)
    assert (plan.files[0].state, plan.bytes_partial) == ("partial", 30_000)
    assert plan.bytes_to_download == len(terminus_files[TQ1]) - 30_000

    stub.reset_counters()
    result = pull(entry)
    assert stub.ranges(TQ1) == [rest(TQ1, terminus_files, 30_000)]
    assert (
        stub.bytes_served(TERMINUS, TQ1)
        == result.bytes_downloaded
        == len(terminus_files[TQ1]) - 30_000
    )
    assert local(TQ1).read_bytes() == terminus_files[TQ1]


def test_killed_process_resumes(hub: Hub, terminus_files: dict[str, bytes]) -> None:
    stub = hub({TERMINUS: terminus_files})
    stall = stub.stall_after(TERMINUS, TQ1, 40_000)
    code = (
        "from ollamads.catalog import resolve; from ollamads.quant_pull import pull_quant; "
        "pull_quant(resolve('v3.1-terminus:TQ1_0'))"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], env=dict(os.environ), stderr=subprocess.PIPE
    )
    remote = plan_pull(resolve("v3.1-terminus:TQ1_0")).files[0].remote
    try:
        assert stall.reached.wait(60), "the child never started the download"
        deadline = time.monotonic() + 30
        while part_have(TERMINUS, remote, part_of(TQ1)) != 40_000:
            assert time.monotonic() < deadline, "the .part never reached the bytes sent"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        stall.release.set()
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not local(TQ1).exists()

    stub.reset_counters()
    pull(resolve("v3.1-terminus:TQ1_0"))
    assert stub.ranges(TQ1) == [rest(TQ1, terminus_files, 40_000)]
    assert stub.bytes_served(TERMINUS, TQ1) == len(terminus_files[TQ1]) - 40_000
    assert local(TQ1).read_bytes() == terminus_files[TQ1]


def test_server_ignoring_range_is_refused_and_its_bytes_unused(
    hub: Hub, terminus_files: dict[str, bytes], fast_retries: None
) -> None:
    stub = hub({TERMINUS: terminus_files})
    stub.die_after(TERMINUS, TQ1, 30_000)
    stub.die_after(TERMINUS, TQ1, 0)
    entry = resolve("v3.1-terminus:TQ1_0")
    with pytest.raises(HubError):
        pull(entry)
    stub.ignore_range = True
    with pytest.raises(HubError) as err:
        pull(entry)
    assert err.value.message == (
        f"the Hub answered a Range request for {TQ1} with the whole file (200); none of it was used"
    )
    assert plan_pull(entry).files[0].have == 30_000  # the 200's body was not written
    stub.ignore_range = False
    stub.reset_counters()
    pull(entry)
    assert stub.ranges(TQ1) == [rest(TQ1, terminus_files, 30_000)]
    assert local(TQ1).read_bytes() == terminus_files[TQ1]


def test_part_of_an_older_upload_is_not_resumed(
    hub: Hub, terminus_files: dict[str, bytes], fast_retries: None
) -> None:
    stub = hub({TERMINUS: terminus_files})
    stub.die_after(TERMINUS, TQ1, 30_000)
    stub.die_after(TERMINUS, TQ1, 0)
    with pytest.raises(HubError):
        pull(resolve("v3.1-terminus:TQ1_0"))
    new = terminus_files[TQ1][::-1]
    stub.set_file(TERMINUS, TQ1, new)
    stub.reset_counters()
    pull(resolve("v3.1-terminus:TQ1_0"))
    assert stub.ranges(TQ1) == [f"bytes=0-{len(new) - 1}"]
    assert local(TQ1).read_bytes() == new


def test_corrupted_download_is_caught_and_deleted(
    hub: Hub, terminus_files: dict[str, bytes]
) -> None:
    stub = hub({TERMINUS: terminus_files})
    stub.corrupt(TERMINUS, TQ1)
    entry = resolve("v3.1-terminus:TQ1_0")
    with pytest.raises(ChecksumError) as err:
        pull(entry)
    assert err.value.message.startswith(f"{TQ1} arrived corrupted (got sha256:")
    assert err.value.message.endswith("; deleted it")
    assert err.value.hint == "re-run the same command to download it again"
    assert not local(TQ1).exists() and not part_of(TQ1).exists()
    stub.heal(TERMINUS, TQ1)
    pull(entry)
    assert local(TQ1).read_bytes() == terminus_files[TQ1]


def test_damaged_local_file_is_fetched_again(hub: Hub, terminus_files: dict[str, bytes]) -> None:
    stub = hub({TERMINUS: terminus_files})
    entry = resolve("v3.1-terminus:Q2_K_XL")
    pull(entry)
    damaged = bytearray(local(Q2[2]).read_bytes())
    damaged[100] ^= 1
    local(Q2[2]).write_bytes(damaged)
    plan = plan_pull(entry)
    assert [f.state for f in plan.files] == ["verified", "verified", "mismatch"]
    stub.reset_counters()
    pull(entry)
    assert stub.bytes_served() == stub.bytes_served(TERMINUS, Q2[2]) == len(terminus_files[Q2[2]])
    assert local(Q2[2]).read_bytes() == terminus_files[Q2[2]]


# --- finding the files ------------------------------------------------------------------------


def test_unpublished_layout_is_found_by_file_name(
    hub: Hub, terminus_files: dict[str, bytes]
) -> None:
    files = {
        "UD-TQ1_0/DeepSeek-R1-0528-UD-TQ1_0.gguf": terminus_files[TQ1],
        "DeepSeek-R1-0528-UD-TQ1_0_R4.gguf": b"decoy",
        "README.md": b"r1-0528",
    }
    hub({R1_0528: files})
    result = pull(resolve("r1-0528:TQ1_0"))
    assert result.paths == (local("UD-TQ1_0/DeepSeek-R1-0528-UD-TQ1_0.gguf", R1_0528),)


def test_moved_folder_is_found_by_file_name_across_pages(
    hub: Hub, terminus_files: dict[str, bytes]
) -> None:
    moved = {p.replace("UD-Q2_K_XL/", "Q2_K_XL/"): terminus_files[p] for p in Q2}
    hub({TERMINUS: {**moved, "README.md": b"x"}}, tree_page_size=2)
    result = pull(resolve("v3.1-terminus:Q2_K_XL"))
    assert [p.parent.name for p in result.paths] == ["Q2_K_XL"] * 3


def test_quant_missing_from_the_repo(hub: Hub, terminus_files: dict[str, bytes]) -> None:
    hub({TERMINUS: {TQ1: terminus_files[TQ1]}})
    with pytest.raises(HubError) as err:
        pull(resolve("v3.1-terminus:Q2_K_XL"))
    assert re.fullmatch(
        rf"{TERMINUS} has no UD-Q2_K_XL files at revision [0-9a-f]{{12}} \(looked in UD-Q2_K_XL/\)",
        err.value.message,
    )


def test_incomplete_shard_set_on_the_hub(hub: Hub, terminus_files: dict[str, bytes]) -> None:
    hub({TERMINUS: {p: terminus_files[p] for p in (Q2[0], Q2[2])}})
    with pytest.raises(HubError) as err:
        pull(resolve("v3.1-terminus:Q2_K_XL"), dry_run=True)
    assert "incomplete or mixed shard set for UD-Q2_K_XL" in err.value.message


# --- refusals ---------------------------------------------------------------------------------


def test_private_repo_needs_a_token(
    hub: Hub, terminus_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = hub({TERMINUS: terminus_files}, token="hf_right", private={TERMINUS})
    entry = resolve("v3.1-terminus:TQ1_0")
    for token in (None, "hf_wrong"):
        if token:
            monkeypatch.setenv("HF_TOKEN", token)
        with pytest.raises(HubError) as err:
            pull(entry)
        assert err.value.message == f"the Hub has no repo {TERMINUS} (401), or it is private"
        assert "set HF_TOKEN" in err.value.hint
    monkeypatch.setenv("HF_TOKEN", "hf_right")
    pull(entry)
    assert stub.downloads(TQ1)[-1].headers["authorization"] == "Bearer hf_right"


@pytest.mark.parametrize(("token", "status"), [(None, 401), ("hf_wrong", 403)])
def test_gated_repo_says_accept_the_terms(
    hub: Hub,
    terminus_files: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
    token: str | None,
    status: int,
) -> None:
    hub({TERMINUS: terminus_files}, token="hf_right", gated={TERMINUS})
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    entry = resolve("v3.1-terminus:TQ1_0")
    assert pull(entry, dry_run=True).plan.files  # the listing of a gated repo is public
    with pytest.raises(HubError) as err:
        pull(entry)
    assert (
        err.value.message
        == f"{TERMINUS} is gated: the Hub wants its terms accepted before downloading ({status})"
    )
    assert err.value.hint.startswith("accept the terms") and "HF_TOKEN" in err.value.hint


def test_gated_repo_with_token_downloads_and_keeps_the_token_off_the_cdn(
    hub: Hub, terminus_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = hub({TERMINUS: terminus_files}, token="hf_right", gated={TERMINUS}, redirect=True)
    monkeypatch.setenv("HF_TOKEN", "hf_right")
    pull(resolve("v3.1-terminus:TQ1_0"))
    assert local(TQ1).read_bytes() == terminus_files[TQ1]
    resolve_hits = [r for r in stub.downloads(TQ1) if "/resolve/" in r.path]
    cdn_hits = [r for r in stub.downloads(TQ1) if r.path.startswith("/cdn/")]
    assert resolve_hits and cdn_hits
    assert resolve_hits[0].headers["authorization"] == "Bearer hf_right"
    assert "authorization" not in cdn_hits[0].headers


def test_unknown_repo(hub: Hub) -> None:
    hub({})
    with pytest.raises(HubError) as err:
        pull(resolve("r1:IQ1_S"))
    assert (
        err.value.message == "the Hub has no repo unsloth/DeepSeek-R1-GGUF (401), or it is private"
    )


def test_unknown_revision(hub: Hub, terminus_files: dict[str, bytes]) -> None:
    hub({TERMINUS: terminus_files})
    with pytest.raises(HubError) as err:
        pull(resolve("v3.1-terminus:TQ1_0"), revision="v9")
    assert err.value.message == f"{TERMINUS} has no such revision (404)"


def test_file_gone_between_listing_and_download(hub: Hub, terminus_files: dict[str, bytes]) -> None:
    stub = hub({TERMINUS: terminus_files})
    stub.hide(TERMINUS, TQ1)
    with pytest.raises(HubError) as err:
        pull(resolve("v3.1-terminus:TQ1_0"))
    assert err.value.message == f"the Hub has no file {TERMINUS}/{TQ1} (404)"
    assert "re-run" in err.value.hint
    assert not local(TQ1).exists()


def test_hub_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    from ollamads.ollama.serve import free_port

    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    with pytest.raises(HubError) as err:
        pull(resolve("v3.1-terminus:TQ1_0"), dry_run=True)
    assert err.value.message.startswith(f"cannot reach the Hub at {endpoint} (")
    assert "check the network" in err.value.hint


def test_one_pull_at_a_time_per_repo(hub: Hub, terminus_files: dict[str, bytes]) -> None:
    import fcntl

    hub({TERMINUS: terminus_files})
    lock = repo_dir(TERMINUS) / ".ollamads" / "lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242")
        held.flush()
        with pytest.raises(BusyError) as err:
            pull(resolve("v3.1-terminus:TQ1_0"))
    assert err.value.message == (
        f"another ollamads process (pid 4242) is downloading into {repo_dir(TERMINUS)}"
    )
    pull(resolve("v3.1-terminus:TQ1_0"))  # free again once the other one ends


# --- paths ------------------------------------------------------------------------------------


def test_home_from_env_then_xdg_then_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OLLAMADS_HOME", str(tmp_path / "h"))
    assert ollamads_home() == tmp_path / "h"
    assert local_path(TERMINUS, Q2[0]) == tmp_path / "h" / "models" / TERMINUS / Q2[0]
    monkeypatch.delenv("OLLAMADS_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert ollamads_home() == tmp_path / "xdg" / "ollamads"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ollamads_home() == tmp_path / "home" / ".local" / "share" / "ollamads"


@pytest.mark.parametrize(
    "bad", ["../escape.gguf", "/etc/passwd", "a/../../b", "", "a\\..\\b.gguf", "a\0b.gguf", "C:x.gguf"]
)
def test_paths_from_the_hub_cannot_escape(bad: str) -> None:
    with pytest.raises(Exception) as err:
        local_path(TERMINUS, bad)
    assert "refusing the repo path" in str(err.value)


# --- the CLI command --------------------------------------------------------------------------


def _cli() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def main() -> None:
        """Keep `pull` a subcommand."""

    return app


def test_cli_pull_dry_run_prints_the_plan(hub: Hub, terminus_files: dict[str, bytes]) -> None:
    stub = hub({TERMINUS: terminus_files})
    result = CliRunner().invoke(_cli(), ["pull", "--dry-run", "v3.1-terminus:q2_k_xl"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        f"deepseek-v3.1-terminus:Q2_K_XL from {TERMINUS} at {stub.commits[TERMINUS][:12]}"
    )
    assert [line.split()[0] for line in lines[1:4]] == Q2
    assert all(line.endswith("to fetch") for line in lines[1:4])
    total = sum(len(terminus_files[p]) for p in Q2) / 1024
    assert lines[4].startswith(
        f"total {total:.1f} KiB: 0 B verified, 0 B partial, {total:.1f} KiB to download;"
    )
    assert lines[4].endswith("(fits)")
    assert stub.bytes_served() == 0


def test_cli_pull_prints_the_first_file(hub: Hub, terminus_files: dict[str, bytes]) -> None:
    hub({TERMINUS: terminus_files})
    result = CliRunner().invoke(_cli(), ["pull", "v3.1-terminus:Q2_K_XL"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(local(Q2[0]))
    assert local(Q2[2]).read_bytes() == terminus_files[Q2[2]]


def test_cli_pull_unknown_model_is_an_ollamads_error() -> None:
    result = CliRunner().invoke(_cli(), ["pull", "v3.2:TQ1_0"])
    assert result.exit_code != 0
    assert "did you mean" in str(result.exception)


# --- parallel ranges --------------------------------------------------------------------------


def test_ranges_of_one_file_are_fetched_in_parallel(
    hub: Hub, terminus_files: dict[str, bytes], small_ranges: None
) -> None:
    stub = hub({TERMINUS: terminus_files}, redirect=True)
    stub.rate = 2_000_000  # slow enough that the ranges overlap in time
    result = pull(resolve("v3.1-terminus:TQ1_0"), connections=8)
    size = len(terminus_files[TQ1])
    assert local(TQ1).read_bytes() == terminus_files[TQ1]
    assert stub.max_in_flight > 1
    ranges = [r for r in stub.ranges(TQ1) if r]
    spans = sorted(tuple(map(int, r.removeprefix("bytes=").split("-"))) for r in set(ranges))
    assert spans[0][0] == 0 and spans[-1][1] == size - 1
    assert all(a[1] + 1 == b[0] for a, b in zip(spans, spans[1:]))  # they tile the file
    assert len(spans) > 8
    assert stub.bytes_served(TERMINUS, TQ1) == result.bytes_downloaded == size


def test_files_are_fetched_in_parallel_too(
    hub: Hub, terminus_files: dict[str, bytes]
) -> None:
    stub = hub({TERMINUS: terminus_files})
    stub.rate = 1_000_000
    pull(resolve("v3.1-terminus:Q2_K_XL"), connections=4)
    assert stub.max_in_flight == 3  # one range per shard, all three at once
    for path in Q2:
        assert local(path).read_bytes() == terminus_files[path]


def test_a_killed_parallel_pull_resumes_every_range_to_the_byte(
    hub: Hub, terminus_files: dict[str, bytes], tmp_path: Path
) -> None:
    stub = hub({TERMINUS: terminus_files})
    stub.rate = 400_000
    size = len(terminus_files[TQ1])
    code = (
        "from ollamads.hub import transfer; transfer.MIN_CHUNK = 16 << 10\n"
        "from ollamads.catalog import resolve; from ollamads.quant_pull import pull_quant\n"
        "pull_quant(resolve('v3.1-terminus:TQ1_0'), connections=4)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ))
    remote = plan_pull(resolve("v3.1-terminus:TQ1_0")).files[0].remote
    deadline = time.monotonic() + 60
    while part_have(TERMINUS, remote, part_of(TQ1)) < size // 3:
        assert time.monotonic() < deadline and child.poll() is None, "the child made no progress"
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    # A stub thread paced on a killed connection counts its next chunk before the write fails:
    # let those settle, or they would be counted as the second run's.
    settled, last = time.monotonic(), stub.bytes_served(TERMINUS, TQ1)
    while time.monotonic() - settled < 0.5:
        time.sleep(0.05)
        if stub.bytes_served(TERMINUS, TQ1) != last:
            settled, last = time.monotonic(), stub.bytes_served(TERMINUS, TQ1)
    kept = part_have(TERMINUS, remote, part_of(TQ1))
    assert 0 < kept < size and not local(TQ1).exists()
    first_run = stub.bytes_served(TERMINUS, TQ1)

    stub.reset_counters()
    stub.rate = None
    result = pull(resolve("v3.1-terminus:TQ1_0"), connections=4)
    # Every range continued from the byte its table recorded: nothing the first run kept was
    # sent again, and the file is whole and verified.
    assert stub.bytes_served(TERMINUS, TQ1) == result.bytes_downloaded == size - kept
    assert first_run >= kept
    assert local(TQ1).read_bytes() == terminus_files[TQ1]
    assert not part_of(TQ1).exists()
    assert not list((repo_dir(TERMINUS) / ".ollamads").rglob("*.part*"))


def test_a_wrong_content_range_is_refused_and_its_bytes_unused(
    hub: Hub, terminus_files: dict[str, bytes]
) -> None:
    stub = hub({TERMINUS: terminus_files})
    stub.wrong_range = True
    entry = resolve("v3.1-terminus:TQ1_0")
    with pytest.raises(HubError) as err:
        pull(entry)
    assert err.value.message.startswith(f"the Hub sent the wrong byte range for {TQ1}")
    assert err.value.message.endswith("none of it was used")
    assert plan_pull(entry).files[0].have == 0
    stub.wrong_range = False
    pull(entry)
    assert local(TQ1).read_bytes() == terminus_files[TQ1]


def test_a_file_changed_under_its_commit_is_refused(
    hub: Hub, terminus_files: dict[str, bytes]
) -> None:
    stub = hub({TERMINUS: terminus_files})
    entry = resolve("v3.1-terminus:TQ1_0")
    plan_pull(entry)  # the listing as it was
    original = terminus_files[TQ1]
    stub.replace_in_place(TERMINUS, TQ1, original[::-1])
    with pytest.raises(HubError) as err:
        # The plan from before the change still holds the old sha256: the Hub's redirect headers
        # name the new one, and nothing is written.
        from ollamads.hub import pull as pull_plan
        pull_plan(plan_pull_fixed(entry, original))
    assert err.value.message.startswith(f"{TQ1} changed on the Hub since the listing (sha256 ")
    assert "re-run" in err.value.hint
    assert not local(TQ1).exists()


def plan_pull_fixed(entry: object, data: bytes) -> object:
    """A plan whose listing says ``data``, whatever the Hub says now."""
    from dataclasses import replace

    plan = plan_pull(entry)  # type: ignore[arg-type]
    file = plan.files[0]
    remote = replace(file.remote, sha256=sha256_hex(data), size=len(data))
    return replace(plan, files=(replace(file, remote=remote),))


def test_an_expired_cdn_url_gets_a_fresh_redirect(
    hub: Hub, terminus_files: dict[str, bytes], fast_retries: None
) -> None:
    stub = hub({TERMINUS: terminus_files}, redirect=True)
    stub.die_after(TERMINUS, TQ1, 30_000)
    original_die = stub.take_death

    def expire_after_the_cut(repo: str, path: str) -> int | None:
        cut = original_die(repo, path)
        if cut is not None:
            stub.expire_cdn_urls()  # the URL this GET came from is dead for the retry
        return cut

    stub.take_death = expire_after_the_cut  # type: ignore[method-assign]
    pull(resolve("v3.1-terminus:TQ1_0"))
    cdn = [(r.path.split("/")[2], r.status) for r in stub.downloads(TQ1) if r.path.startswith("/cdn/")]
    assert cdn == [("0", 206), ("0", 403), ("1", 206)]
    assert local(TQ1).read_bytes() == terminus_files[TQ1]


def test_a_dead_cdn_url_is_replaced_through_the_hub(
    hub: Hub, terminus_files: dict[str, bytes], fast_retries: None, small_ranges: None
) -> None:
    stub = hub({TERMINUS: terminus_files}, redirect=True)
    pull(resolve("v3.1-terminus:Q2_K_XL"), connections=1)  # warms nothing: a fresh pull follows
    stub.reset_counters()
    for path in Q2:
        local(path).unlink()
    stub.expire_cdn_urls()
    pull(resolve("v3.1-terminus:Q2_K_XL"), connections=2)
    assert not [r for r in stub.downloads() if r.status == 403]  # new URLs from the Hub each time
    for path in Q2:
        assert local(path).read_bytes() == terminus_files[path]


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("retry_after", [None, "0"])
def test_busy_answers_are_retried(
    hub: Hub, terminus_files: dict[str, bytes], fast_retries: None, status: int, retry_after: str | None
) -> None:
    stub = hub({TERMINUS: terminus_files})
    headers = {"Retry-After": retry_after} if retry_after else {}
    stub.fail_next(status, 1, headers=headers)
    pull(resolve("v3.1-terminus:TQ1_0"))
    assert [r.status for r in stub.downloads(TQ1)] == [status, 206]
    assert local(TQ1).read_bytes() == terminus_files[TQ1]


def test_retry_after_is_honoured(
    hub: Hub, terminus_files: dict[str, bytes], fast_retries: None
) -> None:
    stub = hub({TERMINUS: terminus_files})
    stub.fail_next(503, 1, headers={"Retry-After": "1"})
    started = time.monotonic()
    pull(resolve("v3.1-terminus:TQ1_0"))
    assert time.monotonic() - started >= 1.0


def test_a_hub_that_keeps_failing_gives_up_naming_the_file(
    hub: Hub, terminus_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfer, "RETRY_BACKOFF_S", (0.0, 0.0))
    stub = hub({TERMINUS: terminus_files})
    stub.fail_next(503, 10)
    with pytest.raises(HubError) as err:
        pull(resolve("v3.1-terminus:TQ1_0"))
    assert err.value.message.startswith(f"{TQ1}: the Hub answered 503, 2 retries brought no new bytes")
    assert len(stub.downloads(TQ1)) == 3


@pytest.mark.parametrize("mode", ["prefix", "after"])
def test_both_hash_modes_verify(
    hub: Hub, terminus_files: dict[str, bytes], small_ranges: None, mode: str
) -> None:
    from ollamads.hub import pull as pull_plan

    stub = hub({TERMINUS: terminus_files})
    stub.corrupt(TERMINUS, TQ1)
    with pytest.raises(ChecksumError):
        pull_plan(plan_pull(resolve("v3.1-terminus:TQ1_0")), hash_mode=mode, connections=4)  # type: ignore[arg-type]
    stub.heal(TERMINUS, TQ1)
    pull_plan(plan_pull(resolve("v3.1-terminus:TQ1_0")), hash_mode=mode, connections=4)  # type: ignore[arg-type]
    assert local(TQ1).read_bytes() == terminus_files[TQ1]


@pytest.mark.parametrize("value", ["0", "65", "many"])
def test_bad_connection_counts(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("OLLAMADS_CONNECTIONS", value)
    with pytest.raises(OllamadsError) as err:
        transfer.connection_count()
    assert err.value.message == f"bad number of connections {value!r}"


def test_connection_count_from_option_then_env_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMADS_CONNECTIONS", raising=False)
    assert transfer.connection_count() == transfer.DEFAULT_CONNECTIONS
    monkeypatch.setenv("OLLAMADS_CONNECTIONS", "3")
    assert transfer.connection_count() == 3
    assert transfer.connection_count(5) == 5


def test_chunk_sizes() -> None:
    mib = 1 << 20
    assert transfer.chunk_size_for(288 * mib, 16) == 288 * mib // 64  # 64 ranges: 4 rounds of 16
    assert transfer.chunk_size_for(100 * mib, 16) == 4 * mib  # never below MIN_CHUNK
    assert transfer.chunk_size_for(170 * 10**9, 16) == 64 * mib  # never above MAX_CHUNK
    assert transfer.chunk_size_for(2 * 2**30, 16) == 32 * mib  # 2 GiB in 64 ranges
    assert transfer.chunk_size_for(10**9, 16) % (64 << 10) == 0
