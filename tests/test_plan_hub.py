"""``plan MODEL:QUANT`` reads the quant's tensor table from the Hub with Range requests on each
shard's first bytes (the local Hub stand-in, real huggingface_hub): a few MB, never the whole
file, cached, resumed, and refused in one line when the Hub cannot serve ranges."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from ollamads import quant_headers
from ollamads.catalog import resolve
from ollamads.gguf.deepseek2 import DeepSeek2Dims
from ollamads.gguf.format import GGMLQuantizationType
from tests.support.cli import run_cli
from tests.support.hubstub import HubStub
from tests.support.synthetic import uniform_types, write_synthetic

SPEC = "r1:IQ1_S"
#: Big enough that every shard is several times the first Range request.
DIMS = DeepSeek2Dims(n_layer=4, n_dense_lead=1, n_embd=1024, n_ff=2048, n_head=8, q_lora_rank=256,
                     kv_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64,
                     n_expert=32, n_expert_shared=1, n_ff_exp=1024, n_vocab=4096)


@pytest.fixture(scope="module")
def shard_bytes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    entry = resolve(SPEC)
    directory = tmp_path_factory.mktemp("r1-shards")
    paths = write_synthetic(directory, f"{entry.model.file_prefix}-{entry.quant.hub_name}", DIMS,
                            uniform_types(GGMLQuantizationType.Q8_0), shards=3, data="random")
    return {f"{entry.quant.folder}/{p.name}": p.read_bytes() for p in paths}


@pytest.fixture
def r1_hub(hub: Callable[..., HubStub], shard_bytes: dict[str, bytes],
           monkeypatch: pytest.MonkeyPatch) -> HubStub:
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:1")
    return hub({resolve(SPEC).repo: shard_bytes}, redirect=True)


def plan(capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    code, out, err = run_cli(capsys, "plan", SPEC, "--ram", "64G", "--vram", "0", "--json", *extra)
    assert code == 0, err
    return json.loads(out)


def test_reads_only_the_headers_and_caches_them(capsys: pytest.CaptureFixture[str], r1_hub: HubStub,
                                                shard_bytes: dict[str, bytes]) -> None:
    repo = resolve(SPEC).repo
    record = plan(capsys)
    assert record["source"] == "Hub headers" and record["memory"]["n_layer"] == DIMS.n_layer
    assert record["memory"]["file_size"] == sum(len(b) for b in shard_bytes.values())
    for path, data in shard_bytes.items():
        served = r1_hub.bytes_served(repo, path)
        assert 0 < served <= quant_headers.FIRST_READ < len(data), path
        assert all(r and r.startswith("bytes=0-") for r in r1_hub.ranges(path))
    assert record["header_bytes_fetched"] == r1_hub.bytes_served(repo)
    # The same plan again reads nothing from the Hub.
    r1_hub.reset_counters()
    again = plan(capsys)
    assert r1_hub.downloads() == [] and again["header_bytes_fetched"] == 0
    assert again["memory"] == record["memory"]


def test_a_larger_header_is_read_on_from_where_the_bytes_end(
    capsys: pytest.CaptureFixture[str], r1_hub: HubStub, monkeypatch: pytest.MonkeyPatch,
    shard_bytes: dict[str, bytes],
) -> None:
    monkeypatch.setattr(quant_headers, "FIRST_READ", 1024)
    first = next(iter(shard_bytes))
    plan(capsys)
    # (each range is asked of the Hub, which redirects, then of its CDN)
    ranges = list(dict.fromkeys(r1_hub.ranges(first)))
    # 1 KiB, then doubling, each request starting where the cached bytes end.
    assert ranges[0] == "bytes=0-1023" and len(ranges) > 2
    starts = [int(r.removeprefix("bytes=").split("-")[0]) for r in ranges if r]
    ends = [int(r.split("-")[1]) + 1 for r in ranges if r]
    assert starts[1:] == ends[:-1]


def test_a_dropped_connection_resumes(capsys: pytest.CaptureFixture[str], r1_hub: HubStub,
                                      shard_bytes: dict[str, bytes]) -> None:
    repo = resolve(SPEC).repo
    first = next(iter(shard_bytes))
    r1_hub.die_after(repo, first, 100_000)
    record = plan(capsys)
    assert record["source"] == "Hub headers"
    ranges = [r for r in dict.fromkeys(r1_hub.ranges(first)) if r]
    assert ranges[0].startswith("bytes=0-") and ranges[1].startswith("bytes=100000-")


def test_the_listing_and_cache_serve_list_and_offline_plans(
    capsys: pytest.CaptureFixture[str], r1_hub: HubStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = plan(capsys)
    # `list` uses the same model: exact now that the headers are cached (same machine figures).
    from ollamads.hardware import Machine
    from ollamads.plan.family import plan_entry
    from ollamads.plan.recommend import PlanRequest

    entry = resolve(SPEC)
    listed = plan_entry(entry, Machine(64 << 30), PlanRequest(ctx=record["request"]["ctx"]))
    assert listed is not None and listed.memory.exact and listed.fit == record["fit"]
    code, out, _ = run_cli(capsys, "list", "--json")
    row = next(r for r in json.loads(out) if r["model"] == entry.model.key and r["quant"] == "IQ1_S")
    assert row["fit_exact"] is True
    # With the Hub gone, plan falls back to the cached headers.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:1")
    offline = plan(capsys)
    assert offline["memory"] == record["memory"]


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    code, out, err = run_cli(capsys, "plan", SPEC, "--ram", "64G", "--vram", "0")
    assert code == 1 and err.count("\n") == 1 and " — " in err, (out, err)
    return err


def test_range_refused(capsys: pytest.CaptureFixture[str], r1_hub: HubStub) -> None:
    r1_hub.ignore_range = True
    assert "with the whole file (200)" in one_line_error(capsys)


def test_lfs_pointer_on_the_hub(capsys: pytest.CaptureFixture[str], hub: Callable[..., HubStub],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:1")
    entry = resolve(SPEC)
    pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n"
    hub({entry.repo: {f"{entry.quant.folder}/{entry.model.file_prefix}-{entry.quant.hub_name}"
                      f"-0000{i}-of-00003.gguf": pointer for i in (1, 2, 3)}})
    assert "git-LFS pointer" in one_line_error(capsys)


def test_unreachable_hub_without_cache(capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:1")
    err = one_line_error(capsys)
    assert "cannot reach the Hub" in err and "no cached header" in err
