from __future__ import annotations

import json

import pytest

from ollamads._resources import modelfiles_dir
from ollamads.catalog import load_catalog
from ollamads.hardware import this_machine, total_ram
from ollamads.ollama.modelfile import THINKING_DECLARATION
from ollamads.rendered import render_all, stale
from tests.support.cli import run_cli

run = run_cli


def test_checked_in_modelfiles_match_a_fresh_rendering() -> None:
    assert stale(modelfiles_dir()) == [], "run `ollamads modelfiles --write` and commit"
    entries = load_catalog().entries()
    hybrid = [e for e in entries if e.prompt_family.thinking == "hybrid"]
    assert hybrid and len(render_all()) == 2 * (len(entries) + len(hybrid))


def test_list_json_covers_the_catalog_and_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list", "--json")
    assert code == 0
    records = json.loads(out)
    assert len(records) == len(load_catalog().entries())
    assert {r["model"] for r in records} == {
        "deepseek-v3.1", "deepseek-v3.1-terminus", "deepseek-v3-0324", "deepseek-r1", "deepseek-r1-0528"
    }
    tq1 = next(r for r in records if r["model"] == "deepseek-v3.1" and r["quant"] == "TQ1_0")
    assert tq1["size_gib"] == 170 and tq1["moe_bits"] == 1.66 and tq1["shards"] == 1
    assert tq1["size_bytes"] == 170 * 2**30 == 182_536_110_080
    assert tq1["figures_from"] == "catalog" and tq1["on_hub"] is None
    # The verdict is `ollamads plan`'s (estimated from the published size until the quant's
    # headers are read): runs from memory or not.
    assert tq1["fit_exact"] is False
    assert tq1["fits_memory"] == (tq1["fit"] in ("gpu", "gpu+ram", "ram"))
    if not this_machine().gpus and total_ram() < 160 * (1 << 30):
        assert tq1["fit"] == "disk"


def test_show_json_has_both_modelfiles(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", "r1:iq1_s", "--json")
    assert code == 0
    record = json.loads(out)
    assert record["repo"] == "unsloth/DeepSeek-R1-GGUF" and record["thinking"] == "always"
    old, new = record["modelfiles"]["ollama-0.24"], record["modelfiles"]["ollama-0.30+"]
    assert "FROM DeepSeek-R1-UD-IQ1_S.gguf" in old and "TEMPLATE" in old
    assert [l for l in new.splitlines() if l.startswith("FROM")] == [
        f"FROM DeepSeek-R1-UD-IQ1_S-0000{i}-of-00003.gguf" for i in (1, 2, 3)
    ]
    assert "PARAMETER min_p 0.05" in new


def test_show_v31_has_a_thinking_name_on_the_same_blobs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", "v3.1-terminus:TQ1_0", "--json")
    assert code == 0
    modelfiles = json.loads(out)["modelfiles"]
    name = "deepseek-v3.1-terminus:tq1_0"
    assert set(modelfiles) == {"ollama-0.24", "ollama-0.30+", f"ollama-0.24 {name}-think",
                               f"ollama-0.30+ {name}-think"}
    for line in ("ollama-0.24", "ollama-0.30+"):
        plain, thinking = modelfiles[line], modelfiles[f"{line} {name}-think"]
        assert "TEMPLATE" in plain and "\nRENDERER" not in plain
        assert THINKING_DECLARATION not in plain and THINKING_DECLARATION in thinking
        assert [l for l in thinking.splitlines() if l.startswith("FROM")] == [f"FROM {name}"]


def test_show_unknown_quant(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "show", "r1:q9_k")
    assert code == 1 and err.count("\n") == 1 and "no quant" in err


def test_list_fits_80_columns_without_cutting_names(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, "list")
    assert code == 0
    lines = out.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    names = {line.split()[0] for line in lines if line.startswith(" deepseek-")}
    assert names == {m.key for m in load_catalog().models}
    assert "sizes as published" in out


def _hub_repos() -> dict[str, dict[str, bytes]]:
    """Every catalog repo on the stand-in: a few quants, with their real file names."""
    return {
        "unsloth/DeepSeek-V3.1-GGUF": {"DeepSeek-V3.1-UD-TQ1_0.gguf": b"a" * 1700},
        "unsloth/DeepSeek-V3.1-Terminus-GGUF": {
            f"UD-IQ1_S/DeepSeek-V3.1-Terminus-UD-IQ1_S-0000{i}-of-00004.gguf": b"b" * 100 for i in range(1, 5)
        },
        "unsloth/DeepSeek-V3-0324-GGUF": {"README.md": b"no ggufs here"},
        "unsloth/DeepSeek-R1-GGUF": {
            f"DeepSeek-R1-UD-IQ1_S/DeepSeek-R1-UD-IQ1_S-0000{i}-of-00003.gguf": b"c" * 10 for i in (1, 2, 3)
        },
        "unsloth/DeepSeek-R1-0528-GGUF": {
            f"UD-IQ1_M/DeepSeek-R1-0528-UD-IQ1_M-0000{i}-of-00002.gguf": b"d" * 7 for i in (1, 2)
        },
    }


def test_list_refresh_reads_the_hub_and_keeps_it(hub: object, capsys: pytest.CaptureFixture[str]) -> None:
    hub(_hub_repos())  # type: ignore[operator]
    code, out, err = run(capsys, "list", "--refresh", "--json")
    assert code == 0, err
    records = {(r["model"], r["quant"]): r for r in json.loads(out)}
    tq1 = records[("deepseek-v3.1", "TQ1_0")]
    assert (tq1["size_bytes"], tq1["shards"], tq1["on_hub"], tq1["figures_from"]) == (1700, 1, True, "hub")
    # The layout was never published for these: the Hub's listing gives sizes and shard counts.
    assert records[("deepseek-v3.1-terminus", "IQ1_S")]["shards"] == 4
    assert records[("deepseek-r1-0528", "IQ1_M")]["size_bytes"] == 14
    assert records[("deepseek-r1-0528", "IQ1_M")]["shards"] == 2
    assert records[("deepseek-v3-0324", "Q2_K_XL")]["on_hub"] is False
    assert "fetched" in tq1 and tq1["fetched"].endswith("UTC")

    # Later, offline: the kept listing still answers, and says from when.
    code, out, _ = run(capsys, "list")
    assert code == 0 and "sizes from the Hub's listing of " in out


def test_list_refresh_offline_falls_back_to_the_catalog(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ollamads.ollama.serve import free_port

    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    code, out, err = run(capsys, "list", "--refresh", "--json")
    assert code == 0
    assert "not refreshed (cannot reach the Hub" in err
    records = json.loads(out)
    assert {r["figures_from"] for r in records} == {"catalog"}


def test_show_refresh_uses_the_hub_figures(hub: object, capsys: pytest.CaptureFixture[str]) -> None:
    hub(_hub_repos())  # type: ignore[operator]
    code, out, _ = run(capsys, "show", "r1:IQ1_S", "--refresh", "--json")
    assert code == 0
    record = json.loads(out)
    assert (record["size_bytes"], record["shards"], record["figures_from"]) == (30, 3, "hub")


# --- what a new user sees ---------------------------------------------------------------------


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.metadata

    import ollamads

    code, out, err = run(capsys, "--version")
    assert (code, err) == (0, "")
    assert out == f"ollamads version {ollamads.__version__}\n"
    assert ollamads.__version__ == importlib.metadata.version("ollamads"), "one home for the version"


def test_show_is_text_for_people_with_every_modelfile(capsys: pytest.CaptureFixture[str]) -> None:
    code, text, _ = run(capsys, "show", "v3.1-terminus:TQ1_0")
    assert code == 0
    _, json_out, _ = run(capsys, "show", "v3.1-terminus:TQ1_0", "--json")
    record = json.loads(json_out)
    head = text.partition("\n--- ")[0]
    # No Python reprs: no None/True/False, no dict or list literals.
    for repr_word in ("None", "True", "False", "{'", "['", "': "):
        assert repr_word not in head, (repr_word, head)
    assert head.startswith("deepseek-v3.1-terminus:TQ1_0\n")
    assert "  size         170.0 GiB (182,536,110,080 bytes), as published" in head
    parameters = next(line for line in head.splitlines() if line.startswith("  parameters"))
    for setting in ("temperature 0.6", "top_p 0.95", "min_p 0.01", "top_k 40", "repeat_penalty 1",
                    "num_ctx 16384", 'stop "<｜end▁of▁sentence｜>"'):
        assert setting in parameters, (setting, parameters)
    name = "deepseek-v3.1-terminus:tq1_0"
    for key, body in record["modelfiles"].items():
        line, _, companion = key.partition(" ")
        header = f"--- Modelfile of {companion or name} on Ollama {line.removeprefix('ollama-')} ---\n"
        assert f"\n{header}{body}" in text, header
    assert text.count("\n--- Modelfile of ") == 4


def test_one_unit_convention_in_list_show_and_json(capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from ollamads.units import format_bytes

    assert format_bytes(182_536_110_080) == "170.0 GiB"
    assert [format_bytes(n) for n in (0, 1000, 1024, 5 * 2**20, 2**40)] == [
        "0 B", "1000 B", "1.0 KiB", "5.0 MiB", "1.0 TiB"]
    monkeypatch.setenv("COLUMNS", "120")
    _, listed, _ = run(capsys, "list")
    _, shown, _ = run(capsys, "show", "r1:IQ1_S")
    _, as_json, _ = run(capsys, "list", "--json")
    records = {(r["model"], r["quant"]): r for r in json.loads(as_json)}
    r1 = records[("deepseek-r1", "IQ1_S")]
    assert r1["size_gib"] == round(r1["size_bytes"] / 2**30, 1) and "size_gb" not in r1
    header = next(line for line in listed.splitlines() if line.lstrip().startswith("model"))
    assert "GiB" in header.split()
    row = next(line for line in listed.splitlines() if line.split()[:2] == ["deepseek-r1", "IQ1_S"])
    assert f"{r1['size_gib']:.1f}" in row.split()
    # (The source line quotes Unsloth's documents, "131 GB" and all.)
    described = [line for line in shown.partition("\n--- ")[0].splitlines() if not line.startswith("  source")]
    for text in (listed, "\n".join(described)):
        for decimal in (" GB", " MB", " kB", " TB"):
            assert decimal not in text, (decimal, text)
